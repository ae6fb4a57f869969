"""One drafted step, or the drafted steps of several sessions together (group commit, in one
transaction), is stored by prepared statements run from the Trio thread (no thread hop), with
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
def write_lock_held(url: str, schema: str, session_id: str = "s") -> Iterator[Any]:
    """Another connection (yielded) holds the session's write lock: its saves wait on the
    server."""
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (_lock_key("write", schema, session_id),))
        yield other


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


async def put_statements(store: PostgresCheckpointer) -> list[str]:
    """The statements that move a stored head, prepared on the store's connection."""
    return [name for name in (await connection_state(store))[1] if name.startswith("treadle_put")]


async def test_a_step_is_stored_by_the_cheapest_statement_that_holds_its_new_messages(
    postgres_url: str, pg_schema: str, store: PostgresCheckpointer
) -> None:
    with trio.fail_after(30):
        await store.save(talking(1, 2))  # one row of the log, sent as stored
        assert await put_statements(store) == ["treadle_put_run"]
        await store.save(talking(2, 2))  # no new message: no log part
        assert await put_statements(store) == ["treadle_put_run", "treadle_put_step"]
        await store.save(talking(3, 3 + RUN))  # more than a row: runs split by the server
        await store.save(talking(4, 3 + RUN))
        assert await put_statements(store) == [
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


# -- several sessions' steps in one transaction (group commit) --------------------------------------

GROUP = ["a", "b", "c"]


def step_of(session: str, step: int) -> Checkpoint:
    return Checkpoint(session, step, VersionedState(extra={"n": step}), ("tick",), {}, {}, 1, step)


def steps_of(url: str, schema: str) -> dict[str, list[int]]:
    rows = query(
        url,
        f'SELECT session_id, step FROM "{schema}".steps WHERE session_id = ANY(%s) '
        "ORDER BY session_id, step",
        GROUP,
    )
    found: dict[str, list[int]] = {}
    for session, step in rows:
        found.setdefault(session, []).append(step)
    return found


def each(steps: list[int]) -> dict[str, list[int]]:
    """``steps`` stored for every session of the group."""
    return {session: list(steps) for session in GROUP}


def transactions_storing(url: str, schema: str, step: int) -> int:
    """How many transactions stored the rows of ``step`` that are there now (their ``xmin``)."""
    rows = query(
        url,
        f'SELECT count(DISTINCT xmin::text) FROM "{schema}".steps '
        "WHERE step = %s AND session_id = ANY(%s)",
        step,
        GROUP,
    )
    return int(rows[0][0])


@pytest.fixture
async def group_store(store: PostgresCheckpointer) -> PostgresCheckpointer:
    """The open store holding step 0 of sessions a, b and c too: their next steps are drafted."""
    for session in GROUP:
        await store.save(step_of(session, 0))
    return store


async def save_group(store: PostgresCheckpointer, step: int) -> list[BaseException | None]:
    """Save ``step`` of every session of the group together; each one's error, or None."""
    outcomes = await store.save_group([step_of(s, step) for s in GROUP], [step - 1] * len(GROUP))
    errors: list[BaseException | None] = []
    for one in outcomes:
        try:
            one.unwrap()
        except Exception as exc:
            errors.append(exc)
        else:
            errors.append(None)
    return errors


async def pipeline_state(store: PostgresCheckpointer) -> tuple[Any, Any, int]:
    """The connection's transaction status, pipeline status and server process."""
    return await store.run_sync(
        lambda conn: (
            conn.info.transaction_status,
            conn.pgconn.pipeline_status,
            conn.info.backend_pid,
        )
    )


async def test_drafted_steps_of_several_sessions_are_stored_in_one_transaction(
    postgres_url: str, pg_schema: str, group_store: PostgresCheckpointer
) -> None:
    with trio.fail_after(30):
        assert await save_group(group_store, 1) == [None, None, None]
        assert await save_group(group_store, 2) == [None, None, None]
        assert steps_of(postgres_url, pg_schema) == each([0, 1, 2])
        assert transactions_storing(postgres_url, pg_schema, 1) == 1
        assert transactions_storing(postgres_url, pg_schema, 2) == 1
        status, pipeline, _ = await pipeline_state(group_store)
        assert status == psycopg.pq.TransactionStatus.IDLE
        assert pipeline == psycopg.pq.PipelineStatus.OFF
        for session in GROUP:
            assert (await group_store.load(session, 2)).state == step_of(session, 2).state


async def test_an_error_in_a_group_applies_none_of_it_and_each_step_is_then_stored_alone(
    postgres_url: str, pg_schema: str, group_store: PostgresCheckpointer
) -> None:
    with trio.fail_after(30):
        steps = f'"{pg_schema}".steps'
        # "c" is last in the group's transaction: "a" and "b" ran before it failed.
        query(
            postgres_url,
            f"ALTER TABLE {steps} ADD CONSTRAINT refused CHECK (session_id <> 'c' OR step <> 1)",
        )
        errors = await save_group(group_store, 1)
        assert errors[:2] == [None, None]
        assert isinstance(errors[2], CheckpointBackendError)
        assert '"refused"' in str(errors[2])
        assert steps_of(postgres_url, pg_schema) == {"a": [0, 1], "b": [0, 1], "c": [0]}
        # The group's transaction left nothing: a and b were stored by one transaction each.
        assert transactions_storing(postgres_url, pg_schema, 1) == 2
        status, pipeline, _ = await pipeline_state(group_store)
        assert (status, pipeline) == (
            psycopg.pq.TransactionStatus.IDLE,
            psycopg.pq.PipelineStatus.OFF,
        )
        query(postgres_url, f"ALTER TABLE {steps} DROP CONSTRAINT refused")
        await group_store.save(step_of("c", 1))
        assert await save_group(group_store, 2) == [None, None, None]
        assert transactions_storing(postgres_url, pg_schema, 2) == 1


@contextmanager
def write_lock_of(url: str, schema: str, session: str) -> Iterator[None]:
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (_lock_key("write", schema, session),))
        yield


