"""The graph the iterative-session tests, the crash child and the benchmark share."""

from __future__ import annotations

import os
from typing import Any

import trio

from treadle import END, START, GraphBuilder, Message, NodePartial


def accumulator_app(*, fail_on: int | None = None) -> Any:
    """``acc`` adds the input ``extra["x"]`` to ``extra["sum"]`` and emits it; ``post`` copies
    the sum to ``extra["last"]`` and appends a message. With ``fail_on``, ``acc`` raises while the
    input is that value. With ``ITERATIVE_PROGRESS`` set in the environment each node prints
    ``AT <session> <step>`` (the crash test aims its kills by it).
    """
    progress = bool(os.environ.get("ITERATIVE_PROGRESS"))

    async def acc(snapshot: Any, ctx: Any) -> NodePartial:
        if progress:
            print(f"AT {ctx.session_id} {ctx.step}", flush=True)
        x = snapshot.extra.get("x", 0)
        if fail_on is not None and x == fail_on:
            raise RuntimeError(f"acc refuses x={x}")
        total = snapshot.extra.get("sum", 0) + x
        await ctx.emit("acc", f"sum={total}", total=total)
        return NodePartial(extra={"sum": total})

    async def post(snapshot: Any, ctx: Any) -> NodePartial:
        if progress:
            print(f"AT {ctx.session_id} {ctx.step}", flush=True)
        total = snapshot.extra.get("sum", 0)
        return NodePartial(extra={"last": total}, messages=[Message.assistant(f"sum {total}")])

    return (
        GraphBuilder()
        .add_node("acc", acc)
        .add_node("post", post)
        .add_edge(START, "acc")
        .add_edge("acc", "post")
        .add_edge("post", END)
        .compile()
    )


def x(value: int) -> NodePartial:
    """An input setting ``extra["x"]``."""
    return NodePartial(extra={"x": value})


def drain(stream: Any) -> list[Any]:
    """Every event a subscription holds now, without waiting."""
    events = []
    while True:
        try:
            events.append(stream.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return events
