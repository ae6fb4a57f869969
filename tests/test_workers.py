"""Workers on the PostgreSQL work queue, in one process: enqueue, claim order, outcomes (completed,
paused, failed after ``max_attempts``), wake-up by ``LISTEN/NOTIFY`` instead of polling, recovery of
a dead worker's sessions (connection gone, or heartbeat stale), draining, and the events.
The same with real worker processes, SIGKILL, SIGTERM and a server restart:
``test_workers_processes.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import trio
import worker_apps
from test_checkpoint_postgres import query
from worker_fleet import reference

from treadle import (
    END,
    START,
    AppRunner,
    CheckpointerError,
    EventBus,
    GraphBuilder,
    MemorySink,
    NodePartial,
    StepOptions,
    VersionedState,
)
from treadle.runtime.workers import queue
from treadle.runtime.workers.worker import (
    WORKER_CLAIMED_SCOPE,
    WORKER_FAILOVER_SCOPE,
    WORKER_RELEASED_SCOPE,
    Worker,
)

pytest_plugins = ["pg_fixtures"]
pytestmark = pytest.mark.postgres


@pytest.fixture
def url(postgres_url: str, pg_schema: str) -> str:
    return f"{postgres_url}?schema={pg_schema}"


def rows(postgres_url: str, schema: str) -> dict[str, tuple[Any, ...]]:
    found = query(
        postgres_url,
        f'SELECT session_id, status, owner, attempts, last_error FROM "{schema}".session_queue',
    )
    return {row[0]: row[1:] for row in found}


async def enqueue_all(app: Any, url: str, count: int, **options: Any) -> None:
    async with AppRunner(app, checkpointer=url) as runner:
        for i in range(count):
            assert await runner.enqueue(f"s{i}", worker_apps.initial(i), **options)


async def test_enqueue_is_idempotent_per_session_and_needs_postgres(
    url: str, postgres_url: str, pg_schema: str
) -> None:
    app = worker_apps.build(0)
    with trio.fail_after(30):
        async with AppRunner(app, checkpointer=url) as runner:
            assert await runner.enqueue("s", worker_apps.initial(1), priority=3)
            assert not await runner.enqueue("s", worker_apps.initial(2), priority=9)
        assert rows(postgres_url, pg_schema) == {"s": ("pending", None, 0, None)}
        stored = query(
            postgres_url,
            f'SELECT app, priority, input::text FROM "{pg_schema}".session_queue',
        )
        assert stored[0][:2] == (app.graph_metadata().graph_hash, 3)
        assert VersionedState.from_json_value(json.loads(stored[0][2])) == (worker_apps.initial(1))
        async with AppRunner(app) as memory:
            with pytest.raises(CheckpointerError, match=r"enqueue needs a PostgreSQL"):
                await memory.enqueue("s")


async def test_a_worker_runs_every_queued_session_to_the_single_process_result(
    url: str, postgres_url: str, pg_schema: str
) -> None:
    app = worker_apps.build(2)
    expected = await reference(12)
    with trio.fail_after(60):
        await enqueue_all(app, url, 12)
        async with Worker(app, checkpointer=url, concurrency=4, poll_interval=0.5) as worker:
            await worker.run_until_idle()
            stats = worker.statistics()
        assert (stats.claimed, stats.completed, stats.running) == (12, 12, 0)
        assert rows(postgres_url, pg_schema) == dict.fromkeys(
            expected, ("completed", worker.owner, 0, None)
        )
        async with AppRunner(app, checkpointer=url) as runner:
            for sid, state in expected.items():
                history = await runner.get_state_history(sid)
                assert [info.step for info in history] == list(range(worker_apps.STEPS + 1))
                assert (await runner.load_checkpoint(sid, worker_apps.STEPS)).state == state
        # The leases were given back: nobody holds any.
        assert query(postgres_url, f'SELECT count(*) FROM "{pg_schema}".session_leases') == [(0,)]


async def test_a_finished_session_and_the_next_claim_are_one_transaction(
    url: str, postgres_url: str, pg_schema: str
) -> None:
    app = worker_apps.build(0)
    with trio.fail_after(60):
        await enqueue_all(app, url, 3)
        # Every status change of a queue row, with the transaction that made it.
        query(
            postgres_url,
            f'CREATE TABLE "{pg_schema}".queue_writes (session_id TEXT, status TEXT, tx BIGINT); '
            f'CREATE FUNCTION "{pg_schema}".audit_queue() RETURNS trigger LANGUAGE plpgsql AS $$ '
            f'BEGIN INSERT INTO "{pg_schema}".queue_writes VALUES '
            "(NEW.session_id, NEW.status, txid_current()); RETURN NEW; END $$; "
            f'CREATE TRIGGER audit_queue AFTER INSERT OR UPDATE ON "{pg_schema}".session_queue '
            f'FOR EACH ROW EXECUTE FUNCTION "{pg_schema}".audit_queue()',
        )
        async with Worker(app, checkpointer=url, concurrency=1, poll_interval=0.5) as worker:
            await worker.run_until_idle()
            assert worker.statistics().completed == 3
    tx = {
        (sid, status): tx
        for sid, status, tx in query(
            postgres_url, f'SELECT session_id, status, tx FROM "{pg_schema}".queue_writes'
        )
    }
    # The slot s0 freed took s1 in the statement that recorded s0, and s1's took s2.
    assert tx["s1", "running"] == tx["s0", "completed"]
    assert tx["s2", "running"] == tx["s1", "completed"]
    assert tx["s0", "running"] != tx["s0", "completed"]


def liveness_holders(postgres_url: str, schema: str, owner: str) -> list[tuple[Any, ...]]:
    """The backends (pid, application_name) holding ``owner``'s liveness lock in ``schema``."""
    key = "hashtextextended('treadle worker ' || %s || ' ' || %s, 0)"
    return query(
        postgres_url,
        "SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid), "
        f"LATERAL (SELECT {key} AS k) key WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.objsubid = 1 AND l.classid::bigint = (key.k >> 32) & 4294967295 "
        "AND l.objid::bigint = key.k & 4294967295",
        schema,
        owner,
    )


