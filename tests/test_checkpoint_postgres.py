"""PostgreSQL specifics: versioned migrations, leases between connections, and clear, masked
errors when the server cannot be reached."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import psycopg
import pytest
import trio
from apps import counter_app

from treadle import END, START, AppRunner, GraphBuilder, NoStartNodes
from treadle.runtime.checkpointers import PostgresCheckpointer
from treadle.runtime.checkpointers.checkpoint import Checkpoint
from treadle.runtime.checkpointers.postgres import _lock_key, _PostgresTx, migrations
from treadle.runtime.errors import CheckpointBackendError, SessionExists, SessionLeased
from treadle.runtime.graph.state import Message, VersionedState

pytest_plugins = ["pg_fixtures"]


def checkpoint(step: int) -> Checkpoint:
    return Checkpoint(
        session_id="s",
        step=step,
        state=VersionedState(extra={"step": step}),
        frontier=("a",),
        versions_seen={},
        join_state={},
        concurrency_limit=1,
        created_at=step,
    )


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql.encode(), params or None)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
async def pair(
    postgres_url: str, pg_schema: str, nursery: trio.Nursery
) -> AsyncIterator[tuple[Any, Any]]:
    """Two checkpointers on one schema: two connections, as two processes would have."""
    first = PostgresCheckpointer(postgres_url, schema=pg_schema)
    second = PostgresCheckpointer(postgres_url, schema=pg_schema)
    await first.open(nursery)
    await second.open(nursery)
    yield first, second
    await first.aclose()
    await second.aclose()


# -- migrations --------------------------------------------------------------------------------------


def test_migrations_ship_as_numbered_files() -> None:
    shipped = migrations()
    assert [(v, name) for v, name, _ in shipped][:1] == [(1, "0001_init.sql")]
    assert [v for v, _, _ in shipped] == sorted({v for v, _, _ in shipped})
    assert "CREATE TABLE steps" in shipped[0][2]


async def test_migrations_apply_once_even_when_opened_concurrently(
    postgres_url: str, pg_schema: str, nursery: trio.Nursery
) -> None:
    stores = [PostgresCheckpointer(postgres_url, schema=pg_schema) for _ in range(3)]
    async with trio.open_nursery() as openers:
        for store in stores:
            openers.start_soon(store.open, nursery)
    rows = query(postgres_url, f'SELECT version, name FROM "{pg_schema}".schema_migrations')
    assert rows == [(version, name) for version, name, _ in migrations()]
    assert rows[:2] == [(1, "0001_init.sql"), (2, "0002_queue.sql")]
    await stores[0].save(checkpoint(1))
    for store in stores:
        await store.aclose()
    again = PostgresCheckpointer(f"{postgres_url}?schema={pg_schema}")
    await again.open(nursery)
    latest = await again.load_latest("s")
    assert latest is not None
    assert latest.step == 1
    await again.aclose()
    assert query(postgres_url, f'SELECT count(*) FROM "{pg_schema}".schema_migrations') == [
        (len(rows),)
    ]


async def test_a_schema_from_a_newer_treadle_is_refused(
    postgres_url: str, pg_schema: str, nursery: trio.Nursery
) -> None:
    store = PostgresCheckpointer(postgres_url, schema=pg_schema)
    await store.open(nursery)
    await store.aclose()
    query(
        postgres_url,
        f"INSERT INTO \"{pg_schema}\".schema_migrations (version, name) VALUES (999, '0999_x.sql')",
    )
    with pytest.raises(CheckpointBackendError, match=r"migrated by a newer treadle.*999"):
        await PostgresCheckpointer(postgres_url, schema=pg_schema).open(nursery)


async def test_deleting_a_session_deletes_its_steps_and_messages_and_no_other(
    postgres_url: str, pg_schema: str, nursery: trio.Nursery
) -> None:
    # The tables have no foreign keys (schema 4): the delete itself removes every row of the session.
    store = PostgresCheckpointer(postgres_url, schema=pg_schema)
    await store.open(nursery)
    for session in ("gone", "kept"):
        for step in range(3):
            state = VersionedState(
                messages=tuple(Message("user", f"{session} {n}") for n in range(step + 1)),
                extra={"step": step},
            )
            await store.save(attrs.evolve(checkpoint(step), session_id=session, state=state))
    assert await store.delete_session("gone") is True
    await store.aclose()

    def rows(table: str) -> list[tuple[Any, ...]]:
        return query(
            postgres_url,
            f'SELECT session_id, count(*) FROM "{pg_schema}".{table} '
            "GROUP BY session_id ORDER BY session_id",
        )

    assert rows("sessions") == [("kept", 1)]
    assert rows("steps") == [("kept", 3)]
    assert [session for session, _ in rows("messages")] == ["kept"]


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipeline", "plain"])
async def test_a_save_the_server_refuses_half_way_is_rolled_back_whole(
    postgres_url: str,
    pg_schema: str,
    nursery: trio.Nursery,
    pipelined: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A trigger makes the server refuse the row of step 3 after the session's head was updated in
    # the same transaction: nothing of that save may remain, and the connection must stay usable.
    store = PostgresCheckpointer(postgres_url, schema=pg_schema)
    await store.open(nursery)
    assert store._pipelines  # psycopg's binary build ships a libpq with pipeline mode
    store._pipelines = pipelined  # the plain path serves a libpq older than 14
    for step in range(3):
        await store.save(checkpoint(step))
    query(
        postgres_url,
        f'CREATE FUNCTION "{pg_schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS '
        "$$ BEGIN RAISE EXCEPTION 'refused step %', NEW.step; END $$",
    )
    query(
        postgres_url,
        f'CREATE TRIGGER refuse BEFORE INSERT ON "{pg_schema}".steps FOR EACH ROW '
        f'WHEN (NEW.step = 3) EXECUTE FUNCTION "{pg_schema}".refuse()',
    )
    with pytest.raises(CheckpointBackendError, match="refused step 3"):
        await store.save(checkpoint(3))
    latest = await store.load_latest("s")
    assert latest is not None
    assert latest.step == 2
    assert [i.step for i in await store.list_steps("s")] == [0, 1, 2]
    assert query(postgres_url, f'SELECT latest_step FROM "{pg_schema}".sessions') == [(2,)]

    query(postgres_url, f'DROP TRIGGER refuse ON "{pg_schema}".steps')

    # The same when the save fails in this process after the head was sent. That happens on the
    # long way (read the head, then write), taken by a step the store has not drafted.
    def fail(*args: object) -> None:
        raise RuntimeError("failed between statements")

    store._codec.forget("s")
    with monkeypatch.context() as patch:
        patch.setattr(_PostgresTx, "put_rows", fail)
        with pytest.raises(RuntimeError, match="between statements"):
            await store.save(checkpoint(3))
    assert query(postgres_url, f'SELECT latest_step FROM "{pg_schema}".sessions') == [(2,)]

    await store.save(checkpoint(3))
    again = await store.load("s", 3)
    assert again.state == checkpoint(3).state
    await store.aclose()


async def test_step_metadata_is_jsonb_and_queryable(
    postgres_url: str, pg_schema: str, nursery: trio.Nursery
) -> None:
    store = PostgresCheckpointer(postgres_url, schema=pg_schema)
    await store.open(nursery)
    for step in range(3):
        await store.save(
            Checkpoint(
                session_id="s",
                step=step,
                state=VersionedState(),
                frontier=(),
                versions_seen={},
                join_state={},
                concurrency_limit=1,
                created_at=step,
                ran_nodes=("plan",) if step == 1 else ("work",),
            )
        )
    await store.aclose()
    rows = query(
        postgres_url,
        f'SELECT step FROM "{pg_schema}".steps WHERE ran_nodes @> \'["plan"]\'::jsonb',
    )
    assert rows == [(1,)]


# -- unreachable servers -----------------------------------------------------------------------------


async def test_an_unreachable_server_fails_open_with_the_masked_url(nursery: trio.Nursery) -> None:
    store = PostgresCheckpointer(
        "postgresql://treadle:s3cret-pw@127.0.0.1:1/nothing", connect_timeout=2
    )
    with trio.fail_after(30), pytest.raises(CheckpointBackendError) as info:
        await store.open(nursery)
    message = str(info.value)
    assert message.startswith(
        "postgres: cannot connect to postgresql://treadle:***@127.0.0.1:1/nothing"
    )
    assert "check that the server is running" in message
    assert "s3cret-pw" not in message
    assert "s3cret-pw" not in repr(store)


async def test_a_wrong_database_fails_open_clearly(
    postgres_url: str, nursery: trio.Nursery
) -> None:
    store = PostgresCheckpointer(postgres_url.rsplit("/", 1)[0] + "/no_such_database_here")
    with pytest.raises(CheckpointBackendError, match="no_such_database_here"):
        await store.open(nursery)


# -- leases ------------------------------------------------------------------------------------------


async def test_a_leased_session_is_refused_to_another_connection(pair: tuple[Any, Any]) -> None:
    first, second = pair
    await first.acquire_lease("s", "host-a:1")
    await first.acquire_lease("s", "host-a:1")  # idempotent for its owner
    with pytest.raises(
        SessionLeased, match=r"'s' is being run by another process \(host-a:1\)"
    ) as info:
        await second.acquire_lease("s", "host-b:2")
    assert info.value.holder == "host-a:1"
    # Another owner on the same connection is refused too.
    with pytest.raises(SessionLeased):
        await first.acquire_lease("s", "host-a:other")
    await second.acquire_lease("t", "host-b:2")  # other sessions are free
    await first.release_lease("s", "host-b:2")  # not the owner: nothing happens
    with pytest.raises(SessionLeased):
        await second.acquire_lease("s", "host-b:2")
    await first.release_lease("s", "host-a:1")
    await second.acquire_lease("s", "host-b:2")
    assert second.held_leases() == {"s": "host-b:2", "t": "host-b:2"}


async def test_a_lease_dies_with_its_connection(postgres_url: str, pair: tuple[Any, Any]) -> None:
    first, second = pair
    await first.acquire_lease("s", "crashing")
    # Kill the holder's connection as a crash (SIGKILL) would; the server frees its locks at once.
    pid = first._require_conn().info.backend_pid
    assert query(postgres_url, "SELECT pg_terminate_backend(%s, 5000)", pid) == [(True,)]
    await second.acquire_lease("s", "survivor")
    rows = query(
        postgres_url,
        f'SELECT owner FROM "{second.schema}".session_leases WHERE session_id = %s',
        "s",
    )
    assert rows == [("survivor",)]


def lease_rows(url: str, schema: str) -> list[tuple[str, str]]:
    return [
        (sid, owner)
        for sid, owner in query(
            url, f'SELECT session_id, owner FROM "{schema}".session_leases ORDER BY session_id'
        )
    ]


async def test_a_lease_is_taken_and_given_up_from_the_trio_thread(
    pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = pair

    def no_thread(*args: Any) -> None:
        raise AssertionError("the connection thread was asked")

    monkeypatch.setattr(first, "_acquire_sync", no_thread)
    monkeypatch.setattr(first._thread, "call", no_thread)
    with trio.fail_after(30):
        await first.acquire_lease("s", "me")
        with pytest.raises(SessionLeased, match=r"\(me\)"):
            await second.acquire_lease("s", "you")
        await first.release_lease("s", "me")
        await second.acquire_lease("s", "you")
    assert first.held_leases() == {}


async def test_many_leases_are_given_up_in_one_statement(
    postgres_url: str, pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = pair
    statements: list[dict[str, Any]] = []
    execute = first._give_up_leases.execute

    async def counted(conn: Any, params: dict[str, Any], **kwargs: Any) -> Any:
        statements.append(params)
        return await execute(conn, params, **kwargs)

    monkeypatch.setattr(first._give_up_leases, "execute", counted)
    odd = "it's " + '"quoted", {braced}'  # as JSON and as an array literal would need escaping
    with trio.fail_after(30):
        for sid in ["a", "b", odd]:
            await first.acquire_lease(sid, "me")
        await first.acquire_lease("d", "other")
        # Another owner's lease, and one never taken, are skipped.
        await first.release_leases(["a", "b", odd, "d", "never"], "me")
        assert len(statements) == 1
        assert first.held_leases() == {"d": "other"}
        assert lease_rows(postgres_url, first.schema) == [("d", "other")]
        for sid in ["a", "b", odd]:
            await second.acquire_lease(sid, "you")  # the session locks are free
        with pytest.raises(SessionLeased):
            await second.acquire_lease("d", "you")
        await first.release_leases(["a", "b"], "me")  # held by nobody here: nothing is sent
        assert len(statements) == 1


async def test_a_lease_waits_for_a_connection_another_thread_is_using(
    pair: tuple[Any, Any],
) -> None:
    first, second = pair
    conn = first._require_conn()
    # Another thread holds psycopg's lock of the connection for a while (a user's own query).
    assert conn.lock.acquire(blocking=False)
    releaser = threading.Timer(0.3, conn.lock.release)
    releaser.start()
    with trio.fail_after(30):
        await first.acquire_lease("s", "me")  # taken in the connection thread, once it may
        assert not conn.lock.locked()
        with pytest.raises(SessionLeased):
            await second.acquire_lease("s", "you")
        assert conn.lock.acquire(blocking=False)
        releaser = threading.Timer(0.3, conn.lock.release)
        releaser.start()
        await first.release_lease("s", "me")
        assert not conn.lock.locked()
        await second.acquire_lease("s", "you")
    releaser.join()


@contextmanager
def lease_row_held(url: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    """Another connection (yielded) inserts session ``s``'s lease row and keeps its transaction
    open until it rolls back: a statement taking that lease gets the session lock, then waits on
    the row."""
    with psycopg.connect(url) as other:
        other.execute(
            f'INSERT INTO "{schema}".session_leases (session_id, owner, expires_at) '
            "VALUES ('s', 'blocker', now())"
        )
        yield other


@contextmanager
def write_lock_held(url: str, schema: str, session_id: str) -> Iterator[None]:
    """Another writer holds the write lock of ``session_id`` until the block ends: a write of
    that session waits for it (up to ``lock_timeout``)."""
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (_lock_key("write", schema, session_id),))
        yield


async def _never_here(*args: Any) -> bool:
    return False  # every lease is taken the long way, in the connection thread


@pytest.fixture
async def impatient(
    postgres_url: str, pg_schema: str, nursery: trio.Nursery
) -> AsyncIterator[PostgresCheckpointer]:
    """A store on the pair's schema whose statements wait for a row lock at most 0.2 s."""
    store = PostgresCheckpointer(postgres_url, schema=pg_schema, lock_timeout=0.2)
    await store.open(nursery)
    yield store
    await store.aclose()


