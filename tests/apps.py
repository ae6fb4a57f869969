"""Small graphs several test modules share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from treadle import END, START, GraphBuilder, Message, NodePartial, RetryPolicy


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


RICH_ROUNDS = 4
"""Rounds of :func:`rich_app` by default; each is five steps (plan, left+pre, right, merge,
check+relay), and the last round ends at merge (routed to END): a default run is 19 steps."""


class Gauge:
    """Counts how many of :func:`rich_app`'s nodes run at once, at most."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    async def visit(self, node: str, ctx: Any) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await trio.lowlevel.checkpoint()  # let any other node of the step start meanwhile
        finally:
            self.now -= 1


def rich_app(
    rounds: int = RICH_ROUNDS,
    *,
    pause: float = 0.0,
    observe: Callable[[str, Any], Awaitable[None]] | None = None,
) -> Any:
    """A loop that exercises everything a resume must carry over, five steps a round:

    1. ``plan`` (plus ``check``, version-gated from the second round on: the step before changed
       nothing since it last ran) starts round ``r``.
    2. ``left`` and ``pre`` run; ``left`` half-fires the join ``[left, right] -> merge``.
    3. ``right`` runs (reached through ``pre``), which completes the join one step later.
    4. ``merge`` runs; its first attempt at every step fails and its ``RetryPolicy`` retries it. Its
       router loops to ``check`` and ``relay`` until ``rounds`` is reached, then goes to END.
    5. ``check`` writes a value that does not change after the first round and ``relay`` writes
       nothing, so this step leaves every version alone; ``relay`` routes to ``check`` and ``plan``.

    A resume that loses the join state never runs ``merge`` again; one that loses
    ``versions_seen`` runs ``check`` where it should be skipped. ``pause`` is a sleep in ``plan``
    (virtual time under ``autojump_clock``); ``observe(node, ctx)`` is awaited as each node starts
    (for example :meth:`Gauge.visit`). Each call builds fresh node state.
    """
    attempts: dict[tuple[str, int], int] = {}

    async def plan(snapshot: Any, ctx: Any) -> NodePartial:
        if observe is not None:
            await observe("plan", ctx)
        if pause:
            await trio.sleep(pause)
        round_ = snapshot.extra.get("round", 0) + 1
        scratch: dict[str, Any] = (
            {"scratch": [round_, {"even": True}]} if round_ % 2 == 0 else {"scratch": None}
        )
        return NodePartial(
            messages=[Message.user(f"round {round_}")], extra={"round": round_, **scratch}
        )

    async def left(snapshot: Any, ctx: Any) -> NodePartial:
        if observe is not None:
            await observe("left", ctx)
        return NodePartial(
            extra={"left": snapshot.extra.get("left", 0) + snapshot.extra["round"]},
            messages=[Message.assistant(f"left saw {len(snapshot.messages)}")],
        )

    async def pre(snapshot: Any, ctx: Any) -> NodePartial:
        if observe is not None:
            await observe("pre", ctx)
        return NodePartial(extra={"pre": snapshot.extra["round"] * 10})

    async def right(snapshot: Any, ctx: Any) -> NodePartial:
        if observe is not None:
            await observe("right", ctx)
        return NodePartial(extra={"right": f"r{snapshot.extra['pre']}"})

    async def merge(snapshot: Any, ctx: Any) -> NodePartial:
        if observe is not None:
            await observe("merge", ctx)
        key = (ctx.session_id, ctx.step)
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] == 1:
            raise RuntimeError("merge fails its first attempt of every step")
        total = snapshot.extra["left"] + len(snapshot.extra["right"])
        return NodePartial(
            extra={"total": total, "history": [*snapshot.extra.get("history", [])[-3:], total]}
        )

    async def check(snapshot: Any, ctx: Any) -> NodePartial:
        if observe is not None:
            await observe("check", ctx)
        return NodePartial(extra={"checked": True})

    async def relay(snapshot: Any, ctx: Any) -> NodePartial:
        if observe is not None:
            await observe("relay", ctx)
        return NodePartial()

    def stay(snapshot: Any) -> list[str]:
        return []  # check leads nowhere: relay brings it back; END is declared for the validator

    def again(snapshot: Any) -> list[str] | str:
        return END if snapshot.extra["round"] >= rounds else ["check", "relay"]

    return (
        GraphBuilder()
        .add_node("plan", plan)
        .add_node("left", left)
        .add_node("pre", pre)
        .add_node("right", right)
        .add_node(
            "merge", merge, retry=RetryPolicy(max_attempts=2, initial_interval=0, jitter=False)
        )
        .add_node("check", check)
        .add_node("relay", relay)
        .add_edge(START, "plan")
        .add_edge("plan", "left")
        .add_edge("plan", "pre")
        .add_edge("pre", "right")
        .add_edge(["left", "right"], "merge")
        .add_conditional_edges("merge", again, path_map=["check", "relay", END])
        .add_conditional_edges("check", stay, path_map=[END])
        .add_edge("relay", "check")
        .add_edge("relay", "plan")
        .compile()
    )