async def test_a_worker_holds_its_liveness_lock_again_after_losing_its_connection(
    url: str, postgres_url: str, pg_schema: str
) -> None:
    app = worker_apps.build(0)
    with trio.fail_after(60):
        async with Worker(app, checkpointer=url, concurrency=2, poll_interval=0.5) as worker:
            (before,) = liveness_holders(postgres_url, pg_schema, worker.owner)
            assert before[1] == f"treadle worker {worker.owner}"[:63]
            # The server ends the worker's connection (a restart, an operator): the lock goes too.
            query(postgres_url, "SELECT pg_terminate_backend(%s)", before[0])
            while liveness_holders(postgres_url, pg_schema, worker.owner):
                await trio.sleep(0.01)
            await enqueue_all(app, url, 3)
            await worker.run_until_idle()
            assert worker.statistics().completed == 3
            # Its next claim, on a new connection, took the lock again: it is not presumed dead.
            (after,) = liveness_holders(postgres_url, pg_schema, worker.owner)
            assert after[0] != before[0]
            assert after[1] == before[1]


async def test_claims_go_by_priority_then_age(url: str) -> None:
    app = worker_apps.build(0)
    sink = MemorySink()
    with trio.fail_after(60):
        async with AppRunner(app, checkpointer=url) as runner:
            for sid, priority in [("old", 0), ("low", -1), ("high", 5), ("new", 0), ("top", 9)]:
                await runner.enqueue(sid, worker_apps.initial(1), priority=priority)
        async with Worker(
            app, checkpointer=url, concurrency=1, poll_interval=0.5, event_bus=EventBus([sink])
        ) as worker:
            await worker.run_until_idle()
    claimed = [e.session_id for e in sink.snapshot() if e.scope == WORKER_CLAIMED_SCOPE]
    assert claimed == ["top", "high", "old", "new", "low"]
    released = [e for e in sink.snapshot() if e.scope == WORKER_RELEASED_SCOPE]
    assert {e.metadata["outcome"] for e in released} == {"completed"}


