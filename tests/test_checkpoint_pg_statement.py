"""One drafted step is stored by a prepared statement run from the Trio thread (no thread hop), with
the guarantees of the connection thread: a cancelled save cancels the statement on the server and
leaves the connection usable (or, past the grace, closed and reopened by the next call), a refusal
is the same ``CheckpointBackendError``, a statement dropped on the server is prepared again, and
psycopg finds the connection idle."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
import trio

from treadle import Checkpoint, CheckpointBackendError, Message, VersionedState
from treadle.runtime.checkpointers import PostgresCheckpointer
from treadle.runtime.checkpointers.postgres import _lock_key
from treadle.runtime.checkpointers.sql import RUN

pytest_plugins = ["pg_fixtures"]

pytestmark = pytest.mark.postgres


def checkpoint(step: int) -> Checkpoint:
    return Checkpoint("s", step, VersionedState(extra={"n": step}), ("tick",), {}, {}, 1, step)


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql.encode(), params or None)
        return cursor.fetchall() if cursor.description else []


def stored_steps(url: str, schema: str) -> list[int]:
    return [step for (step,) in query(url, f'SELECT step FROM "{schema}".steps ORDER BY step')]


@pytest.fixture
async def store(
    postgres_url: str, pg_schema: str, nursery: trio.Nursery
) -> AsyncIterator[PostgresCheckpointer]:
    """An open store holding step 0 of session ``s``: its next steps are drafted."""
    store = PostgresCheckpointer(postgres_url, schema=pg_schema)
    await store.open(nursery)
    await store.save(checkpoint(0))
    yield store
    await store.aclose()


@contextmanager
def write_lock_held(url: str, schema: str) -> Iterator[None]:
    """Another connection holds session ``s``'s write lock: its saves wait on the server."""
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (_lock_key("write", schema, "s"),))
        yield


async def give_up_saving(store: PostgresCheckpointer, step: int) -> float:
    """Save ``step``, give up after 0.5 s, and return the seconds until the save returned."""
    start = time.monotonic()
    with trio.move_on_after(0.5) as scope:
        await store.save(checkpoint(step))
    assert scope.cancelled_caught
    return time.monotonic() - start


async def connection_state(store: PostgresCheckpointer) -> tuple[Any, list[str]]:
    """psycopg's view of the store's connection (its transaction status), and the statements
    prepared on it, as seen from the connection thread."""

    def look(conn: psycopg.Connection[Any]) -> tuple[Any, list[str]]:
        status = conn.info.transaction_status
        names = conn.execute("SELECT name FROM pg_prepared_statements ORDER BY name").fetchall()
        return status, [name for (name,) in names]

    return await store.run_sync(look)


async def test_a_drafted_step_is_stored_by_a_statement_prepared_once_per_connection(
    postgres_url: str, pg_schema: str, store: PostgresCheckpointer
) -> None:
    with trio.fail_after(30):
        for step in range(1, 4):
            await store.save(checkpoint(step))
        assert stored_steps(postgres_url, pg_schema) == [0, 1, 2, 3]
        status, prepared = await connection_state(store)
        assert status == psycopg.pq.TransactionStatus.IDLE
        assert "treadle_put_step" in prepared
        assert (await store.load("s", 3)).state == checkpoint(3).state


def talking(step: int, messages: int) -> Checkpoint:
    """Step ``step`` of session ``s`` holding ``messages`` messages."""
    said = [Message("user", f"m{i}") for i in range(messages)]
    state = VersionedState(messages=said, extra={"n": step})
    return Checkpoint("s", step, state, ("tick",), {}, {}, 1, step)


