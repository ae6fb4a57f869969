"""Small graphs several test modules share."""

from __future__ import annotations

from typing import Any

import trio

from treadle import END, START, GraphBuilder, NodePartial


def counter_app(limit: int = 3, pause: float = 0.1) -> Any:
    """One node, ``tick``, adding one to ``extra["n"]`` a step until it reaches ``limit``.

    Each tick sleeps ``pause`` seconds first: virtual time under ``autojump_clock``; pass 0 for a
    test that runs in real time (one whose store does real I/O in a thread).
    """

    async def tick(snapshot: Any, ctx: Any) -> NodePartial:
        if pause:
            await trio.sleep(pause)
        return NodePartial(extra={"n": snapshot.extra.get("n", 0) + 1})

    def again(snapshot: Any) -> str:
        return "tick" if snapshot.extra["n"] < limit else END

    return (
        GraphBuilder()
        .add_node("tick", tick)
        .add_edge(START, "tick")
        .add_conditional_edges("tick", again, path_map=["tick", END])
        .compile()
    )