def flaky_app(failures: dict[str, int]) -> Any:
    """One node that fails while ``failures[session]`` is positive (counting down)."""

    async def work(snapshot: Any, ctx: Any) -> NodePartial:
        if failures.get(ctx.session_id, 0) > 0:
            failures[ctx.session_id] -= 1
            raise RuntimeError(f"boom in {ctx.session_id}")
        return NodePartial(extra={"done": True})

    return (
        GraphBuilder()
        .add_node("work", work)
        .add_edge(START, "work")
        .add_edge("work", END)
        .compile()
    )


async def test_a_failed_run_goes_back_to_the_queue_until_max_attempts(
    url: str, postgres_url: str, pg_schema: str
) -> None:
    failures = {"twice": 2, "always": 99}
    app = flaky_app(failures)
    with trio.fail_after(60):
        async with AppRunner(app, checkpointer=url) as runner:
            for sid in ("twice", "always"):
                await runner.enqueue(sid, VersionedState())
        async with Worker(
            app, checkpointer=url, max_attempts=3, poll_interval=0.5, concurrency=2
        ) as worker:
            await worker.run_until_idle()
            stats = worker.statistics()
    found = rows(postgres_url, pg_schema)
    assert found["twice"][:3] == ("completed", worker.owner, 2)
    assert found["always"][0::2] == ("failed", 3)
    assert (
        found["always"][3]
        == "NodeRunError: node 'work' failed at step 3: RuntimeError: boom in always"
    )
    assert (stats.completed, stats.failed) == (1, 2 + 3)


async def test_a_paused_session_is_recorded_and_continues_when_enqueued_again(
    url: str, postgres_url: str, pg_schema: str
) -> None:
    app = worker_apps.build(0)
    expected = await reference(1)
    with trio.fail_after(60):
        await enqueue_all(app, url, 1)
        options = StepOptions(interrupt_before=["b"])
        async with Worker(app, checkpointer=url, step_options=options, poll_interval=0.5) as w:
            await w.run_until_idle()
            assert w.statistics().paused == 1
        assert rows(postgres_url, pg_schema)["s0"][0] == "paused"
        async with AppRunner(app, checkpointer=url) as runner:
            assert (await runner.get_session("s0")).step == 1
            assert await runner.enqueue("s0")  # paused: pending again
            await runner.close_session("s0")
        async with Worker(app, checkpointer=url, poll_interval=0.5) as worker:
            await worker.run_until_idle()
            assert worker.statistics().resumed == 1
        assert rows(postgres_url, pg_schema)["s0"][0] == "completed"
        async with AppRunner(app, checkpointer=url) as runner:
            assert (await runner.get_session("s0")).state == expected["s0"]


async def test_an_idle_worker_wakes_on_notify_not_by_polling(url: str) -> None:
    app = worker_apps.build(0)
    with trio.fail_after(30):
        async with Worker(app, checkpointer=url, poll_interval=600) as worker:
            claims = 0
            real_claim = worker._claim

            async def counted(limit: int) -> list[queue.Claim]:
                nonlocal claims
                claims += 1
                return await real_claim(limit)

            worker._claim = counted  # type: ignore[method-assign]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.run_forever)
                await trio.sleep(1.0)
                idle_claims = claims
                start = trio.current_time()
                await enqueue_all(app, url, 1)
                while worker.statistics().completed < 1:
                    await trio.sleep(0.01)
                latency = trio.current_time() - start
                worker.drain()
        # One look when it started (and one when the listener connected), none while idle.
        assert idle_claims <= 2
        assert worker._listener.notifications >= 1
        assert latency < 10  # far below the 600 s poll: the notification woke it


