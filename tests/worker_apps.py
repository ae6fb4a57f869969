"""The graph the worker tests, the scale-out example's test and the worker benchmark run: twenty
steps (ten rounds of ``a``, then ``b`` and ``c`` together), whose result depends only on the
session's input, and whose nodes wait a random few milliseconds (drawn per session, node and step)
as a stand-in for I/O.

``WORKER_APP_DELAY_MS`` sets the most a node waits (default 4 ms; 0 for reference runs). ``app``
is the target of ``treadle worker worker_apps:app``.
"""

from __future__ import annotations

import os
import random
from typing import Any

import trio

from treadle import END, START, GraphBuilder, Message, NodePartial, VersionedState

ROUNDS = 10
STEPS = 2 * ROUNDS


def _mix(seed: int, n: int, salt: int) -> int:
    return (seed * 1_000_003 + n * 7919 + salt) % 1_000_000_007


def build(max_delay_ms: float | None = None) -> Any:
    """The app; nodes wait up to ``max_delay_ms`` (default ``WORKER_APP_DELAY_MS``, else 4)."""
    if max_delay_ms is None:
        max_delay_ms = float(os.environ.get("WORKER_APP_DELAY_MS", "4"))
    most = max_delay_ms / 1000

    async def pause(ctx: Any) -> None:
        if most > 0:
            draw = random.Random(f"{ctx.session_id}/{ctx.node_id}/{ctx.step}").random()
            await trio.sleep(draw * most)

    async def a(snapshot: Any, ctx: Any) -> NodePartial:
        await pause(ctx)
        n = snapshot.extra.get("n", 0) + 1
        seed = snapshot.extra["seed"]
        return NodePartial(
            messages=[Message.assistant(f"round {n} of {seed}")],
            extra={"n": n, "total": snapshot.extra.get("total", 0) + _mix(seed, n, 1) % 1000},
        )

    async def b(snapshot: Any, ctx: Any) -> NodePartial:
        await pause(ctx)
        return NodePartial(extra={"b": _mix(snapshot.extra["seed"], snapshot.extra["n"], 2)})

    async def c(snapshot: Any, ctx: Any) -> NodePartial:
        await pause(ctx)
        trail = [*snapshot.extra.get("trail", []), snapshot.extra["n"] % 7]
        return NodePartial(extra={"trail": trail})

    def again(snapshot: Any) -> str:
        return "a" if snapshot.extra["n"] < ROUNDS else END

    return (
        GraphBuilder()
        .add_node("a", a)
        .add_node("b", b)
        .add_node("c", c)
        .add_edge(START, "a")
        .add_edge("a", "b")
        .add_edge("a", "c")
        .add_conditional_edges("b", again, path_map=["a", END])
        .add_conditional_edges("c", again, path_map=["a", END])
        .compile()
    )


def initial(index: int) -> VersionedState:
    """The input of session number ``index``."""
    return VersionedState(messages=[Message.user(f"job {index}")], extra={"seed": index})


app = build
