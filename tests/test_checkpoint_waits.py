"""Waits on a store's connection thread are bounded and cancellable: a cancelled call cancels the
statement on the server (PostgreSQL ``conn.cancel()``, SQLite ``interrupt()``), lock waits time out
on the server (``lock_timeout``), and a write lock that is never released cannot hold up a caller's
deadline or the runner's exit."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
import trio
from apps import counter_app

from treadle import AppRunner, Checkpoint, CheckpointBackendError, VersionedState
from treadle.runtime.checkpointers import PostgresCheckpointer, SQLiteCheckpointer
from treadle.runtime.checkpointers.postgres import _lock_key

pytest_plugins = ["pg_fixtures"]


def checkpoint(step: int, session: str = "s") -> Checkpoint:
    return Checkpoint(session, step, VersionedState(extra={"n": step}), ("tick",), {}, {}, 1, 0)


class HeldWriteLock:
    """Another connection holding the write lock of a session, released after ``hold`` seconds
    (so that a store that ignores cancellation finishes late instead of never)."""

    def __init__(self, url: str, schema: str, session: str, hold: float) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key("write", schema, session),))
        self.timer = threading.Timer(hold, self.conn.close)
        self.timer.start()

    def release(self) -> None:
        self.timer.cancel()
        self.conn.close()


@pytest.mark.postgres
async def test_a_cancelled_postgres_save_returns_promptly_and_the_store_still_works(
    postgres_url: str, pg_schema: str
) -> None:
    from pg_fixtures import opened

    held = HeldWriteLock(postgres_url, pg_schema, "s", hold=8)
    try:
        with trio.fail_after(30):
            async with opened(PostgresCheckpointer(postgres_url, schema=pg_schema)) as store:
                start = time.monotonic()
                with trio.move_on_after(1) as scope:
                    await store.save_with_concurrency_check(checkpoint(0), None)
                elapsed = time.monotonic() - start
                assert scope.cancelled_caught
                assert elapsed < 3, f"the cancelled save took {elapsed:.1f} s"
                held.release()
                await store.save_with_concurrency_check(checkpoint(0), None)
                assert [i.step for i in await store.list_steps("s")] == [0]
    finally:
        held.release()


@pytest.mark.postgres
async def test_a_lock_wait_times_out_on_the_server(postgres_url: str, pg_schema: str) -> None:
    from pg_fixtures import opened

    held = HeldWriteLock(postgres_url, pg_schema, "s", hold=8)
    try:
        with trio.fail_after(30):
            store = PostgresCheckpointer(postgres_url, schema=pg_schema, lock_timeout=0.5)
            async with opened(store):
                start = time.monotonic()
                with pytest.raises(CheckpointBackendError, match="lock timeout"):
                    await store.save(checkpoint(0))
                assert time.monotonic() - start < 3
    finally:
        held.release()


@pytest.mark.postgres
async def test_a_never_released_lock_holds_up_neither_a_deadline_nor_the_runner_exit(
    postgres_url: str, pg_schema: str
) -> None:
    app = counter_app(limit=3, pause=0)
    store = PostgresCheckpointer(postgres_url, schema=pg_schema, lock_timeout=60)
    held: HeldWriteLock | None = None
    try:
        with trio.fail_after(40):
            start = time.monotonic()
            async with AppRunner(app, checkpointer=store) as runner:
                await runner.create_session("s", VersionedState(extra={"n": 0}))
                held = HeldWriteLock(postgres_url, pg_schema, "s", hold=20)
                with trio.move_on_after(1):
                    await runner.run_step("s")
                assert time.monotonic() - start < 4
                assert (await runner.get_session("s")).step == 0
            elapsed = time.monotonic() - start
            assert elapsed < 6, f"leaving the runner took {elapsed:.1f} s"
    finally:
        if held is not None:
            held.release()


async def test_a_cancelled_sqlite_save_waiting_for_another_writer_returns_promptly(
    tmp_path: Path,
) -> None:
    from pg_fixtures import opened

    path = tmp_path / "runs.db"
    with trio.fail_after(30):
        async with opened(SQLiteCheckpointer(path, busy_timeout=10)) as store:
            other = sqlite3.connect(path, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # another process is writing, for a long time
                start = time.monotonic()
                with trio.move_on_after(0.5) as scope:
                    await store.save(checkpoint(0))
                assert scope.cancelled_caught
                assert time.monotonic() - start < 3
                other.execute("ROLLBACK")
            finally:
                other.close()
            await store.save(checkpoint(0))
            assert [i.step for i in await store.list_steps("s")] == [0]