@pytest.fixture(params=["cancelled", "failed"])
def ending(request: pytest.FixtureRequest) -> str:
    """How a statement that waits on a lease row ends: its caller cancels, or lock_timeout."""
    return str(request.param)


@pytest.fixture(params=[False, True], ids=["trio-thread", "connection-thread"])
def thread(request: pytest.FixtureRequest) -> bool:
    """Whether the statement is made to run in the connection thread instead of the Trio one."""
    return bool(request.param)


@pytest.fixture
def waiting_store(
    ending: str, pair: tuple[Any, Any], impatient: PostgresCheckpointer
) -> PostgresCheckpointer:
    """The store whose wait on a lease row ends as ``ending`` says: the impatient one fails after
    0.2 s; the pair's first waits long enough for its caller to cancel."""
    return pair[0] if ending == "cancelled" else impatient


async def test_a_lease_take_that_does_not_succeed_leaves_the_session_free(
    postgres_url: str,
    pair: tuple[Any, Any],
    waiting_store: PostgresCheckpointer,
    ending: str,
    thread: bool,
) -> None:
    store, second = waiting_store, pair[1]
    if thread:
        store._take_lease_here = _never_here
    with lease_row_held(postgres_url, store.schema) as blocker:
        with trio.fail_after(30):
            if ending == "cancelled":
                with trio.move_on_after(0.5) as scope:
                    await store.acquire_lease("s", "me")
                assert scope.cancelled_caught
            else:
                # The wait on the row outlives lock_timeout: the statement fails.
                with pytest.raises(CheckpointBackendError, match="cannot take the lease"):
                    await store.acquire_lease("s", "me")
        assert store.held_leases() == {}
        blocker.rollback()
    # The statement got the session lock before it waited on the row: given up with it.
    with trio.fail_after(30):
        await second.acquire_lease("s", "next")


