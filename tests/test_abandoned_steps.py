"""A step its caller abandons while a ``thread=True`` node still runs never harms the runner."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio

from treadle import (
    END,
    START,
    AppRunner,
    GraphBuilder,
    NodePartial,
    NodeRunError,
    NodeTimeoutError,
    VersionedState,
)
from treadle.runtime.execution import scheduler


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


async def test_a_thread_node_times_out_at_its_deadline_and_its_thread_is_abandoned() -> None:
    gate = threading.Event()
    finished = threading.Event()

    def stuck(snapshot: Any, ctx: Any) -> NodePartial:
        gate.wait(timeout=30)
        finished.set()
        return NodePartial(extra={"late": True})

    app = (
        GraphBuilder()
        .add_node("stuck", stuck, thread=True, timeout=0.2)
        .add_edge(START, "stuck")
        .add_edge("stuck", END)
        .compile()
    )
    with trio.fail_after(20):
        async with AppRunner(app) as runner:
            await runner.create_session("s", VersionedState())
            start = trio.current_time()
            with pytest.raises(NodeRunError) as info:
                await runner.run_step("s")
            elapsed = trio.current_time() - start
            view = await runner.get_session("s")
            assert not finished.is_set()  # the thread still runs: it was abandoned, not joined
            gate.set()
        await trio.to_thread.run_sync(finished.wait, 10)
    assert isinstance(info.value.cause, NodeTimeoutError)
    assert elapsed < 1.0  # at the deadline (0.2 s), not when the body returns
    assert "late" not in view.state.extra