def take_liveness(postgres_url: str, schema: str, owner: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(f"{postgres_url}", autocommit=True)
    conn.execute(f'SET search_path TO "{schema}"'.encode())
    queue.take_liveness(conn, owner)
    return conn


@pytest.fixture
def ghost(postgres_url: str, pg_schema: str) -> Iterator[Any]:
    """Makes running rows look owned by another worker, alive (its liveness lock is held on a
    connection of the test) or dead."""
    conns: list[psycopg.Connection[Any]] = []

    def make(
        sid: str, owner: str, *, alive: bool, heartbeat_age: float = 0, attempts: int = 0
    ) -> psycopg.Connection[Any] | None:
        conn = None
        if alive:
            conn = take_liveness(postgres_url, pg_schema, owner)
            conns.append(conn)
        query(
            postgres_url,
            f"UPDATE \"{pg_schema}\".session_queue SET status = 'running', owner = %s, "
            "attempts = %s, heartbeat_at = clock_timestamp() - make_interval(secs => %s) "
            "WHERE session_id = %s",
            owner,
            attempts,
            heartbeat_age,
            sid,
        )
        return conn

    yield make
    for conn in conns:
        conn.close()


async def test_sessions_of_dead_workers_are_recovered_and_resumed(
    url: str, postgres_url: str, pg_schema: str, ghost: Any
) -> None:
    app = worker_apps.build(0)
    expected = await reference(4)
    sink = MemorySink()
    with trio.fail_after(60):
        await enqueue_all(app, url, 4)
        # s0 was half run by a worker that then died: two steps are stored.
        async with AppRunner(app, checkpointer=url) as runner:
            await runner.create_session("s0", worker_apps.initial(0))
            await runner.run_step("s0")
            await runner.run_step("s0")
        ghost("s0", "gone-connection", alive=False)
        hung = ghost("s1", "stale-heartbeat", alive=True, heartbeat_age=60)
        ghost("s2", "alive-and-well", alive=True)
        ghost("s3", "out-of-attempts", alive=False, attempts=2)
        async with (
            Worker(
                app,
                checkpointer=url,
                lease_ttl=30,
                max_attempts=3,
                poll_interval=0.2,
                event_bus=EventBus([sink]),
            ) as worker,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(worker.run_forever)
            while worker.statistics().completed < 2:
                await trio.sleep(0.05)
            stats = worker.statistics()
            worker.drain()
        found = rows(postgres_url, pg_schema)
    assert found["s0"][:3] == ("completed", worker.owner, 1)
    assert found["s1"][:3] == ("completed", worker.owner, 1)
    assert found["s2"][:2] == ("running", "alive-and-well")  # untouched
    assert found["s3"] == ("failed", None, 3, "worker out-of-attempts stopped while running it")
    assert (stats.recovered, stats.resumed) == (3, 1)
    # The hung worker's connection (which would hold its session leases) was ended.
    with pytest.raises(psycopg.OperationalError):
        hung.execute("SELECT 1")
    failovers = {
        e.session_id: e.metadata for e in sink.snapshot() if e.scope == WORKER_FAILOVER_SCOPE
    }
    assert failovers["s0"]["dead_owner"] == "gone-connection"
    assert failovers["s3"]["status"] == "failed"
    async with AppRunner(app, checkpointer=url) as runner:
        for sid in ("s0", "s1"):
            assert (await runner.get_session(sid)).state == expected[sid]


async def test_drain_hands_running_sessions_back_after_their_step(
    url: str, postgres_url: str, pg_schema: str
) -> None:
    app = worker_apps.build(20)
    expected = await reference(6)
    with trio.fail_after(60):
        await enqueue_all(app, url, 6)
        async with Worker(app, checkpointer=url, concurrency=3, poll_interval=0.5) as first:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(first.run_forever)
                while first.statistics().running < 3:
                    await trio.sleep(0.01)
                first.drain()
            stats = first.statistics()
        assert (stats.claimed, stats.released, stats.running) == (3, 3, 0)
        found = rows(postgres_url, pg_schema)
        assert sorted(status for status, *_ in found.values()) == ["pending"] * 6
        assert query(postgres_url, f'SELECT count(*) FROM "{pg_schema}".session_leases') == [(0,)]
        async with Worker(app, checkpointer=url, concurrency=6, poll_interval=0.5) as second:
            await second.run_until_idle()
            assert second.statistics().resumed == 3
        async with AppRunner(app, checkpointer=url) as runner:
            for sid, state in expected.items():
                assert (await runner.get_session(sid)).state == state