async def test_a_lease_whose_row_cannot_be_deleted_still_frees_the_session(
    postgres_url: str, pair: tuple[Any, Any], waiting_store: PostgresCheckpointer, thread: bool
) -> None:
    store, second = waiting_store, pair[1]
    if thread:

        async def busy(*args: Any, **kwargs: Any) -> None:
            raise trio.BusyResourceError  # as when another thread uses the connection

        store._give_up_leases.execute = busy  # given up in the connection thread instead
    leases = f'"{store.schema}".session_leases'
    with trio.fail_after(30):
        await store.acquire_lease("s", "me")
        with psycopg.connect(postgres_url) as blocker:
            # An operator's transaction holds the lease row: past the impatient store's
            # lock_timeout, or until the other store's caller gives up waiting.
            blocker.execute(f"SELECT * FROM {leases} WHERE session_id = 's' FOR UPDATE")
            with trio.move_on_after(0.5):
                # Cancelled, the connection thread's call may still end normally (it gave up
                # the locks alone): the cancellation is then seen at the next checkpoint.
                await store.release_lease("s", "me")
            assert store.held_leases() == {}
            blocker.rollback()
        await second.acquire_lease("s", "next")  # the lock was given up all the same
        assert lease_rows(postgres_url, store.schema) == [("s", "next")]