async def test_a_step_is_stored_by_the_cheapest_statement_that_holds_its_new_messages(
    postgres_url: str, pg_schema: str, store: PostgresCheckpointer
) -> None:
    with trio.fail_after(30):
        await store.save(talking(1, 2))  # one row of the log, sent as stored
        assert (await connection_state(store))[1] == ["treadle_put_run"]
        await store.save(talking(2, 2))  # no new message: no log part
        assert (await connection_state(store))[1] == ["treadle_put_run", "treadle_put_step"]
        await store.save(talking(3, 3 + RUN))  # more than a row: runs split by the server
        await store.save(talking(4, 3 + RUN))
        assert (await connection_state(store))[1] == [
            "treadle_put_draft", "treadle_put_run", "treadle_put_step",
        ]  # fmt: skip
        assert stored_steps(postgres_url, pg_schema) == [0, 1, 2, 3, 4]
        for step, messages in [(1, 2), (2, 2), (3, 3 + RUN), (4, 3 + RUN)]:
            assert (await store.load("s", step)).state == talking(step, messages).state
        log = f'SELECT seq, count FROM "{pg_schema}".messages ORDER BY seq'
        assert query(postgres_url, log) == [(0, 2), (2, RUN), (2 + RUN, 1)]


async def test_a_cancelled_drafted_save_cancels_its_statement_and_the_connection_still_works(
    postgres_url: str, pg_schema: str, store: PostgresCheckpointer
) -> None:
    with trio.fail_after(30):
        pid = await store.run_sync(lambda conn: conn.info.backend_pid)
        with write_lock_held(postgres_url, pg_schema):
            assert await give_up_saving(store, 1) < 3
            # Cancelled on the server, not left waiting for the lock.
            assert query(
                postgres_url, "SELECT state FROM pg_stat_activity WHERE pid = %s", pid
            ) == [("idle",)]
            assert stored_steps(postgres_url, pg_schema) == [0]
            status, _ = await connection_state(store)
            assert status == psycopg.pq.TransactionStatus.IDLE
        await store.save(checkpoint(1))
        await store.save(checkpoint(2))
        assert stored_steps(postgres_url, pg_schema) == [0, 1, 2]
        assert await store.run_sync(lambda conn: conn.info.backend_pid) == pid


async def test_a_statement_that_outlives_the_cancel_grace_closes_its_connection(
    postgres_url: str, pg_schema: str, store: PostgresCheckpointer
) -> None:
    with trio.fail_after(30):
        pid = await store.run_sync(lambda conn: conn.info.backend_pid)
        assert store._thread is not None
        store._thread.cancel_grace = 0  # no time for the server to answer the cancel
        with write_lock_held(postgres_url, pg_schema):
            await give_up_saving(store, 1)
        # Its results would have been read by the next statement: the connection was closed,
        # and the next call opens another.
        await store.save(checkpoint(1))
        assert await store.run_sync(lambda conn: conn.info.backend_pid) != pid
        assert stored_steps(postgres_url, pg_schema) == [0, 1]


async def test_a_refused_drafted_step_fails_clearly_and_stores_nothing(
    postgres_url: str, pg_schema: str, store: PostgresCheckpointer
) -> None:
    with trio.fail_after(30):
        await store.save(checkpoint(1))
        steps = f'"{pg_schema}".steps'
        query(postgres_url, f"ALTER TABLE {steps} ADD CONSTRAINT refused CHECK (step <> 2)")
        with pytest.raises(CheckpointBackendError, match=r"query failed on .*\"refused\""):
            await store.save(checkpoint(2))
        assert stored_steps(postgres_url, pg_schema) == [0, 1]
        assert query(postgres_url, f'SELECT latest_step FROM "{pg_schema}".sessions') == [(1,)]
        status, _ = await connection_state(store)
        assert status == psycopg.pq.TransactionStatus.IDLE
        query(postgres_url, f"ALTER TABLE {steps} DROP CONSTRAINT refused")
        await store.save(checkpoint(2))
        await store.save(checkpoint(3))
        assert stored_steps(postgres_url, pg_schema) == [0, 1, 2, 3]


async def test_a_statement_dropped_on_the_server_is_prepared_again(
    postgres_url: str, pg_schema: str, store: PostgresCheckpointer
) -> None:
    with trio.fail_after(30):
        await store.save(checkpoint(1))
        # psycopg sends DEALLOCATE ALL after a rollback, when it has prepared statements too.
        await store.run_sync(lambda conn: conn.execute("DEALLOCATE ALL"))
        assert await connection_state(store) == (psycopg.pq.TransactionStatus.IDLE, [])
        await store.save(checkpoint(2))
        assert stored_steps(postgres_url, pg_schema) == [0, 1, 2]
        assert "treadle_put_step" in (await connection_state(store))[1]
