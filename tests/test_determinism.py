"""The central property (SPEC 4.2): every interleaving gives the sequential reference's result."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from reference import (
    Behaviour,
    GraphSpec,
    InvocationOutcome,
    Router,
    Value,
    build_app,
    comparable,
    reference_iterative_run,
    reference_run,
)
from strategies import graph_initial_states, graph_specs

from treadle import AppRunner, InvalidIterativeEntry, MockClock, NoStartNodes, testing
from treadle.runtime.errors import NodeRunError
from treadle.runtime.events.lifecycle import LIFECYCLE_SCOPES
from treadle.runtime.graph.builder import END, START, GraphBuilder
from treadle.runtime.graph.partial import NodePartial
from treadle.runtime.graph.state import ErrorEvent, ErrorScope, Message, VersionedState
from treadle.testing import (
    RunError,
    RunnerFactory,
    Schedule,
    describe_difference,
    run_with_schedule,
    schedules,
)

# The kit's fixtures, as a user's conftest.py would expose them.
treadle_clock = testing.treadle_clock
treadle_runner = testing.treadle_runner

MAX_STEPS = 12

# Interleavings that differ a lot: none, yields only, delays at every operation, serial nodes.
FIXED_SCHEDULES = (
    Schedule(),
    Schedule(((3, 0.0), (0, 0.0), (1, 0.0))),
    Schedule(((0, 0.004), (2, 0.0), (0, 0.001)), concurrency_limit=4),
    Schedule(((1, 0.002),), concurrency_limit=1),
)


@settings(max_examples=300, deadline=None)
@given(
    spec=graph_specs(),
    state=graph_initial_states,
    schedule=schedules(),
    seed=st.random_module(),
)
def test_every_interleaving_matches_the_reference(
    spec: GraphSpec, state: VersionedState, schedule: Schedule, seed: Any
) -> None:
    expected = reference_run(spec, state, max_steps=MAX_STEPS)
    # Lifecycle events on: they must not change the run (the reference does not emit them; their
    # own schedule-independence is tested in test_lifecycle_events.py).
    run = run_with_schedule(
        build_app(spec), state, schedule, max_steps=MAX_STEPS, lifecycle_events=True
    )
    events = tuple(e for e in run.events if e.scope not in LIFECYCLE_SCOPES)
    actual = comparable(attrs.evolve(run, events=events))
    assert actual == expected, describe_difference(expected, actual)


# -- targeted cases --------------------------------------------------------------------------------


def _writer(name: str, delay: float, finished: list[str]) -> Any:
    async def node(snapshot: Any, ctx: Any) -> NodePartial:
        await trio.sleep(delay)
        finished.append(name)
        return NodePartial(messages=[Message.assistant(name)], extra={"k": name})

    return node


@pytest.mark.parametrize("schedule", FIXED_SCHEDULES)
@pytest.mark.parametrize(("delay_a", "delay_b"), [(0.010, 0.0), (0.0, 0.010)])
def test_later_writer_in_frontier_order_wins_whatever_finishes_last(
    schedule: Schedule, delay_a: float, delay_b: float
) -> None:
    finished: list[str] = []
    app = (
        GraphBuilder()
        .add_node("a", _writer("a", delay_a, finished))
        .add_node("b", _writer("b", delay_b, finished))
        .add_edge(START, "a")
        .add_edge(START, "b")
        .add_edge("a", END)
        .add_edge("b", END)
        .compile()
    )
    result = run_with_schedule(app, VersionedState(), schedule)
    # The delays decide the finishing order (under a serial schedule, frontier order does).
    if schedule.concurrency_limit != 1:
        assert finished == (["b", "a"] if delay_a > delay_b else ["a", "b"])
    assert result.state.extra == {"k": "b"}
    assert [m.content for m in result.state.messages] == ["a", "b"]
    assert result.state.extra_version == 2


def test_a_gated_node_is_skipped_and_contributes_no_edges() -> None:
    # g -> h -> (router) g: g's second visit sees the versions it ran on, so it is skipped, and
    # neither its edge to h nor its join with h fires: the run ends there.
    quiet = Behaviour()
    spec = GraphSpec(
        nodes=(("g", quiet), ("h", quiet), ("after", quiet)),
        edges=((START, "g"), ("g", "h"), ("h", END), ("after", END)),
        joins=((("g", "h"), "after"),),
        routers=(Router("h", "k0", 1, below=("g",), above=()),),
    )
    expected = reference_run(spec, VersionedState())
    for schedule in FIXED_SCHEDULES:
        result = comparable(run_with_schedule(build_app(spec), VersionedState(), schedule))
        assert result == expected, describe_difference(expected, result)
    steps = [(s.step, s.ran, s.skipped, s.next_frontier) for s in expected.steps]
    assert steps == [
        (1, ("g",), (), ("h",)),
        (2, ("h",), (), (END, "after", "g")),
        (3, ("after",), (END, "g"), (END,)),
    ]
    assert expected.completed
    assert expected.step == 3


def test_an_ungated_loop_runs_until_its_counter_stops_it() -> None:
    counting = Behaviour(writes=(("k0", Value("incr")),), say=True)
    spec = GraphSpec(
        nodes=(("g", counting),),
        edges=((START, "g"),),
        routers=(Router("g", "k0", 3, below=("g",), above=(END,)),),
    )
    expected = reference_run(spec, VersionedState())
    assert [s.ran for s in expected.steps] == [("g",)] * 3
    assert expected.state.extra == {"k0": 3}
    for schedule in FIXED_SCHEDULES:
        result = comparable(run_with_schedule(build_app(spec), VersionedState(), schedule))
        assert result == expected, describe_difference(expected, result)


def _failing_app(log: list[str], *, c_fails: bool) -> Any:
    async def a(snapshot: Any, ctx: Any) -> NodePartial:
        await trio.sleep(0.020)  # finishes after b and c have failed: it must not be cancelled
        log.append("a done")
        return NodePartial(messages=[Message.assistant("a")], extra={"k": "a"})

    async def b(snapshot: Any, ctx: Any) -> NodePartial:
        await trio.sleep(0.010)
        if ctx.step == 1:
            raise ValueError("b broke")
        return NodePartial(extra={"b": ctx.step})

    async def c(snapshot: Any, ctx: Any) -> NodePartial:
        if c_fails and ctx.step == 1:
            raise KeyError("c broke first")
        await trio.sleep(0.030)
        log.append("c done")
        return NodePartial(extra={"c": ctx.step})

    return (
        GraphBuilder()
        .add_node("a", a)
        .add_node("b", b)
        .add_node("c", c)
        .add_edge(START, "a")
        .add_edge(START, "b")
        .add_edge(START, "c")
        .add_edge(["a", "b", "c"], END)
        .compile()
    )


@pytest.mark.parametrize("c_fails", [False, True])
async def test_a_failed_step_changes_only_errors_and_keeps_the_frontier(
    treadle_runner: RunnerFactory, autojump_clock: trio.testing.MockClock, c_fails: bool
) -> None:
    log: list[str] = []
    initial = VersionedState(messages=[Message.user("hi")], extra={"x": 1})
    with trio.fail_after(60):
        runner = await treadle_runner(_failing_app(log, c_fails=c_fails), concurrency_limit=3)
        await runner.create_session("s", initial)
        with pytest.raises(NodeRunError) as caught:
            await runner.run_step("s")
        # c may fail first in time, but b comes first in frontier order.
        assert (caught.value.node, caught.value.step) == ("b", 1)
        assert isinstance(caught.value.cause, ValueError)
        assert log == ["a done"]  # a ran to its end; c was cancelled
        view = await runner.get_session("s")
        assert view.step == 1
        assert view.frontier == ("a", "b", "c")
        state = view.state
        assert (state.messages, state.extra) == (initial.messages, initial.extra)
        assert (state.messages_version, state.extra_version) == (1, 1)
        assert state.errors == (
            ErrorEvent(
                when=0, scope=ErrorScope.node("b", 1), error="ValueError: b broke", tags=("node",)
            ),
        )
        assert state.errors_version == 2
        # A retry re-runs the kept frontier as step 2.
        result = await runner.run_step("s")
        assert result.report is not None
        assert (result.report.step, result.report.ran_nodes) == (2, ("a", "b", "c"))
        view = await runner.get_session("s")
        assert view.state.extra == {"x": 1, "k": "a", "b": 2, "c": 2}
        assert view.frontier == (END,)


# -- iterative sessions ----------------------------------------------------------------------------

ITERATIVE_MAX_STEPS = 8


def run_iterative_with_schedule(
    spec: GraphSpec,
    state: VersionedState,
    inputs: list[tuple[dict[str, Any], str]],
    schedule: Schedule,
) -> list[InvocationOutcome]:
    """Feed ``inputs`` to a real iterative session of ``spec`` under ``schedule``."""
    options: dict[str, Any] = {"perturbation": schedule.perturbation(), "clock": MockClock(0)}
    if schedule.concurrency_limit is not None:
        options["concurrency_limit"] = schedule.concurrency_limit

    async def main() -> list[InvocationOutcome]:
        outcomes = []
        async with AppRunner(build_app(spec), **options) as runner:
            await runner.create_iterative_session("treadle-test", state)
            for extra, entry in inputs:
                error: RunError | str | None = None
                try:
                    await runner.invoke_next("treadle-test", NodePartial(extra=extra), entry)
                except NodeRunError as exc:
                    cause = exc.cause
                    error = RunError(exc.node, exc.step, f"{type(cause).__name__}: {cause}")
                except InvalidIterativeEntry:
                    error = "invalid entry"
                except NoStartNodes:
                    error = "no start nodes"
                view = await runner.get_session("treadle-test")
                checkpoint = await runner.checkpoints.load_latest("treadle-test")
                assert checkpoint is not None
                seen = tuple(sorted((k, tuple(v)) for k, v in checkpoint.versions_seen.items()))
                outcomes.append(
                    InvocationOutcome(view.state, view.step, view.frontier, error, seen)  # type: ignore[arg-type]
                )
        return outcomes

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@st.composite
def iterative_inputs(draw: st.DrawFn, spec: GraphSpec) -> list[tuple[dict[str, Any], str]]:
    """A few inputs: ``extra`` writes (repeats likely, deletes included) and entries (START
    mostly, any node, sometimes END, which must be refused)."""
    entries = st.sampled_from([START, START, END, *spec.behaviours])
    values = st.integers(0, 3) | st.none()
    extra = st.dictionaries(st.sampled_from(["k0", "k1", "in"]), values, max_size=2)
    return draw(st.lists(st.tuples(extra, entries), min_size=1, max_size=4))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), state=graph_initial_states, schedule=schedules(), seed=st.random_module())
def test_iterative_sessions_match_the_reference_under_every_interleaving(
    data: st.DataObject, state: VersionedState, schedule: Schedule, seed: Any
) -> None:
    spec = data.draw(graph_specs(max_nodes=4))
    inputs = data.draw(iterative_inputs(spec))
    expected, bounded = reference_iterative_run(spec, state, inputs, max_steps=ITERATIVE_MAX_STEPS)
    # invoke_next runs to completion: only graphs whose invocations end are fed to it.
    assume(bounded)
    actual = run_iterative_with_schedule(spec, state, inputs, schedule)
    for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
        assert got == want, f"invocation {index} of {inputs}:\n  expected {want}\n  actual   {got}"