async def _busy(*args: Any, **kwargs: Any) -> None:
    raise trio.BusyResourceError  # as when another thread uses the connection


async def test_a_release_cancelled_before_its_statement_is_sent_still_frees_the_sessions(
    postgres_url: str, pair: tuple[Any, Any], thread: bool
) -> None:
    first, second = pair
    if thread:
        first._give_up_leases.execute = _busy  # given up in the connection thread instead
    scope = trio.CancelScope()

    async def release() -> None:
        with scope:
            await first.release_leases(["s", "t"], "me")

    with trio.fail_after(30):
        await first.acquire_lease("s", "me")
        await first.acquire_lease("t", "me")
        async with trio.open_nursery() as nursery:
            async with first._thread.between_calls():
                nursery.start_soon(release)
                await trio.testing.wait_all_tasks_blocked()  # waiting for its turn
            # The release has its turn now and runs next: it is cancelled after taking it and
            # before sending anything (as a runner's close_session abandoned by its caller).
            scope.cancel()
        assert scope.cancelled_caught
        assert first.held_leases() == {}
        for sid in ["s", "t"]:
            await second.acquire_lease(sid, "next")  # the session locks went all the same
        assert lease_rows(postgres_url, first.schema) == [("s", "next"), ("t", "next")]


async def test_a_runner_gives_up_the_leases_of_all_its_sessions_at_once_on_closing(
    postgres_url: str, pg_schema: str, pair: tuple[Any, Any]
) -> None:
    _, other = pair
    calls: list[list[str]] = []

    class Recording(PostgresCheckpointer):
        async def release_leases(self, session_ids: Any, owner: str) -> None:
            calls.append(list(session_ids))
            await super().release_leases(session_ids, owner)

    store = Recording(postgres_url, schema=pg_schema)
    with trio.fail_after(30):
        async with AppRunner(counter_app(pause=0), checkpointer=store) as runner:
            for sid in ["a", "b", "c"]:
                await runner.create_session(sid, VersionedState())
            assert sorted(store.held_leases()) == ["a", "b", "c"]
        assert calls == [["a", "b", "c"]]
        assert lease_rows(postgres_url, pg_schema) == []
        for sid in ["a", "b", "c"]:
            await other.acquire_lease(sid, "next")


