"""Storage grows with what a run writes, not with steps x state size: 1,000 steps each appending one
100-byte message stay under 2 MB in SQLite and in PostgreSQL, a resumed session does not store its
messages again, and rebuilding a step replays a bounded number of deltas."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from treadle import END, START, AppRunner, GraphBuilder, Message, NodePartial, VersionedState
from treadle.runtime.checkpointers import PostgresCheckpointer, SQLiteCheckpointer
from treadle.runtime.checkpointers.checkpoint import Checkpoint
from treadle.runtime.checkpointers.codec import DELTA, SNAPSHOT, StepCodec, chain_to

pytest_plugins = ["pg_fixtures"]

STEPS = 1000
TWO_MB = 2 * 1024 * 1024


def chatty_app(steps: int) -> Any:
    """One node that appends a 100-byte message per step, looping ``steps`` times."""

    async def talk(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial(messages=[Message.assistant(f"{ctx.step:06d}" + "x" * 94)])

    def more(snapshot: Any) -> str:
        return END if len(snapshot.messages) > steps else "talk"

    return (
        GraphBuilder()
        .add_node("talk", talk)
        .add_edge(START, "talk")
        .add_conditional_edges("talk", more, path_map=["talk", END])
        .compile()
    )


async def run_chatty(checkpointer: Any) -> VersionedState:
    async with AppRunner(chatty_app(STEPS), checkpointer=checkpointer) as runner:
        await runner.create_session("s", VersionedState.with_user_message("go"))
        final = await runner.run_until_complete("s")
        history = await runner.get_state_history("s")
    assert len(final.messages) == STEPS + 1
    assert [i.step for i in history] == list(range(STEPS + 1))
    return final


def file_bytes(path: Path) -> int:
    return sum(
        os.path.getsize(p) for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


async def test_sqlite_file_stays_under_2_mb_for_1000_growing_steps(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    path = tmp_path / "growth.db"
    with trio.fail_after(120):
        final = await run_chatty(f"sqlite:///{path}")
    size = file_bytes(path)
    print(f"\nSQLite, {STEPS} steps x 100-byte message: {size:,} bytes")
    assert size < TWO_MB
    store = SQLiteCheckpointer(path)
    await store.open(nursery)
    latest = await store.load_latest("s")
    assert latest is not None
    assert latest.state == final
    assert (await store.row_counts())["messages"] == STEPS + 1  # each message stored once
    await store.aclose()


@pytest.mark.postgres
async def test_postgres_rows_stay_under_2_mb_for_1000_growing_steps(
    postgres_url: str, pg_schema: str, nursery: trio.Nursery
) -> None:
    store = PostgresCheckpointer(postgres_url, schema=pg_schema)
    with trio.fail_after(180):
        final = await run_chatty(store)
    await store.open(nursery)
    sizes = await store.storage()
    row_bytes = sum(table["row_bytes"] for table in sizes.values())
    relation_bytes = sum(table["relation_bytes"] for table in sizes.values())
    print(f"\nPostgreSQL rows: {row_bytes:,} bytes of data, {relation_bytes:,} bytes on disk")
    assert row_bytes < TWO_MB
    assert sizes["messages"]["rows"] == STEPS + 1
    latest = await store.load_latest("s")
    assert latest is not None
    assert latest.state == final
    await store.aclose()


def record(step: int, state: VersionedState) -> Checkpoint:
    return Checkpoint(
        session_id="s",
        step=step,
        state=state,
        frontier=("a",),
        versions_seen={"a": (step, step)},
        join_state={},
        concurrency_limit=1,
        created_at=step,
    )


def grow(state: VersionedState, step: int) -> VersionedState:
    return VersionedState(
        messages=[*state.messages, Message.user(f"message {step}")],
        extra={**state.extra, f"k{step % 50}": step, "blob": "y" * 2000},
        messages_version=state.messages_version + 1,
        extra_version=state.extra_version + 1,
    )


async def test_a_resumed_session_does_not_store_its_messages_again(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    state = VersionedState()
    store = SQLiteCheckpointer(tmp_path / "resume.db")
    await store.open(nursery)
    for step in range(10):
        state = grow(state, step)
        await store.save(record(step, state))
    await store.aclose()

    store = SQLiteCheckpointer(tmp_path / "resume.db")  # a new process: nothing cached
    await store.open(nursery)
    latest = await store.load_latest("s")
    assert latest is not None
    state = latest.state
    for step in range(10, 15):
        state = grow(state, step)
        await store.save(record(step, state))
    assert (await store.row_counts())["messages"] == 15
    assert (await store.load("s", 14)).state == state
    await store.aclose()


async def test_rebuilding_any_step_replays_a_bounded_chain(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    path = tmp_path / "chain.db"
    store = SQLiteCheckpointer(path, max_chain=16)
    await store.open(nursery)
    state = VersionedState()
    for step in range(3000):
        state = grow(state, step)
        await store.save(record(step, state))
    started = time.perf_counter()
    latest = await store.load_latest("s")
    elapsed = time.perf_counter() - started
    assert latest is not None
    assert latest.state == state
    print(f"\nload_latest after 3000 steps: {elapsed * 1000:.1f} ms")
    assert elapsed < 1.0  # generous: the machine is shared; typical is a few ms

    def longest_chain() -> tuple[int, int]:
        from treadle.runtime.checkpointers.sqlite import _SQLiteTx

        assert store._db is not None
        tx = _SQLiteTx(store._db)
        rows = tx.rows("s", 0, 10**9)
        deltas = sum(row.kind == DELTA for row in rows.values())
        return max(len(chain_to(tx, row)) for row in rows.values()), deltas

    longest, deltas = await store._run(longest_chain)  # in the connection thread
    assert deltas > 2000  # the big blob makes deltas worthwhile: most steps are deltas
    assert longest <= 17  # a snapshot plus at most max_chain deltas
    await store.aclose()


@pytest.mark.parametrize(("max_chain", "snapshots"), [(None, 1), (64, 3)])
async def test_a_big_state_is_snapshotted_once_per_kib_of_deltas_by_default(
    tmp_path: Path, nursery: trio.Nursery, max_chain: int | None, snapshots: int
) -> None:
    """Without ``max_chain`` a 200 KiB state allows a chain of about 200 deltas, so it is not
    written whole every 64 steps; an explicit ``max_chain`` still bounds the chain."""
    store = SQLiteCheckpointer(tmp_path / "big.db", max_chain=max_chain)
    await store.open(nursery)
    state = VersionedState(extra={f"big{i}": "z" * 1000 for i in range(200)})
    for step in range(150):
        state = VersionedState(
            extra={**state.extra, "n": step}, extra_version=state.extra_version + 1
        )
        await store.save(record(step, state))

    def kinds() -> int:
        from treadle.runtime.checkpointers.sqlite import _SQLiteTx

        assert store._db is not None
        rows = _SQLiteTx(store._db).rows("s", 0, 10**9)
        return sum(row.kind != DELTA for row in rows.values())

    assert await store._run(kinds) == snapshots
    latest = await store.load_latest("s")
    assert latest is not None
    assert latest.state == state
    await store.aclose()


WIDTH = 2000
LOOPS = 50
# dispatch -> WIDTH workers -> join -> tick, and tick loops LOOPS times (the benchmark's graph).
sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))
from bench_seen import build as wide_then_loop  # noqa: E402


async def test_a_step_stores_the_versions_seen_of_the_nodes_it_ran_not_of_every_node(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """``versions_seen`` grows with every node that ever ran; a delta stores the entries of the
    nodes its step ran, so the steps after a wide fan-out stay small, and every step still reads
    back with the whole map."""
    path = tmp_path / "wide.db"
    with trio.fail_after(60):
        async with AppRunner(
            wide_then_loop(WIDTH, LOOPS, []), checkpointer=f"sqlite:///{path}"
        ) as runner:
            await runner.create_session("s", VersionedState())
            final = await runner.run_until_complete("s")
    assert final.extra["ticks"] == LOOPS
    store = SQLiteCheckpointer(path)  # a new process: nothing cached
    await store.open(nursery)

    def loop_rows() -> list[Any]:
        from treadle.runtime.checkpointers.sqlite import _SQLiteTx

        assert store._db is not None
        rows = _SQLiteTx(store._db).rows("s", 0, 10**9)
        return [row for step, row in sorted(rows.items()) if step > 4]

    rows = await store._run(loop_rows)
    assert len(rows) == LOOPS - 1
    # The whole map of WIDTH + 3 nodes is about 27 KB of JSON; a step that ran one node stores one.
    assert sum(row.kind == DELTA for row in rows) >= LOOPS - 2
    assert max(len(row.body) for row in rows if row.kind == DELTA) < 1_000
    seen_everywhere = {"dispatch", "join", "tick", *(f"w{i}" for i in range(WIDTH))}
    first = await store.load("s", 3)  # the join's step: tick has not run yet
    assert set(first.versions_seen) == seen_everywhere - {"tick"}
    messages, extra = (await store.load("s", 4)).versions_seen["tick"]
    for step in (5, 20, LOOPS + 3):
        cp = await store.load("s", step)
        assert set(cp.versions_seen) == seen_everywhere
        assert cp.versions_seen["tick"] == (messages, extra + step - 4)  # each tick sets extra
        assert cp.versions_seen["w7"] == first.versions_seen["w7"]
    await store.aclose()


def test_a_chain_of_either_format_rebuilds_the_whole_versions_seen() -> None:
    """A delta of format 2 holds the entries its step set; one of format 1 (or one whose map was
    not made from the one before) holds the whole map. A chain mixing them folds to the map of its
    last step."""
    import json

    from treadle.runtime.checkpointers.codec import BrokenHistory, dumps
    from treadle.runtime.graph.persistent import FrozenMap

    codec = StepCodec(inline_messages=True)
    state = VersionedState()
    seen0 = FrozenMap({f"n{i}": (0, 0) for i in range(100)})
    seen1 = seen0.updated({"n1": (1, 1), "new": (1, 1)})
    seen2 = seen1.updated({"n2": (2, 2)})

    def cp(step: int, seen: Any) -> Checkpoint:
        return attrs.evolve(record(step, state), versions_seen=seen)

    rows, tip = [], None
    for step, seen in enumerate((seen0, seen1, seen2, dict(seen2))):
        encoded = codec.encode(cp(step, seen), tip, log_end=0, token=f"t{step}")
        rows.append(encoded.row)
        tip = encoded.tip
    bodies = [json.loads(row.body) for row in rows]
    assert [row.kind for row in rows] == [SNAPSHOT, DELTA, DELTA, DELTA]
    assert bodies[1]["versions_seen_set"] == {"n1": [1, 1], "new": [1, 1]}
    assert bodies[2]["versions_seen_set"] == {"n2": [2, 2]}
    assert "versions_seen" not in bodies[1]
    assert "versions_seen" not in bodies[2]
    assert len(bodies[3]["versions_seen"]) == 101  # a plain dict: not known what changed
    for last, expected in enumerate((seen0, seen1, seen2, seen2)):
        assert codec.decode(rows[: last + 1], None).versions_seen == dict(expected)

    # The delta of step 1 as format 1 wrote it: the whole map, in a chain before a format-2 delta.
    old = {**bodies[1], "format": 1, "versions_seen": {k: list(v) for k, v in seen1.items()}}
    del old["versions_seen_set"]
    chain = [rows[0], attrs.evolve(rows[1], body=dumps(old)), rows[2]]
    rebuilt = codec.decode(chain, None).versions_seen
    assert rebuilt == dict(seen2)
    assert all(type(pair) is tuple for pair in rebuilt.values())
    assert json.loads(codec.materialize(chain).body)["versions_seen"] == {
        k: list(v) for k, v in seen2.items()
    }
    # A stored pair that is not two numbers is a broken history, not a crash.
    broken = {**bodies[0], "versions_seen": {"n0": []}}
    with pytest.raises(BrokenHistory, match="malformed"):
        codec.decode([attrs.evolve(rows[0], body=dumps(broken))], None)


async def test_the_first_step_after_a_resume_stores_only_what_it_set(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A resumed session's versions_seen is the map the store read back, so its next step's delta
    holds the entries that step set, as before the resume (a worker resumes sessions often)."""
    import json

    from treadle.runtime.checkpointers.checkpoint import frozen_versions_seen
    from treadle.runtime.graph.persistent import FrozenMap

    seen = FrozenMap({f"n{i}": (0, 0) for i in range(500)})
    store = SQLiteCheckpointer(tmp_path / "resume.db")
    await store.open(nursery)
    for step in range(3):
        seen = seen.assigned({"n0": (step, step)})
        await store.save(attrs.evolve(record(step, VersionedState()), versions_seen=seen))
    await store.aclose()

    store = SQLiteCheckpointer(tmp_path / "resume.db")  # a new process: nothing cached
    await store.open(nursery)
    latest = await store.load_latest("s")
    assert latest is not None
    resumed = frozen_versions_seen(latest.versions_seen)  # as the scheduler takes it up
    await store.save(
        attrs.evolve(record(3, VersionedState()), versions_seen=resumed.assigned({"n1": (3, 3)}))
    )

    def body_of_step_3() -> dict[str, Any]:
        from treadle.runtime.checkpointers.sqlite import _SQLiteTx

        assert store._db is not None
        row = _SQLiteTx(store._db).rows("s", 3, 3)[3]
        assert row.kind == DELTA
        return dict(json.loads(row.body))

    body = await store._run(body_of_step_3)
    assert body["versions_seen_set"] == {"n1": [3, 3]}
    assert "versions_seen" not in body
    assert (await store.load("s", 3)).versions_seen == {**seen, "n1": (3, 3)}
    await store.aclose()
