"""Every run's event stream ends with exactly one STREAM_END, whatever ends the run (SPEC 4.3, 6)."""

from __future__ import annotations

from typing import Any

import trio
from apps import counter_app

from treadle import (
    END,
    START,
    AppRunner,
    CheckpointBackendError,
    GraphBuilder,
    NodePartial,
    NodeRunError,
    VersionedState,
)
from treadle.runtime.checkpointers.checkpoint import Checkpoint
from treadle.runtime.checkpointers.sqlite import SQLiteCheckpointer
from treadle.runtime.events.types import STREAM_END_SCOPE, Event


class FailingStore(SQLiteCheckpointer):
    """A real SQLite store whose save of ``fail_step`` raises, as a locked or full disk would."""

    def __init__(self, path: Any, fail_step: int) -> None:
        super().__init__(path)
        self.fail_step = fail_step

    async def save(self, cp: Checkpoint) -> None:
        if cp.step == self.fail_step:
            raise CheckpointBackendError("sqlite", f"disk full while saving step {cp.step}")
        await super().save(cp)

    async def save_with_concurrency_check(self, cp: Checkpoint, expected_step: int | None) -> None:
        if cp.step == self.fail_step:
            raise CheckpointBackendError("sqlite", f"disk full while saving step {cp.step}")
        await super().save_with_concurrency_check(cp, expected_step)


def ends(events: list[Event]) -> list[Event]:
    return [event for event in events if event.scope == STREAM_END_SCOPE]


async def read_run(app: Any, **options: Any) -> tuple[list[Event], BaseException | None]:
    """Run ``app`` under ``invoke_streaming``; every event the consumer saw, and the run's error."""
    error: BaseException | None = None
    async with app.invoke_streaming(VersionedState(), **options) as run:
        events = [event async for event in run.events]
        try:
            await run.result()
        except Exception as exc:
            error = exc
    return events, error


async def test_a_completed_run_ends_once(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(30):
        events, error = await read_run(counter_app(3))
    assert error is None
    [end] = ends(events)
    assert end is events[-1]
    assert end.metadata["status"] == "completed"


async def test_a_node_failure_ends_the_stream_once(autojump_clock: trio.abc.Clock) -> None:
    async def boom(snapshot: Any, ctx: Any) -> NodePartial:
        raise ValueError("boom")

    app = GraphBuilder().add_node("boom", boom).add_edge(START, "boom").add_edge("boom", END)
    with trio.fail_after(30):
        events, error = await read_run(app.compile())
    assert isinstance(error, NodeRunError)
    [end] = ends(events)
    assert end.metadata["status"] == "error"
    assert "boom" in end.metadata["error"]


async def test_a_checkpointer_failure_ends_the_stream_once(tmp_path: Any) -> None:
    store = FailingStore(tmp_path / "runs.db", fail_step=2)
    with trio.fail_after(30):
        events, error = await read_run(counter_app(5, pause=0), checkpointer=store)
    assert isinstance(error, CheckpointBackendError)
    [end] = ends(events)
    assert end is events[-1]
    assert end.metadata["status"] == "error"
    assert "disk full" in end.metadata["error"]


async def test_a_cancelled_run_ends_the_stream_once(autojump_clock: trio.abc.Clock) -> None:
    app = counter_app(100, pause=1.0)
    with trio.fail_after(300):
        async with AppRunner(app) as runner:
            stream = runner.event_stream(session_id="s")
            await runner.create_session("s", VersionedState())
            with trio.move_on_after(2.5):
                await runner.run_until_complete("s")
            events = [event async for event in stream]
    [end] = ends(events)
    assert end.metadata["status"] == "error"
    assert end.metadata["error"] == "cancelled"
    assert end.metadata["step"] == 2


async def test_a_run_whose_runner_closes_ends_the_stream_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = counter_app(100, pause=1.0)
    events: list[Event] = []

    async def consume(stream: Any) -> None:
        async for event in stream:
            events.append(event)

    with trio.fail_after(300):
        async with trio.open_nursery() as outer:
            with trio.move_on_after(2.5) as deadline:
                async with AppRunner(app) as runner:
                    outer.start_soon(consume, runner.event_stream(session_id="s"))
                    await runner.create_session("s", VersionedState())
                    await runner.run_until_complete("s")
    assert deadline.cancelled_caught
    [end] = ends(events)
    assert end.metadata["status"] == "error"