async def test_a_cancelled_close_session_keeps_the_lease_or_gives_it_up_whole(
    postgres_url: str, pg_schema: str, pair: tuple[Any, Any]
) -> None:
    _, other = pair

    class SlowToRelease(PostgresCheckpointer):
        slow = False

        async def release_lease(self, session_id: str, owner: str) -> None:
            if self.slow:
                await trio.sleep(0.3)  # the store is busy a while
            await super().release_lease(session_id, owner)

    store = SlowToRelease(postgres_url, schema=pg_schema)
    with trio.fail_after(30):
        async with AppRunner(
            counter_app(limit=3, pause=0), checkpointer=store, durability="async"
        ) as runner:
            await runner.create_session("s", VersionedState())
            await runner.checkpoints.flush()
            with write_lock_held(postgres_url, pg_schema, "s"):  # the step's write waits
                await runner.run_step("s")  # acknowledged before it is stored
                with trio.move_on_after(0.3) as scope:
                    await runner.close_session("s")
                assert scope.cancelled_caught
                # Cut short before its writes were stored: the session is still open, and leased.
                assert runner.sessions() == ["s"]
                with pytest.raises(SessionLeased):
                    await other.acquire_lease("s", "next")
            store.slow = True
            with trio.move_on_after(0.1):
                # Cut short while giving up the lease: it is given up all the same.
                await runner.close_session("s")
            assert runner.sessions() == []
            await other.acquire_lease("s", "next")
            assert (await other.load_latest("s")).step == 1


