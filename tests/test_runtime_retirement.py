"""Session retirement: idle sessions release their actors and memory and reload on next use."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from apps import counter_app

from treadle import AppRunner, SessionNotFound, VersionedState
from treadle.runtime.checkpointers import SQLiteCheckpointer


def _task_count() -> int:
    """Every task alive under the test's root task."""
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def test_an_idle_session_is_retired_after_the_ttl_and_reloads_on_next_use(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(60):
        async with AppRunner(counter_app(limit=3), idle_session_ttl=30) as runner:
            await runner.create_session("s", VersionedState())
            await runner.run_until_complete("s")
            assert runner.sessions() == ["s"]
            await trio.sleep(29)
            assert runner.sessions() == ["s"]
            await trio.sleep(2)
            assert runner.sessions() == []
            # Reloaded from the checkpointer on next use, at the step it had reached.
            view = await runner.get_session("s")
            assert (view.step, dict(view.state.extra)) == (3, {"n": 3})
            assert runner.sessions() == ["s"]


async def test_a_session_in_use_is_never_retired(autojump_clock: Any) -> None:
    with trio.fail_after(600):
        async with AppRunner(counter_app(limit=5, pause=20), idle_session_ttl=10) as runner:
            await runner.create_session("s", VersionedState())
            # Each step takes 20 s, twice the TTL; the run holds the session all along.
            final = await runner.run_until_complete("s")
            assert final.extra["n"] == 5
            assert runner.sessions() == ["s"]


async def test_a_session_between_steps_is_retired_and_resumes_where_it_stood(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(60):
        async with AppRunner(counter_app(limit=4), idle_session_ttl=5) as runner:
            await runner.create_session("s", VersionedState())
            await runner.run_step("s")
            await runner.run_step("s")
            await trio.sleep(6)
            assert runner.sessions() == []
            final = await runner.run_until_complete("s")
            assert final.extra["n"] == 4
            history = await runner.get_state_history("s")
            assert [info.step for info in history] == [4]  # the in-memory store keeps the latest


async def test_close_session_retires_at_once_and_releases_the_actors(autojump_clock: Any) -> None:
    with trio.fail_after(60):
        async with AppRunner(counter_app(limit=2), idle_session_ttl=None) as runner:
            before = _task_count()
            await runner.create_session("s", VersionedState())
            await runner.run_step("s")  # not complete: it holds its node actor
            assert _task_count() > before
            await runner.close_session("s")
            await trio.testing.wait_all_tasks_blocked()
            assert runner.sessions() == []
            assert _task_count() == before
            assert runner.statistics().sessions == 0
            # Closing a session that is not open does nothing.
            await runner.close_session("s")
            await runner.close_session("never-opened")


async def test_close_session_waits_for_the_call_using_it(autojump_clock: Any) -> None:
    with trio.fail_after(60):
        async with AppRunner(counter_app(limit=3, pause=5), idle_session_ttl=None) as runner:
            await runner.create_session("s", VersionedState())
            finished: list[float] = []

            async def run() -> None:
                await runner.run_until_complete("s")
                finished.append(trio.current_time())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                await trio.sleep(1)
                await runner.close_session("s")
                closed_at = trio.current_time()
            assert finished == [closed_at]
            assert runner.sessions() == []
            assert (await runner.get_session("s")).step == 3


async def test_many_sessions_one_after_another_hold_no_tasks(autojump_clock: Any) -> None:
    with trio.fail_after(120):
        async with AppRunner(counter_app(limit=2, pause=0), idle_session_ttl=0) as runner:
            await runner.create_session("warm", VersionedState())
            await runner.run_until_complete("warm")
            await trio.sleep(1)
            baseline = _task_count()
            for i in range(300):
                await runner.create_session(f"s{i}", VersionedState())
                await runner.run_until_complete(f"s{i}")
            await trio.sleep(1)
            assert runner.sessions() == []
            assert _task_count() == baseline


def _counting(checkpointer: Any, durability: str = "sync") -> AppRunner:
    return AppRunner(
        counter_app(limit=3, pause=0), checkpointer=checkpointer, durability=durability
    )


async def _step_another_runner_sees(db: Path) -> int:
    """The step of session ``s`` that a second runner on ``db`` loads (it closes it again)."""
    async with _counting(f"sqlite:///{db}") as other:
        await other.create_session("s", VersionedState())
        step = (await other.get_session("s")).step
        await other.close_session("s")
        return step


@asynccontextmanager
async def _session_on_sqlite(db: Path, durability: str) -> AsyncIterator[AppRunner]:
    """A counting runner on ``db`` with session ``s`` open, all under a 30 s watchdog."""
    with trio.fail_after(30):
        async with _counting(SQLiteCheckpointer(db), durability=durability) as runner:
            await runner.create_session("s", VersionedState())
            yield runner


async def test_a_retired_session_releases_its_lease_and_reloads_from_sqlite(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs.db"
    async with _session_on_sqlite(db, "exit") as runner:
        await runner.run_step("s")
        await runner.close_session("s")
        # Under durability="exit" closing writes the session: another runner sees step 1.
        assert await _step_another_runner_sees(db) == 1
        final = await runner.run_until_complete("s")
        assert final.extra["n"] == 3


async def test_a_close_cancelled_while_writing_leaves_the_session_open(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    async with _session_on_sqlite(db, "async") as runner:
        await runner.checkpoints.flush()  # step 0 is stored
        # Another process holds the database's write lock: the step's write waits for it.
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        await runner.run_step("s")  # acknowledged before it is stored
        with trio.move_on_after(0.5) as scope:
            await runner.close_session("s")
        assert scope.cancelled_caught
        # Cut short while waiting for the write, the close left the session as it was: open
        # (a store with leases still holds its lease; see test_checkpoint_postgres.py).
        assert runner.sessions() == ["s"]
        blocker.execute("ROLLBACK")
        blocker.close()
        await runner.close_session("s")
        assert runner.sessions() == []
        assert await _step_another_runner_sees(db) == 1  # the write was waited for


async def test_an_unknown_session_is_still_not_found(autojump_clock: Any) -> None:
    with trio.fail_after(10):
        async with AppRunner(counter_app()) as runner:
            with pytest.raises(SessionNotFound, match="'nope'"):
                await runner.run_step("nope")
            assert runner.sessions() == []


async def test_without_autosave_sessions_stay_open(autojump_clock: Any) -> None:
    with trio.fail_after(60):
        async with AppRunner(counter_app(), autosave=False, idle_session_ttl=1) as runner:
            await runner.create_session("s", VersionedState())
            await runner.run_until_complete("s")
            await trio.sleep(10)
            assert runner.sessions() == ["s"]


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "10", True])
def test_a_bad_idle_session_ttl_is_rejected(bad: Any) -> None:
    with pytest.raises(ValueError, match="idle_session_ttl"):
        AppRunner(counter_app(), idle_session_ttl=bad)


async def test_past_max_idle_sessions_the_longest_idle_is_retired_at_once(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(60):
        async with AppRunner(
            counter_app(limit=2, pause=0), idle_session_ttl=3600, max_idle_sessions=3
        ) as runner:
            for i in range(10):
                await runner.create_session(f"s{i}", VersionedState())
                await runner.run_until_complete(f"s{i}")
                await trio.testing.wait_all_tasks_blocked()
                # Long before the TTL: only the three sessions idle the shortest stay open.
                assert runner.sessions() == [f"s{j}" for j in range(max(0, i - 2), i + 1)]
            # A retired one reloads at the step it reached, and is now the newest idle one.
            view = await runner.get_session("s0")
            assert (view.step, dict(view.state.extra)) == (2, {"n": 2})
            await trio.testing.wait_all_tasks_blocked()
            assert runner.sessions() == ["s8", "s9", "s0"]


async def test_max_idle_sessions_without_a_ttl_still_bounds_the_open_sessions(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(60):
        async with AppRunner(
            counter_app(limit=2, pause=0), idle_session_ttl=None, max_idle_sessions=0
        ) as runner:
            await runner.create_session("s", VersionedState())
            await runner.run_until_complete("s")
            await trio.testing.wait_all_tasks_blocked()
            assert runner.sessions() == []
        async with AppRunner(
            counter_app(limit=2, pause=0), idle_session_ttl=None, max_idle_sessions=None
        ) as runner:
            for i in range(5):
                await runner.create_session(f"s{i}", VersionedState())
                await runner.run_until_complete(f"s{i}")
            await trio.sleep(50)
            assert len(runner.sessions()) == 5


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_a_bad_max_idle_sessions_is_rejected(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_idle_sessions"):
        AppRunner(counter_app(), max_idle_sessions=bad)