async def test_a_cancelled_group_cancels_its_statements_and_applies_none_of_them(
    postgres_url: str, pg_schema: str, group_store: PostgresCheckpointer
) -> None:
    with trio.fail_after(30):
        _, _, pid = await pipeline_state(group_store)
        # "c" waits on the server for its lock, after "a" and "b" ran in the same transaction.
        with write_lock_of(postgres_url, pg_schema, "c"):
            start = time.monotonic()
            with trio.move_on_after(0.5) as scope:
                await save_group(group_store, 1)
            assert scope.cancelled_caught
            assert time.monotonic() - start < 3
            assert query(
                postgres_url, "SELECT state FROM pg_stat_activity WHERE pid = %s", pid
            ) == [("idle",)]
            assert steps_of(postgres_url, pg_schema) == each([0])
            assert await pipeline_state(group_store) == (
                psycopg.pq.TransactionStatus.IDLE,
                psycopg.pq.PipelineStatus.OFF,
                pid,
            )
        assert await save_group(group_store, 1) == [None, None, None]
        assert steps_of(postgres_url, pg_schema) == each([0, 1])
        assert (await pipeline_state(group_store))[2] == pid


async def test_a_group_that_outlives_the_cancel_grace_closes_its_connection(
    postgres_url: str, pg_schema: str, group_store: PostgresCheckpointer
) -> None:
    with trio.fail_after(30):
        _, _, pid = await pipeline_state(group_store)
        assert group_store._thread is not None
        group_store._thread.cancel_grace = 0
        with write_lock_of(postgres_url, pg_schema, "c"):
            with trio.move_on_after(0.5) as scope:
                await save_group(group_store, 1)
            assert scope.cancelled_caught
        # The server rolled the group back when its connection ended; the next call reconnects.
        assert steps_of(postgres_url, pg_schema) == each([0])
        assert await save_group(group_store, 1) == [None, None, None]
        assert steps_of(postgres_url, pg_schema) == each([0, 1])
        assert (await pipeline_state(group_store))[2] != pid


async def test_statements_dropped_on_the_server_are_prepared_again_for_a_group(
    postgres_url: str, pg_schema: str, group_store: PostgresCheckpointer
) -> None:
    with trio.fail_after(30):
        assert await save_group(group_store, 1) == [None, None, None]
        await group_store.run_sync(lambda conn: conn.execute("DEALLOCATE ALL"))
        assert await save_group(group_store, 2) == [None, None, None]
        assert transactions_storing(postgres_url, pg_schema, 2) == 1
        assert steps_of(postgres_url, pg_schema) == each([0, 1, 2])


def first_step(session_id: str, said: str) -> Checkpoint:
    """Step 0 of a new session whose input holds one message."""
    state = VersionedState(messages=[Message("user", said)], extra={"said": said})
    return Checkpoint(session_id, 0, state, ("tick",), {}, {}, 1, 0)