def _no_start_app() -> Any:
    async def a(snapshot: Any, ctx: Any) -> None:
        return None

    def nowhere(snapshot: Any) -> list[str]:
        return []

    return (
        GraphBuilder()
        .add_node("a", a)
        .add_conditional_edges(START, nowhere, path_map=["a"])
        .add_edge("a", END)
        .compile()
    )


async def test_a_session_that_fails_to_open_gives_its_lease_up(
    postgres_url: str, pg_schema: str, pair: tuple[Any, Any]
) -> None:
    _, other = pair
    store = PostgresCheckpointer(postgres_url, schema=pg_schema)
    with trio.fail_after(30):
        async with AppRunner(_no_start_app(), checkpointer=store) as runner:
            with pytest.raises(NoStartNodes):
                await runner.create_session("s", VersionedState())
            assert store.held_leases() == {}
            await other.acquire_lease("s", "next")


@pytest.mark.parametrize("opening", ["create_session", "fork"])
async def test_a_session_opening_cancelled_before_its_first_step_is_stored_gives_its_lease_up(
    postgres_url: str, pg_schema: str, pair: tuple[Any, Any], opening: str
) -> None:
    _, other = pair
    store = PostgresCheckpointer(postgres_url, schema=pg_schema)
    with trio.fail_after(30):
        async with AppRunner(counter_app(pause=0), checkpointer=store) as runner:
            await runner.create_session("origin", VersionedState())
            with write_lock_held(postgres_url, pg_schema, "s"):  # the first write waits
                with trio.move_on_after(0.3) as scope:
                    if opening == "fork":
                        await runner.fork("origin", 0, "s")
                    else:
                        await runner.create_session("s", VersionedState())
                assert scope.cancelled_caught
            assert runner.sessions() == ["origin"]
            assert store.held_leases() == {"origin": runner.owner}
            await other.acquire_lease("s", "next")


async def test_a_fork_onto_a_session_being_opened_waits_and_leaves_it_its_lease(
    postgres_url: str, pg_schema: str, pair: tuple[Any, Any]
) -> None:
    _, other = pair
    store = PostgresCheckpointer(postgres_url, schema=pg_schema)
    waiting = (  # statements of this database waiting for a lock
        "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid) "
        "WHERE NOT granted AND datname = current_database()"
    )
    refused: list[SessionExists] = []

    async def fork() -> None:
        try:
            await runner.fork("origin", 0, "s")
        except SessionExists as exc:
            refused.append(exc)

    with trio.fail_after(30):
        async with AppRunner(counter_app(pause=0), checkpointer=store) as runner:
            await runner.create_session("origin", VersionedState())
            async with trio.open_nursery() as nursery:
                with lease_row_held(postgres_url, pg_schema) as blocker:
                    nursery.start_soon(runner.create_session, "s", VersionedState())
                    while query(postgres_url, waiting) == [(0,)]:
                        await trio.sleep(0.01)  # taking its lease waits on the row
                    # The fork's first call queues behind it: the fork goes on while the session
                    # is still being opened.
                    nursery.start_soon(fork)
                    await trio.testing.wait_all_tasks_blocked()
                    blocker.rollback()
            # The fork waited for the opening to end and found the session open (not waiting, it
            # opened the session a second time over the first), and left its lease alone.
            assert runner.sessions() == ["origin", "s"]
            assert [str(exc) for exc in refused] == [str(SessionExists("s"))]
            with pytest.raises(SessionLeased):
                await other.acquire_lease("s", "next")


