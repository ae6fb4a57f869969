"""A step its caller abandons while a ``thread=True`` node still runs never harms the runner."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio

from treadle import END, START, AppRunner, GraphBuilder, NodePartial, VersionedState
from treadle.runtime import scheduler


def gated_counter(gate: threading.Event, calls: list[int]) -> Any:
    """``tick`` (a thread) adds one to ``n`` until 3; its first call blocks until ``gate`` is set."""

    def tick(snapshot: Any, ctx: Any) -> NodePartial:
        calls.append(ctx.step)
        if len(calls) == 1:
            gate.wait(timeout=30)
        return NodePartial(extra={"n": snapshot.extra.get("n", 0) + 1})

    return (
        GraphBuilder()
        .add_node("tick", tick, thread=True)
        .add_edge(START, "tick")
        .add_conditional_edges("tick", lambda s: "tick" if s.extra["n"] < 3 else END)
        .compile()
    )


async def test_a_reply_that_outlives_its_abandoned_step_is_dropped_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The abandoned step waits this long for its nodes (5 s in production) before giving up.
    monkeypatch.setattr(scheduler, "_DRAIN_TIMEOUT", 0.3)
    gate = threading.Event()
    calls: list[int] = []
    app = gated_counter(gate, calls)
    with trio.fail_after(20):
        async with AppRunner(app) as runner:
            await runner.create_session("s", VersionedState())
            with trio.move_on_after(0.1) as abandoned:
                await runner.run_step("s")
            assert abandoned.cancelled_caught
            assert (await runner.get_session("s")).step == 0
            # The node's thread is still running step 1 when the caller retries it; it then
            # finishes and answers the abandoned attempt, whose reply must not count for this one.
            gate.set()
            final = await runner.run_until_complete("s")
            stale = runner.statistics().stale_replies
    assert final.extra["n"] == 3
    assert calls == [1, 1, 2, 3]
    assert stale == 1