async def test_a_new_sessions_first_step_is_stored_by_one_prepared_statement(
    postgres_url: str, pg_schema: str, store: PostgresCheckpointer
) -> None:
    with trio.fail_after(30):
        await store.save_with_concurrency_check(first_step("t", "hello"), None)
        status, prepared = await connection_state(store)
        assert status == psycopg.pq.TransactionStatus.IDLE
        assert "treadle_new_run" in prepared  # the head created, the message and the row inserted
        sessions = f'SELECT session_id, latest_step, log_end FROM "{pg_schema}".sessions'
        assert query(postgres_url, sessions + " WHERE session_id = 't'") == [("t", 0, 1)]
        assert (await store.load_latest("t")) == first_step("t", "hello")
        # The next step is a delta on the step just stored, moved the short way too.
        nxt = Checkpoint("t", 1, first_step("t", "hello").state, ("tick",), {}, {}, 1, 1)
        await store.save_with_concurrency_check(nxt, 0)
        assert (await store.load_latest("t")) == nxt


async def test_a_first_step_of_a_session_stored_meanwhile_conflicts_and_changes_nothing(
    postgres_url: str, pg_schema: str, store: PostgresCheckpointer
) -> None:
    from treadle import ConcurrencyConflict

    with trio.fail_after(30):
        stored = await store.load_latest("s")
        async with trio.open_nursery() as nursery:
            other = PostgresCheckpointer(postgres_url, schema=pg_schema)
            await other.open(nursery)
            try:
                with pytest.raises(ConcurrencyConflict):
                    await other.save_with_concurrency_check(first_step("s", "late"), None)
                assert "treadle_new_run" in (await connection_state(other))[1]  # tried, refused
                assert await other.load_latest("s") == stored
            finally:
                await other.aclose()
        assert stored_steps(postgres_url, pg_schema) == [0]


async def test_of_two_writers_creating_one_session_at_once_exactly_one_stores_its_first_step(
    postgres_url: str, pg_schema: str, nursery: trio.Nursery
) -> None:
    from treadle import ConcurrencyConflict

    stores = [PostgresCheckpointer(postgres_url, schema=pg_schema) for _ in range(2)]
    for one in stores:
        await one.open(nursery)
    outcomes: dict[str, str] = {}

    async def create(one: PostgresCheckpointer, said: str) -> None:
        try:
            await one.save_with_concurrency_check(first_step("new", said), None)
            outcomes[said] = "stored"
        except ConcurrencyConflict:
            outcomes[said] = "conflict"

    pids = [await one.run_sync(lambda conn: conn.info.backend_pid) for one in stores]
    waiting = f"SELECT count(*) FROM pg_locks WHERE NOT granted AND pid IN ({pids[0]}, {pids[1]})"
    try:
        with trio.fail_after(30), write_lock_held(postgres_url, pg_schema, "new") as other:
            async with trio.open_nursery() as both:
                both.start_soon(create, stores[0], "one")
                both.start_soon(create, stores[1], "two")
                while query(postgres_url, waiting) != [(2,)]:  # both wait on the server
                    await trio.sleep(0.01)
                other.execute("SELECT pg_advisory_unlock_all()")
        assert sorted(outcomes.values()) == ["conflict", "stored"]
        winner = next(said for said, result in outcomes.items() if result == "stored")
        for one in stores:
            assert await one.load_latest("new") == first_step("new", winner)
        assert query(postgres_url, f'SELECT count(*) FROM "{pg_schema}".messages') == [(1,)]
    finally:
        for one in stores:
            await one.aclose()


def talking_of(session: str, step: int, messages: int) -> Checkpoint:
    said = [Message("user", f"m{i}") for i in range(messages)]
    state = VersionedState(messages=said, extra={"n": step})
    return Checkpoint(session, step, state, ("tick",), {}, {}, 1, step)


async def test_one_statement_of_a_group_dropped_on_the_server_is_prepared_again(
    postgres_url: str, pg_schema: str, group_store: PostgresCheckpointer
) -> None:
    async def save_talking_group(step: int) -> None:
        # "a" appends a message (treadle_put_run), b and c none (treadle_put_step).
        group = [talking_of("a", step, step), step_of("b", step), step_of("c", step)]
        outcomes = await group_store.save_group(group, [step - 1] * 3)
        for one in outcomes:
            one.unwrap()

    with trio.fail_after(30):
        await save_talking_group(1)
        await group_store.run_sync(lambda conn: conn.execute("DEALLOCATE treadle_put_run"))
        await save_talking_group(2)
        await save_talking_group(3)
        assert steps_of(postgres_url, pg_schema) == each([0, 1, 2, 3])
        for step in (2, 3):
            assert transactions_storing(postgres_url, pg_schema, step) == 1
        assert (await group_store.load("a", 3)).state == talking_of("a", 3, 3).state