@pytest.fixture
def counted(
    pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[PostgresCheckpointer, PostgresCheckpointer, list[str]]:
    """The pair, and the sessions whose latest step the first reads from the server from now on."""
    first, second = pair
    asked: list[str] = []
    read = first._load_sync

    def load(session_id: str, step: int | None) -> Checkpoint | None:
        asked.append(session_id)
        return read(session_id, step)

    monkeypatch.setattr(first, "_load_sync", load)
    return first, second, asked


async def test_taking_the_lease_of_a_session_not_stored_spares_its_load_a_round_trip(
    counted: tuple[PostgresCheckpointer, PostgresCheckpointer, list[str]],
) -> None:
    first, second, asked = counted
    with trio.fail_after(30):
        await second.save(checkpoint(0))  # "s" is stored, "n" is not
        await first.acquire_lease("n", "me")
        await first.acquire_lease("s", "me")
        assert await first.load_latest("n") is None
        assert await first.load_latest("s") == checkpoint(0)
        assert asked == ["s"]
        assert await first.load_latest("n") is None  # asked again: read again
        assert asked == ["s", "n"]


async def test_without_pipeline_mode_a_lease_is_taken_alone_and_the_load_reads_the_server(
    counted: tuple[PostgresCheckpointer, PostgresCheckpointer, list[str]],
) -> None:
    first, second, asked = counted
    first._pipelines = second._pipelines = False  # a libpq older than 14
    with trio.fail_after(30):
        await first.acquire_lease("n", "me")
        with pytest.raises(SessionLeased):
            await second.acquire_lease("n", "you")
        assert await first.load_latest("n") is None
        assert asked == ["n"]


async def test_a_session_found_not_stored_by_its_lease_is_read_again_once_anything_changed(
    counted: tuple[PostgresCheckpointer, PostgresCheckpointer, list[str]],
) -> None:
    first, second, asked = counted
    with trio.fail_after(30):
        # Stored by its leaseholder.
        await first.acquire_lease("s", "me")
        await first.save(checkpoint(0))
        assert await first.load_latest("s") == checkpoint(0)
        await first.delete_session("s")
        # Stored by another process once the lease was given up.
        await first.acquire_lease("s", "me")
        await first.release_lease("s", "me")
        await second.save(checkpoint(1))
        assert await first.load_latest("s") == checkpoint(1)
        # Taken again: found stored.
        await first.acquire_lease("s", "me")
        assert await first.load_latest("s") == checkpoint(1)
        assert asked == ["s", "s", "s"]


async def test_a_run_whose_connection_the_server_ends_fails_one_step_then_reconnects(
    postgres_url: str, pg_schema: str
) -> None:
    app = counter_app(limit=10, pause=0)
    store = PostgresCheckpointer(postgres_url, schema=pg_schema)
    with trio.fail_after(30):
        async with AppRunner(app, checkpointer=store) as runner:
            await runner.create_session("s", VersionedState())
            for _ in range(3):
                await runner.run_step("s")
            # The server ends the connection (a restart, a failover, an operator's kill).
            pid = store._require_conn().info.backend_pid
            assert query(postgres_url, "SELECT pg_terminate_backend(%s, 5000)", pid) == [(True,)]
            with pytest.raises(
                CheckpointBackendError, match=r"step 4 of session 's' was not stored"
            ):
                await runner.run_step("s")
            assert (await runner.get_session("s")).step == 3  # not applied
            # The next call reconnects, takes the lease again and runs step 4 again.
            await runner.run_step("s")
            assert store._require_conn().info.backend_pid != pid
            assert store.held_leases() == {"s": runner._owner}
            final = await runner.run_until_complete("s")
            history = await runner.get_state_history("s")
    assert final.extra["n"] == 10
    assert [info.step for info in history] == list(range(11))


async def test_heartbeats_extend_the_lease_row(postgres_url: str, pair: tuple[Any, Any]) -> None:
    first, _ = pair
    await first.acquire_lease("s", "me")
    sql = f'SELECT heartbeat_at, expires_at FROM "{first.schema}".session_leases WHERE session_id = %s'
    [(beat, expires)] = query(postgres_url, sql, "s")
    assert (expires - beat).total_seconds() == pytest.approx(first.lease_ttl)
    await first.renew_leases()
    [(beat2, expires2)] = query(postgres_url, sql, "s")
    assert beat2 > beat
    assert expires2 > expires
    await first.aclose()
    assert query(postgres_url, sql, "s") == []  # a clean close removes its rows
