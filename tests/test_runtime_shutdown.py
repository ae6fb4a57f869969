"""Leaving ``async with AppRunner(...)`` because its body raised still stores what is owed: the
queued ``durability="async"`` writes are flushed (bounded, shielded) before the actors stop, and
the caller gets their own error back, with a note if some writes could not be stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from apps import counter_app

from treadle import AppRunner, CheckpointBackendError, InMemoryCheckpointer, VersionedState
from treadle.actors.errors import ActorGone
from treadle.actors.request import ask
from treadle.runtime.checkpointers import JSONCheckpointer, SQLiteCheckpointer
from treadle.runtime.execution.scheduler import FlushCheckpoint

pytest_plugins = ["pg_fixtures"]

SESSIONS = [f"s{i}" for i in range(6)]


def store(kind: str, tmp_path: Path) -> Any:
    if kind == "json":
        return JSONCheckpointer(tmp_path / "runs")
    return SQLiteCheckpointer(tmp_path / "runs.db")


async def latest_steps(kind: str, tmp_path: Path) -> dict[str, int | None]:
    from pg_fixtures import opened

    async with opened(store(kind, tmp_path)) as opened_store:
        found = {s: await opened_store.load_latest(s) for s in SESSIONS}
    return {s: cp.step if cp is not None else None for s, cp in found.items()}


@pytest.mark.parametrize(("kind", "durability"), [("json", "async"), ("sqlite", "exit")])
async def test_a_body_that_raises_still_flushes_every_owed_write(
    tmp_path: Path, kind: str, durability: str
) -> None:
    app = counter_app(limit=50, pause=0)

    async def run_then_fail() -> None:
        async with AppRunner(
            app, checkpointer=store(kind, tmp_path), durability=durability
        ) as runner:
            for session in SESSIONS:
                await runner.create_session(session, VersionedState(extra={"n": 0}))
            for _ in range(3):
                async with trio.open_nursery() as nursery:
                    for session in SESSIONS:
                        nursery.start_soon(runner.run_step, session)
            raise ValueError("the caller's own error")

    with trio.fail_after(30):
        with pytest.raises(ValueError, match="the caller's own error"):
            await run_then_fail()
        assert await latest_steps(kind, tmp_path) == dict.fromkeys(SESSIONS, 3)


class BlockingStore(InMemoryCheckpointer):
    """An in-memory store whose writes wait for ever (a server that stopped answering)."""

    volatile = False  # written and acknowledged like a durable store

    async def save_with_concurrency_check(self, cp: Any, expected_step: int | None) -> None:
        await trio.sleep_forever()


async def test_an_asker_of_flush_checkpoint_learns_at_once_that_the_scheduler_is_gone() -> None:
    app = counter_app(limit=5, pause=0)
    answers: list[str] = []

    async def cancel_the_scheduler_while_it_writes(outside: trio.Nursery) -> None:
        async with AppRunner(app, checkpointer=BlockingStore(), durability="exit") as runner:
            await runner.create_session("s", VersionedState(extra={"n": 0}))
            await runner.run_step("s")  # "exit": the session is owed a write
            inbox = runner._sessions["s"].inbox

            async def ask_flush() -> None:
                try:
                    await ask(inbox, FlushCheckpoint, actor="scheduler")
                except ActorGone:
                    answers.append("gone")

            outside.start_soon(ask_flush)
            await trio.testing.wait_all_tasks_blocked()
            assert answers == []  # the scheduler is writing, for ever
            assert runner._nursery is not None
            runner._nursery.cancel_scope.cancel()

    with trio.fail_after(5):
        # The asker lives outside the runner, as a caller of the runner does.
        async with trio.open_nursery() as outside:
            # Leaving the runner reports the write the cancelled scheduler still owed.
            with pytest.raises(ActorGone):
                await cancel_the_scheduler_while_it_writes(outside)
        assert answers == ["gone"]


class FullDisk(InMemoryCheckpointer):
    """An in-memory store whose writes all fail, as on a full disk."""

    volatile = False

    async def save_with_concurrency_check(self, cp: Any, expected_step: int | None) -> None:
        await trio.lowlevel.checkpoint()
        raise CheckpointBackendError("memory", "no space left on device")


async def test_what_could_not_be_written_is_noted_on_the_callers_error() -> None:
    app = counter_app(limit=5, pause=0)

    async def run_then_fail() -> None:
        async with AppRunner(app, checkpointer=FullDisk(), durability="exit") as runner:
            await runner.create_session("s", VersionedState(extra={"n": 0}))
            await runner.run_step("s")
            raise ValueError("the caller's own error")

    with trio.fail_after(5), pytest.raises(ValueError, match="the caller's own error") as info:
        await run_then_fail()
    [note] = info.value.__notes__
    assert "leaving the runner also failed" in note
    assert "step 1 of session 's' was not stored" in note
    assert "no space left on device" in note
