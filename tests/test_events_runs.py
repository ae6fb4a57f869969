"""Events through real runs: failing sinks, never-reading subscribers, streaming, canonical order."""

from __future__ import annotations

import io
from typing import Any

import attrs
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, register_random, settings
from hypothesis import strategies as st

from treadle import (
    END,
    START,
    STREAM_END_SCOPE,
    App,
    AppRunner,
    Event,
    EventBus,
    GraphBuilder,
    JsonLinesSink,
    MemorySink,
    NodeEvent,
    NodePartial,
    VersionedState,
    canonical_order,
)
from treadle.actors.perturb import perturbation_from_plan

# trio shuffles each batch of runnable tasks with this Random; registering it lets Hypothesis seed it
# per example (with st.random_module()), so each example explores its own, reproducible schedule.
register_random(trio._core._run._r)


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task alive in this trio run."""
    found: set[trio.lowlevel.Task] = set()
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None or task in found:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return found


def fanout_app(nodes: int, events_each: int, *, sleep: float = 0.0) -> App:
    """START -> n0..n{nodes-1} -> END; each node emits ``events_each`` events, sleeping between."""

    async def emitter(snapshot: Any, ctx: Any) -> NodePartial:
        for i in range(events_each):
            await ctx.emit("work", f"{ctx.node_id}.{i}", i=i)
            if sleep:
                await trio.sleep(sleep)
        return NodePartial(extra={ctx.node_id: events_each})

    builder = GraphBuilder()
    for index in range(nodes):
        builder.add_node(f"n{index}", emitter)
        builder.add_edge(START, f"n{index}")
        builder.add_edge(f"n{index}", END)
    return builder.compile()


class FlakySink:
    """Raises on every second event it is handed."""

    name = "flaky"
    inline = True  # on the Trio thread: these runs use the autojump clock

    def __init__(self) -> None:
        self.seen: list[Event] = []

    def handle(self, event: Event) -> None:
        self.seen.append(event)
        if len(self.seen) % 2 == 0:
            raise RuntimeError("every second event fails")


async def test_a_failing_sink_beside_memory_and_jsonl_during_a_10k_event_run(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(120):
        app = fanout_app(100, 100)
        baseline = await app.invoke(VersionedState(), session_id="s")
        memory, flaky, out = MemorySink(), FlakySink(), io.StringIO()
        bus = EventBus([memory, flaky, JsonLinesSink(out, inline=True)], clock=trio.current_time)
        final = await app.invoke(VersionedState(), session_id="s", event_bus=bus)
        assert final == baseline  # the run's result is unchanged

        events = memory.snapshot()
        assert sum(isinstance(e, NodeEvent) for e in events) == 10_000
        assert [e.seq for e in events] == list(range(len(events)))  # every event, in order
        assert events[-1].scope == STREAM_END_SCOPE
        for i in range(100):  # each node's own events in emission order
            mine = [e.message for e in events if isinstance(e, NodeEvent) and e.node_id == f"n{i}"]
            assert mine == [f"n{i}.{k}" for k in range(100)]
        assert [Event.from_json(line) for line in out.getvalue().splitlines()] == events

        health = {h.sink: h for h in bus.sink_health()}
        # Crashes at 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s; the sixth within 10 s exceeds 5 restarts.
        assert (health["flaky"].state, health["flaky"].error_count) == ("failed", 6)
        assert health["flaky"].restarts == 5
        assert health["flaky"].last_error == "RuntimeError: every second event fails"
        assert health["flaky"].last_error_at == 0.1 + 0.2 + 0.4 + 0.8 + 1.6
        assert len(flaky.seen) + health["flaky"].dropped == len(events)
        for name in ("memory", "jsonl"):
            assert (health[name].state, health[name].error_count, health[name].dropped) == (
                "stopped",
                0,
                0,
            )


async def test_a_never_reading_subscriber_costs_no_virtual_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(60):
        app = fanout_app(4, 50, sleep=0.5)

        async def timed_run(with_stuck_reader: bool) -> tuple[float, list[Event], Any]:
            memory = MemorySink()
            bus = EventBus([memory])
            async with AppRunner(app, event_bus=bus, concurrency_limit=4) as runner:
                stuck = (
                    runner.event_stream(session_id="s", capacity=16) if with_stuck_reader else None
                )
                await runner.create_session("s", VersionedState())
                start = trio.current_time()
                await runner.run_until_complete("s")
                elapsed = trio.current_time() - start
            return elapsed, memory.snapshot(), stuck

        plain, plain_events, _ = await timed_run(False)
        elapsed, events, stuck = await timed_run(True)
        assert plain == elapsed == 50 * 0.5
        assert len(events) == len(plain_events) == 4 * 50 + 1  # the MemorySink missed nothing
        assert stuck.dropped == len(events) - 16
        late = [e async for e in stuck]  # reading only now
        assert late == events[-16:]
        assert late[-1].scope == STREAM_END_SCOPE


async def test_invoke_streaming_yields_every_event_then_one_stream_end(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(30):
        app = fanout_app(3, 20, sleep=0.01)
        async with app.invoke_streaming(VersionedState(), session_id="live") as run:
            received = [event async for event in run.events]
            final = await run.result()
        assert [e.seq for e in received] == list(range(61))
        assert sum(isinstance(e, NodeEvent) for e in received) == 60
        assert [e.scope for e in received].count(STREAM_END_SCOPE) == 1
        assert received[-1].scope == STREAM_END_SCOPE
        assert received[-1].message == "session=live status=completed step=1"
        assert dict(final.extra) == {"n0": 20, "n1": 20, "n2": 20}


async def test_leaving_invoke_streaming_mid_run_cancels_it_and_leaves_no_task(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(30):
        app = fanout_app(3, 1000, sleep=1.0)
        before = all_tasks()
        async with app.invoke_streaming(VersionedState()) as run:
            first = [await run.events.receive() for _ in range(5)]
        assert all(isinstance(e, NodeEvent) for e in first)
        assert trio.current_time() < 5
        assert all_tasks() == before


async def test_invoke_with_channel_ends_after_one_stream_end(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(30):
        final, channel = await fanout_app(2, 3).invoke_with_channel(VersionedState())
        events = [event async for event in channel]
        assert len(events) == 7
        assert [e.scope for e in events].count(STREAM_END_SCOPE) == 1
        assert events[-1].scope == STREAM_END_SCOPE
        assert dict(final.extra) == {"n0": 3, "n1": 3}


def normalised(events: list[Event]) -> list[Event]:
    """Events with what legitimately differs between runs removed (time, arrival seq)."""
    return [attrs.evolve(e, timestamp=0.0, seq=None) for e in canonical_order(events)]  # type: ignore[misc]  # every variant has both fields


def loop_app() -> App:
    """Fan-out of three emitting nodes with random-length sleeps, looping for three steps."""

    async def work(snapshot: Any, ctx: Any) -> NodePartial:
        for i in range(3):
            await ctx.emit("work", f"{ctx.node_id}@{ctx.step}.{i}")
            await trio.lowlevel.checkpoint()
        return NodePartial(extra={"rounds": ctx.step})

    def again(snapshot: Any) -> list[str] | str:
        return ["a", "b", "c"] if snapshot.extra.get("rounds", 0) < 3 else END

    builder = GraphBuilder()
    for name in ("a", "b", "c"):
        builder.add_node(name, work)
        builder.add_edge(START, name)
        builder.add_conditional_edges(name, again, path_map=["a", "b", "c", END])
    return builder.compile()


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from([0.0, 0.0, 0.001, 0.01])),
        min_size=1,
        max_size=8,
    ),
    st.random_module(),
)
def test_canonical_order_makes_runs_of_one_graph_equal(
    plan: list[tuple[int, float]], random_module: object
) -> None:
    app = loop_app()

    async def collect(perturb: Any) -> list[Event]:
        memory = MemorySink()
        options: dict[str, Any] = {"event_bus": EventBus([memory])}
        if perturb is not None:
            options["perturbation"] = perturb
        await app.invoke(VersionedState(), session_id="s", **options)
        return memory.snapshot()

    clock = trio.testing.MockClock(autojump_threshold=0)
    reference = trio.run(collect, None, clock=clock)
    clock = trio.testing.MockClock(autojump_threshold=0)
    perturbed = trio.run(collect, perturbation_from_plan(plan), clock=clock)
    assert normalised(perturbed) == normalised(reference)
    assert len(reference) == 3 * 3 * 3 + 1
