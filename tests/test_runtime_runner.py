"""AppRunner lifecycle, node kinds, concurrency, many sessions, and the convenience entry points."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from apps import counter_app

import treadle
from treadle import (
    END,
    START,
    AppRunner,
    CheckpointBackendError,
    EventBus,
    Fresh,
    GraphBuilder,
    MockClock,
    NodePartial,
    NoStartNodes,
    Resumed,
    RunnerClosed,
    SessionNotFound,
    VersionedState,
    is_sentinel,
)
from treadle.runtime.checkpointers import SQLiteCheckpointer


async def test_sync_thread_and_class_nodes() -> None:
    seen_threads: dict[str, int] = {}

    def inline(snapshot, ctx):  # type: ignore[no-untyped-def]
        seen_threads["inline"] = threading.get_ident()
        ctx.emit_nowait("inline", "sync nodes can emit")
        return NodePartial(extra={"inline": True})

    def threaded(snapshot, ctx):  # type: ignore[no-untyped-def]
        seen_threads["threaded"] = threading.get_ident()
        ctx.emit_nowait("threaded", "so can thread nodes")
        return NodePartial(extra={"threaded": True})

    class Runner:
        async def run(self, snapshot, ctx):  # type: ignore[no-untyped-def]
            return NodePartial(extra={"class": ctx.node_id})

    app = (
        GraphBuilder()
        .add_node("inline", inline)
        .add_node("threaded", threaded, thread=True)
        .add_node("klass", Runner())
        .add_edge(START, "inline")
        .add_edge(START, "threaded")
        .add_edge(START, "klass")
        .add_edge("inline", END)
        .add_edge("threaded", END)
        .add_edge("klass", END)
        .compile()
    )
    result, events = await app.invoke_with_channel(VersionedState())
    assert dict(result.extra) == {"inline": True, "threaded": True, "class": "klass"}
    assert seen_threads["inline"] == threading.get_ident()
    assert seen_threads["threaded"] != threading.get_ident()
    async with events:
        scopes = [event.scope async for event in events]
    assert {"inline", "threaded"} <= set(scopes)
    assert scopes[-1] == treadle.STREAM_END_SCOPE


async def test_concurrency_limit_bounds_parallel_nodes(autojump_clock: trio.abc.Clock) -> None:
    running = 0
    peak = 0

    async def work(snapshot, ctx):  # type: ignore[no-untyped-def]
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(1)
        running -= 1

    builder = GraphBuilder()
    for i in range(7):
        builder.add_node(f"w{i}", work).add_edge(START, f"w{i}").add_edge(f"w{i}", END)
    app = builder.compile()
    with trio.fail_after(60):
        await app.invoke(VersionedState(), concurrency_limit=3)
    assert peak == 3
    assert trio.current_time() == 3.0  # ceil(7 / 3) waves of one second


async def test_many_sessions_run_concurrently(autojump_clock: trio.abc.Clock) -> None:
    app = counter_app(limit=5)
    with trio.fail_after(60):
        async with AppRunner(app) as runner:
            results: dict[str, int] = {}

            async def one(sid: str) -> None:
                await runner.create_session(sid, VersionedState())
                results[sid] = (await runner.run_until_complete(sid)).extra["n"]

            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(one, f"s{i}")
    assert results == {f"s{i}": 5 for i in range(20)}
    # 20 sessions of 5 steps of 0.1 s each, all at once: 0.5 s in total, not 10.
    assert trio.current_time() == pytest.approx(0.5)


async def test_leaving_the_runner_cancels_and_joins_every_actor(
    autojump_clock: trio.abc.Clock,
) -> None:
    started = trio.Event()

    async def forever(snapshot, ctx):  # type: ignore[no-untyped-def]
        started.set()
        await trio.sleep_forever()

    app = GraphBuilder().add_node("f", forever).add_edge(START, "f").add_edge("f", END).compile()
    tasks_before = _task_count()
    threads_before = threading.active_count()
    with trio.fail_after(10):
        async with AppRunner(app) as runner, trio.open_nursery() as nursery:
            await runner.create_session("s", VersionedState())

            async def run() -> None:
                with pytest.raises(treadle.ActorGone):
                    await runner.run_until_complete("s")

            nursery.start_soon(run)
            await started.wait()
            nursery.cancel_scope.cancel()
    assert _task_count() == tasks_before
    assert threading.active_count() == threads_before


async def test_leaving_the_runner_early_leaves_no_task_behind() -> None:
    app = counter_app()
    tasks_before = _task_count()
    async with AppRunner(app) as runner:
        await runner.create_session("s", VersionedState())
        await runner.run_step("s")
    assert _task_count() == tasks_before


async def test_a_failing_shutdown_still_joins_every_actor_and_closes_the_sinks(
    tmp_path: Path,
) -> None:
    # Real time: the store's thread does real I/O, which a virtual clock would jump over.
    class RefusesRelease(SQLiteCheckpointer):
        async def release_lease(self, session_id: str, owner: str) -> None:
            raise CheckpointBackendError("sqlite", "the lease cannot be released")

    class Recorder:
        name = "recorder"

        def __init__(self) -> None:
            self.events: list[Any] = []
            self.closed = False

        def handle(self, event: Any) -> None:
            self.events.append(event)

        def close(self) -> None:
            self.closed = True

    recorder = Recorder()
    store = RefusesRelease(tmp_path / "runs.db")
    finished: list[VersionedState] = []

    async def run_and_leave() -> None:
        async with AppRunner(
            counter_app(pause=0), checkpointer=store, event_bus=EventBus([recorder])
        ) as runner:
            await runner.create_session("s", VersionedState())
            finished.append(await runner.run_until_complete("s"))

    tasks_before = _task_count()
    with trio.fail_after(20):
        # The store's own error, not a group, raised on leaving the block once every actor ended.
        with pytest.raises(CheckpointBackendError, match="the lease cannot be released"):
            await run_and_leave()
    assert [dict(state.extra) for state in finished] == [{"n": 3}]
    assert _task_count() == tasks_before
    assert recorder.closed
    assert is_sentinel(recorder.events[-1])
    resumed = SQLiteCheckpointer(store.path)
    async with AppRunner(counter_app(pause=0), checkpointer=resumed) as runner:
        assert await runner.create_session("s", VersionedState()) == Resumed(3)


def _task_count() -> int:
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count = 0
    stack = [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def test_create_session_fresh_then_resumed_on_the_same_store() -> None:
    app = counter_app()
    store = treadle.InMemoryCheckpointer()
    async with AppRunner(app, checkpointer=store) as runner:
        assert await runner.create_session("s", VersionedState()) == Fresh()
        await runner.run_step("s")
    async with AppRunner(app, checkpointer=store) as runner:
        assert await runner.create_session("s", VersionedState(extra={"ignored": 1})) == Resumed(1)
        final = await runner.run_until_complete("s")
    assert dict(final.extra) == {"n": 3}


async def test_unknown_sessions_and_closed_runners_fail_clearly() -> None:
    app = counter_app()
    runner = AppRunner(app)
    with pytest.raises(RunnerClosed):
        await runner.create_session("s", VersionedState())
    async with runner:
        with pytest.raises(SessionNotFound, match="'nope'"):
            await runner.run_step("nope")
        with pytest.raises(ValueError, match="non-empty string"):
            await runner.create_session("", VersionedState())


async def test_no_start_nodes() -> None:
    def nowhere(snapshot):  # type: ignore[no-untyped-def]
        return []

    async def a(snapshot, ctx):  # type: ignore[no-untyped-def]
        return None

    app = (
        GraphBuilder()
        .add_node("a", a)
        .add_conditional_edges(START, nowhere, path_map=["a"])
        .add_edge("a", END)
        .compile()
    )
    async with AppRunner(app) as runner:
        with pytest.raises(NoStartNodes):
            await runner.create_session("s", VersionedState())


async def test_context_and_mock_clock() -> None:
    seen: list[tuple[str, int, str, int]] = []

    async def look(snapshot, ctx):  # type: ignore[no-untyped-def]
        seen.append((ctx.node_id, ctx.step, ctx.session_id, ctx.now_unix_ms()))

    app = GraphBuilder().add_node("look", look).add_edge(START, "look").add_edge("look", END)
    final = await app.compile().invoke(VersionedState(), session_id="abc", clock=MockClock(42))
    assert seen == [("look", 1, "abc", 42_000)]
    assert final.messages == ()


async def test_run_metadata_is_stable() -> None:
    app = counter_app()
    async with AppRunner(app, clock=MockClock(0), concurrency_limit=4) as one:
        first = one.run_metadata()
    async with AppRunner(app, clock=MockClock(5), concurrency_limit=4) as two:
        second = two.run_metadata()
    async with AppRunner(app, concurrency_limit=2) as three:
        third = three.run_metadata()
    assert first == second
    assert first.graph_hash == app.graph_metadata().graph_hash
    assert first.clock_mode == "mock"
    assert third.clock_mode == "system"
    assert first.checkpointer_backend == "memory"
    assert third.runtime_config_hash != first.runtime_config_hash


def test_blocking_run_entry_point() -> None:
    final = treadle.run(counter_app(limit=2), VersionedState())
    assert final.extra["n"] == 2


async def test_invoke_streaming_yields_events_then_one_stream_end() -> None:
    async def talk(snapshot, ctx):  # type: ignore[no-untyped-def]
        for i in range(3):
            await ctx.emit("talk", f"line {i}")

    app = GraphBuilder().add_node("t", talk).add_edge(START, "t").add_edge("t", END).compile()
    async with app.invoke_streaming(VersionedState()) as run:
        events = [event async for event in run.events]
        final = await run.result()
    assert [e.message for e in events[:3]] == ["line 0", "line 1", "line 2"]
    assert [e.scope for e in events].count(treadle.STREAM_END_SCOPE) == 1
    assert events[-1].scope == treadle.STREAM_END_SCOPE
    assert final.messages == ()


async def test_completed_sessions_hand_their_node_actors_to_the_next() -> None:
    app = counter_app(limit=2)
    async with AppRunner(app) as runner:
        for i in range(5):
            await runner.create_session(f"s{i}", VersionedState())
            final = await runner.run_until_complete(f"s{i}")
            assert final.extra["n"] == 2
        stats = runner.statistics()
    assert stats.sessions == 5
    assert stats.node_actors_started == 1
    assert stats.idle_node_actors == 1


async def test_concurrent_sessions_get_their_own_node_actors(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = counter_app(limit=2)
    with trio.fail_after(10):
        async with AppRunner(app) as runner:
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    await runner.create_session(f"s{i}", VersionedState())
                    nursery.start_soon(runner.run_until_complete, f"s{i}")
            stats = runner.statistics()
    assert stats.node_actors_started == 3
    assert trio.current_time() == pytest.approx(0.2)


async def test_a_deadline_around_the_whole_runner_cancels_a_run_mid_step(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def slow(snapshot, ctx):  # type: ignore[no-untyped-def]
        await trio.sleep(100)

    builder = GraphBuilder()
    for name in ("a", "b", "c"):
        builder.add_node(name, slow).add_edge(START, name).add_edge(name, END)
    app = builder.compile()
    tasks_before = _task_count()
    with trio.fail_after(50), trio.move_on_after(1) as deadline:
        async with AppRunner(app) as runner:
            await runner.create_session("s", VersionedState())
            await runner.run_until_complete("s")
    assert deadline.cancelled_caught
    assert trio.current_time() == 1.0
    assert _task_count() == tasks_before
