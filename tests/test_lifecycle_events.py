"""Lifecycle events (SPEC 4.4): what the runtime says about nodes and steps, only when asked."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import build_app
from strategies import graph_initial_states, graph_specs

from treadle import (
    END,
    START,
    AppRunner,
    EventBus,
    GraphBuilder,
    MemorySink,
    NodePartial,
    NodeRunError,
    RetryPolicy,
    VersionedState,
)
from treadle.runtime.events.lifecycle import LIFECYCLE_SCOPES
from treadle.runtime.events.types import NodeEvent, canonical_order
from treadle.testing import EventRecord, Schedule, run_with_schedule, schedules


def _graph(fail: bool = False) -> Any:
    """a (retried once) -> b, with a loop back to b that is version-gated the second time."""
    attempts = {"a": 0}

    async def a(snapshot: Any, ctx: Any) -> NodePartial:
        attempts["a"] += 1
        await trio.sleep(0.25)
        if attempts["a"] == 1:
            raise ValueError("flaky")
        await ctx.emit("work", "a works")
        return NodePartial(extra={"a": 1})

    async def b(snapshot: Any, ctx: Any) -> NodePartial:
        if fail:
            raise RuntimeError("b broke")
        return NodePartial(extra={"b": snapshot.extra.get("b", 0) + 1})

    async def c(snapshot: Any, ctx: Any) -> None:
        return None

    return (
        GraphBuilder()
        .add_node("a", a, retry=RetryPolicy(max_attempts=2, initial_interval=1.0, jitter=False))
        .add_node("b", b)
        .add_node("c", c)
        .add_edge(START, "a")
        .add_edge("a", "b")
        .add_edge("b", "c")
        # c changes nothing: its second visit is gated, and a gated node routes nowhere.
        .add_conditional_edges("c", lambda snapshot: "c", path_map=["c", END])
        .compile()
    )


async def _run(app: Any, *, lifecycle: bool, session: str = "s") -> list[Any]:
    sink = MemorySink()
    async with AppRunner(app, event_bus=EventBus([sink]), lifecycle_events=lifecycle) as runner:
        await runner.create_session(session, VersionedState())
        try:
            await runner.run_until_complete(session)
        except NodeRunError:
            pass
    return sink.snapshot()


def _lifecycle(events: list[Any]) -> list[tuple[str, str, int]]:
    return [(e.scope, e.node_id, e.step) for e in events if e.scope in LIFECYCLE_SCOPES]


async def test_lifecycle_events_tell_each_node_and_step(autojump_clock: Any) -> None:
    with trio.fail_after(10):
        events = await _run(_graph(), lifecycle=True)
    assert _lifecycle(events) == [
        ("node.started", "a", 1),
        ("node.retrying", "a", 1),
        ("node.completed", "a", 1),
        ("step.completed", "", 1),
        ("node.started", "b", 2),
        ("node.completed", "b", 2),
        ("step.completed", "", 2),
        ("node.started", "c", 3),
        ("node.completed", "c", 3),
        ("step.completed", "", 3),
        ("node.skipped", "c", 4),
        ("step.completed", "", 4),
    ]
    by_scope = {(e.scope, e.step): e for e in events if isinstance(e, NodeEvent)}
    # The first attempt sleeps 0.25 s, the retry waits 1 s, the second attempt sleeps 0.25 s.
    assert by_scope["node.completed", 1].metadata["duration_ms"] == 1500.0
    assert by_scope["node.retrying", 1].metadata["attempt"] == 2
    assert by_scope["node.retrying", 1].metadata["error"] == "ValueError: flaky"
    step1 = by_scope["step.completed", 1].metadata
    assert (step1["ran"], step1["skipped"], step1["next_frontier"]) == (("a",), (), ("b",))
    step4 = by_scope["step.completed", 4].metadata
    assert (step4["ran"], step4["skipped"], step4["next_frontier"]) == ((), ("c",), ())
    # A node's own events sit between its started and completed events.
    scopes = [e.scope for e in events if isinstance(e, NodeEvent) and e.node_id == "a"]
    assert scopes == ["node.started", "node.retrying", "work", "node.completed"]
    assert [e for e in canonical_order(events) if e.session_id == "s"] == events


async def test_a_failing_node_reports_node_failed_and_no_step_completed(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(10):
        events = await _run(_graph(fail=True), lifecycle=True)
    assert _lifecycle(events)[-2:] == [("node.started", "b", 2), ("node.failed", "b", 2)]
    failed = next(e for e in events if e.scope == "node.failed")
    assert failed.metadata["error"] == "RuntimeError: b broke"


async def test_lifecycle_events_are_off_by_default(autojump_clock: Any) -> None:
    with trio.fail_after(10):
        off = await _run(_graph(), lifecycle=False)
        on = await _run(_graph(), lifecycle=True)
    assert _lifecycle(off) == []
    # Everything else is the same run.
    assert [e.scope for e in on if e.scope not in LIFECYCLE_SCOPES] == [e.scope for e in off]


def _without_durations(records: tuple[EventRecord, ...]) -> list[EventRecord]:
    # A node's duration follows the delays it draws, which differ from run to run by design.
    return [
        attrs.evolve(r, metadata={k: v for k, v in r.metadata.items() if k != "duration_ms"})
        for r in records
    ]


@settings(max_examples=40, deadline=None)
@given(
    spec=graph_specs(),
    state=graph_initial_states,
    first=schedules(),
    second=schedules(),
    seed=st.random_module(),
)
def test_lifecycle_events_are_the_same_under_every_schedule(
    spec: Any, state: VersionedState, first: Schedule, second: Schedule, seed: Any
) -> None:
    # A fresh app for each run: generated nodes count their attempts.
    a = run_with_schedule(build_app(spec), state, first, max_steps=8, lifecycle_events=True)
    b = run_with_schedule(build_app(spec), state, second, max_steps=8, lifecycle_events=True)
    assert _without_durations(a.events) == _without_durations(b.events)
    # One step.completed per successful step, agreeing with the step's report.
    reported = [
        (r.metadata["step"], r.metadata["ran"], r.metadata["skipped"], r.metadata["next_frontier"])
        for r in a.events
        if r.scope == "step.completed"
    ]
    assert reported == [(t.step, t.ran, t.skipped, t.next_frontier) for t in a.steps]
    started = [
        (r.metadata["step"], r.metadata["node_id"]) for r in a.events if r.scope == "node.started"
    ]
    ended = [
        (r.metadata["step"], r.metadata["node_id"])
        for r in a.events
        if r.scope in ("node.completed", "node.failed")
    ]
    assert started == ended == [(t.step, n) for t in a.steps for n in t.ran]


def test_lifecycle_events_on_a_fixed_schedule_match_the_default_one() -> None:
    app = _graph_for_schedules()
    results = [
        run_with_schedule(app, VersionedState(), schedule, lifecycle_events=True)
        for schedule in (Schedule(), Schedule(((2, 0.003), (0, 0.0)), concurrency_limit=1))
    ]
    assert results[0].events == results[1].events
    assert [r.scope for r in results[0].events].count("node.started") == 3


def _graph_for_schedules() -> Any:
    async def fan(snapshot: Any, ctx: Any) -> NodePartial:
        await ctx.emit("say", ctx.node_id)
        return NodePartial(extra={ctx.node_id: 1})

    return (
        GraphBuilder()
        .add_node("x", fan)
        .add_node("y", fan)
        .add_node("z", fan)
        .add_edge(START, "x")
        .add_edge(START, "y")
        .add_edge(START, "z")
        .add_edge("x", END)
        .add_edge("y", END)
        .add_edge("z", END)
        .compile()
    )


@pytest.mark.parametrize("lifecycle", [False, True])
async def test_runner_records_the_option(lifecycle: bool) -> None:
    with trio.fail_after(5):
        async with AppRunner(_graph_for_schedules(), lifecycle_events=lifecycle) as runner:
            assert runner.lifecycle_events is lifecycle
