"""PostgreSQL group commit: ``durability="sync"`` saves of several sessions that queue while a commit
is in flight go out together in one transaction, and each is acknowledged only once it is stored.
A save that fails (a conflict, an error on the server) is that session's failure alone: it is not
acknowledged and stores nothing, and the other sessions' saves are stored and acknowledged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from apps import counter_app

from treadle import (
    AppRunner,
    Checkpoint,
    CheckpointBackendError,
    ConcurrencyConflict,
    VersionedState,
)
from treadle.runtime.checkpointers import PostgresCheckpointer
from treadle.runtime.checkpointers.actor import CheckpointerActor
from treadle.runtime.checkpointers.postgres import _lock_key

pytest_plugins = ["pg_fixtures"]

pytestmark = pytest.mark.postgres

SESSIONS = ["a", "b", "c", "d", "e"]


def checkpoint(session: str, step: int) -> Checkpoint:
    return Checkpoint(session, step, VersionedState(extra={"n": step}), ("tick",), {}, {}, 1, step)


def commits_storing_steps(url: str, schema: str, from_step: int = 0) -> int:
    """How many transactions stored the rows of steps ``from_step`` and later that are there
    now: every way the store writes counts, told apart by the rows' ``xmin`` (the transaction
    that wrote them)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute(
            f'SELECT count(DISTINCT xmin::text) FROM "{schema}".steps WHERE step >= %s'.encode(),
            (from_step,),
        ).fetchone()
    assert found is not None
    return int(found[0])


def stored_steps(url: str, schema: str, session: str) -> list[int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT step FROM "{schema}".steps WHERE session_id = %s ORDER BY step'.encode(),
            (session,),
        ).fetchall()
    return [step for (step,) in rows]


@asynccontextmanager
async def running(actor: CheckpointerActor) -> AsyncIterator[None]:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            yield
            nursery.cancel_scope.cancel()


class HeldWriteLock:
    """Another connection holding a session's write lock until released."""

    def __init__(self, url: str, schema: str, session: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.key = _lock_key("write", schema, session)
        self.conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))

    def waited_for(self) -> bool:
        """Whether a writer is waiting for the lock."""
        # A bigint key is shown as its high and low 32 bits (classid, objid), objsubid 1.
        found = self.conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
            ((self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF),
        ).fetchone()
        return found is not None and found[0] > 0

    def release(self) -> None:
        self.conn.close()


async def saves_while_a_commit_is_in_flight(
    url: str, schema: str, saves: list[tuple[Checkpoint, int]]
) -> tuple[dict[str, BaseException | None], int, list[str]]:
    """Save step 0 of every session, then hold the first session's write lock and ask for each of
    ``saves`` (checkpoint, expected step) at once: the first waits on the server, the others queue
    behind it. Returns each session's outcome, the commits made after step 0, and the sessions in
    the order their acknowledgements arrived."""
    store = PostgresCheckpointer(url, schema=schema)
    actor = CheckpointerActor(store)
    results: dict[str, BaseException | None] = {}
    acknowledged: list[str] = []
    async with running(actor):
        for cp, _ in saves:
            await actor.save_with_concurrency_check(checkpoint(cp.session_id, 0), None)
        first = saves[0][0].session_id
        held = HeldWriteLock(url, schema, first)
        try:

            async def save(cp: Checkpoint, expected: int) -> None:
                try:
                    await actor.save_with_concurrency_check(cp, expected)
                except Exception as exc:
                    results[cp.session_id] = exc
                else:
                    # Acknowledged: it is stored, as another connection sees it.
                    assert cp.step in stored_steps(url, schema, cp.session_id)
                    results[cp.session_id] = None
                acknowledged.append(cp.session_id)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(save, *saves[0])
                while not held.waited_for():
                    await trio.sleep(0.01)
                for cp, expected in saves[1:]:
                    nursery.start_soon(save, cp, expected)
                await trio.testing.wait_all_tasks_blocked()
                assert results == {}  # nothing is acknowledged while the first commit waits
                held.release()
        finally:
            held.release()
    return results, commits_storing_steps(url, schema, from_step=1), acknowledged


async def test_saves_queued_behind_a_commit_share_one_transaction(
    postgres_url: str, pg_schema: str
) -> None:
    saves = [(checkpoint(session, 1), 0) for session in SESSIONS]
    results, commits, acknowledged = await saves_while_a_commit_is_in_flight(
        postgres_url, pg_schema, saves
    )
    assert results == dict.fromkeys(SESSIONS)
    # The first save's commit, then one for the four that queued behind it.
    assert commits == 2
    assert acknowledged[0] == "a"
    for session in SESSIONS:
        assert stored_steps(postgres_url, pg_schema, session) == [0, 1]


async def test_a_conflict_in_a_group_is_that_session_s_alone(
    postgres_url: str, pg_schema: str
) -> None:
    # "c" builds on a step that is not stored: its save conflicts; the others' go through.
    saves = [(checkpoint(session, 1), 5 if session == "c" else 0) for session in SESSIONS]
    results, commits, _ = await saves_while_a_commit_is_in_flight(postgres_url, pg_schema, saves)
    assert isinstance(results.pop("c"), ConcurrencyConflict)
    assert results == dict.fromkeys(["a", "b", "d", "e"])
    assert commits == 2
    assert stored_steps(postgres_url, pg_schema, "c") == [0]
    for session in ("a", "b", "d", "e"):
        assert stored_steps(postgres_url, pg_schema, session) == [0, 1]


def refuse_steps_of(url: str, schema: str, session: str, from_step: int) -> None:
    """A trigger in the test's schema that makes the server refuse ``session``'s later steps."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"""
            CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.session_id = '{session}' AND NEW.step >= {from_step} THEN
                    RAISE EXCEPTION 'refused by the test';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON "{schema}".steps
                FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse();
            """.encode()
        )


async def test_a_server_error_in_a_group_fails_only_that_session(
    postgres_url: str, pg_schema: str
) -> None:
    store = PostgresCheckpointer(postgres_url, schema=pg_schema)
    async with running(CheckpointerActor(store)):
        pass  # creates the tables
    refuse_steps_of(postgres_url, pg_schema, "c", from_step=1)
    saves = [(checkpoint(session, 1), 0) for session in SESSIONS]
    results, commits, _ = await saves_while_a_commit_is_in_flight(postgres_url, pg_schema, saves)
    error = results.pop("c")
    assert isinstance(error, CheckpointBackendError)
    assert "refused by the test" in str(error)
    assert results == dict.fromkeys(["a", "b", "d", "e"])
    # The group's transaction failed; its saves were then made one by one: a, then b, d, e.
    assert commits == 4
    assert stored_steps(postgres_url, pg_schema, "c") == [0]
    for session in ("a", "b", "d", "e"):
        assert stored_steps(postgres_url, pg_schema, session) == [0, 1]


async def test_concurrent_sessions_commit_in_groups_and_a_refused_step_is_not_applied(
    postgres_url: str, pg_schema: str
) -> None:
    limit = 6
    store = PostgresCheckpointer(postgres_url, schema=pg_schema)
    sessions = [f"s{i}" for i in range(8)]
    async with AppRunner(counter_app(limit=limit, pause=0), checkpointer=store) as runner:
        refuse_steps_of(postgres_url, pg_schema, "s3", from_step=3)
        failures: dict[str, BaseException] = {}

        async def run(session: str) -> None:
            await runner.create_session(session, VersionedState(extra={"n": 0}))
            try:
                await runner.run_until_complete(session)
            except CheckpointBackendError as exc:
                failures[session] = exc

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for session in sessions:
                    nursery.start_soon(run, session)
        assert list(failures) == ["s3"]
        assert failures["s3"].step == 3  # type: ignore[attr-defined]
        view = await runner.get_session("s3")
        assert view.step == 2  # the refused step was not applied
        assert view.state.extra["n"] == 2
        for session in sessions:
            steps = [i.step for i in await runner.get_state_history(session)]
            assert steps == (list(range(3)) if session == "s3" else list(range(limit + 1)))
        # 8 sessions x 7 steps, s3 refused once (and stored alone, as its group's retry was):
        # sessions running side by side shared their commits.
        saves = len(sessions) * (limit + 1) - (limit - 2)
        assert commits_storing_steps(postgres_url, pg_schema) < saves


async def test_more_saves_than_a_group_holds_are_committed_in_turns(
    postgres_url: str, pg_schema: str
) -> None:
    import psycopg

    sessions = [f"s{i:02}" for i in range(41)]
    saves = [(checkpoint(session, 1), 0) for session in sessions]
    results, _, _ = await saves_while_a_commit_is_in_flight(postgres_url, pg_schema, saves)
    assert results == dict.fromkeys(sessions)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        sizes = conn.execute(
            f'SELECT count(*) FROM "{pg_schema}".steps WHERE step = 1 GROUP BY xmin::text'.encode()
        ).fetchall()
    # The first save's commit, then the 40 queued behind it: a group of 32, then one of 8.
    assert sorted(size for (size,) in sizes) == [1, 8, 32]
