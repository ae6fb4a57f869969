"""``treadle.testing``: schedules, perturbed runs, the interleaving invariant and the fixtures."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import find, given, settings
from hypothesis import strategies as st

from treadle import testing
from treadle.actors.perturb import MailboxOp
from treadle.runtime.graph.builder import END, START, GraphBuilder
from treadle.runtime.graph.partial import NodePartial
from treadle.runtime.graph.state import Message, VersionedState
from treadle.testing import (
    EventRecord,
    RunError,
    RunnerFactory,
    RunResult,
    Schedule,
    StepTrace,
    assert_interleaving_invariant,
    describe_difference,
    run_with_schedule,
    schedules,
)

# The kit's fixtures, as a user's conftest.py would expose them.
treadle_clock = testing.treadle_clock
treadle_runner = testing.treadle_runner


# -- schedules -------------------------------------------------------------------------------------


@given(schedules(max_length=5, max_yields=2, max_delay_ms=3))
def test_schedules_respect_their_bounds(schedule: Schedule) -> None:
    assert 1 <= len(schedule.plan) <= 5
    for yields, delay in schedule.plan:
        assert 0 <= yields <= 2
        ms = round(delay * 1000)
        assert 0 <= ms <= 3
        assert delay == ms / 1000
    assert schedule.concurrency_limit is None or 1 <= schedule.concurrency_limit <= 4


def test_schedules_reach_zero_and_nonzero_delays_and_limits() -> None:
    def delays(s: Schedule) -> list[float]:
        return [d for _, d in s.plan]

    assert find(schedules(), lambda s: len(s.plan) > 3 and all(d == 0 for d in delays(s)))
    assert find(schedules(), lambda s: any(d > 0 for d in delays(s)))
    assert find(schedules(), lambda s: s.concurrency_limit == 1).concurrency_limit == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"plan": ()}, "plan is empty"),
        ({"plan": ((0, -0.001),)}, "is invalid"),
        ({"plan": ((-1, 0.0),)}, "is invalid"),
        ({"concurrency_limit": 0}, "at least 1"),
    ],
)
def test_a_bad_schedule_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule(**kwargs)


def test_schedules_refuse_bad_bounds() -> None:
    with pytest.raises(ValueError, match="max_length >= 1"):
        schedules(max_length=0)


async def test_a_perturbation_replays_the_plan_cyclically(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Binary fractions, so the virtual times add up exactly.
    schedule = Schedule(((2, 0.25), (0, 0.0)))
    op = MailboxOp("m", "send")
    with trio.fail_after(10):
        start = trio.current_time()
        hook = schedule.perturbation()
        await hook(op)
        assert trio.current_time() == start + 0.25
        await hook(op)
        assert trio.current_time() == start + 0.25
        await hook(op)
        assert trio.current_time() == start + 0.5
        # A fresh hook starts from the beginning of the plan again.
        await schedule.perturbation()(op)
        assert trio.current_time() == start + 0.75


# -- run_with_schedule -----------------------------------------------------------------------------


async def _say(snapshot: Any, ctx: Any) -> NodePartial:
    await ctx.emit("said", f"{ctx.node_id} at {ctx.step}", n=len(snapshot.messages))
    await trio.sleep(0.001 * len(ctx.node_id))
    return NodePartial(messages=[Message.assistant(ctx.node_id)], extra={ctx.node_id: ctx.step})


async def _fail_at_two(snapshot: Any, ctx: Any) -> NodePartial:
    await ctx.emit("about to fail", "x")
    if ctx.step == 2:
        raise RuntimeError("step two")
    return NodePartial()


def _diamond() -> Any:
    return (
        GraphBuilder()
        .add_node("a", _say)
        .add_node("bb", _say)
        .add_node("ccc", _say)
        .add_node("d", _say)
        .add_edge(START, "a")
        .add_edge("a", "bb")
        .add_edge("a", "ccc")
        .add_edge("bb", "d")
        .add_edge("ccc", "d")
        .add_edge("d", END)
        .compile()
    )


def test_run_with_schedule_reports_steps_state_and_canonical_events() -> None:
    result = run_with_schedule(_diamond(), VersionedState(), Schedule(((1, 0.002),)))
    assert result.error is None
    assert result.completed
    assert result.step == 3
    assert result.frontier == (END,)
    assert result.steps == (
        StepTrace(1, ("a",), (), ("messages", "extra"), ("bb", "ccc")),
        StepTrace(2, ("bb", "ccc"), (), ("messages", "extra"), ("d",)),
        StepTrace(3, ("d",), (), ("messages", "extra"), (END,)),
    )
    assert [m.content for m in result.state.messages] == ["a", "bb", "ccc", "d"]
    assert dict(result.state.extra) == {"a": 1, "bb": 2, "ccc": 2, "d": 3}
    assert result.versions_seen == (("a", (1, 1)), ("bb", (2, 2)), ("ccc", (2, 2)), ("d", (3, 3)))
    assert [(e.type, e.scope, e.message) for e in result.events] == [
        ("node", "said", "a at 1"),
        ("node", "said", "bb at 2"),
        ("node", "said", "ccc at 2"),
        ("node", "said", "d at 3"),
    ]
    assert result.events[3].metadata["n"] == 3


def test_run_with_schedule_records_a_node_failure_and_drops_its_step_events() -> None:
    app = (
        GraphBuilder()
        .add_node("a", _say)
        .add_node("f", _fail_at_two)
        .add_edge(START, "a")
        .add_edge("a", "f")
        .add_edge(START, "f")
        .add_edge("f", END)
        .compile()
    )
    result = run_with_schedule(app, VersionedState(), Schedule())
    assert result.error == RunError("f", 2, "RuntimeError: step two")
    assert not result.completed
    assert result.step == 2
    assert result.frontier == ("f", END)
    assert len(result.steps) == 1
    assert [e.scope for e in result.events] == ["said", "about to fail"]
    assert [e.metadata["step"] for e in result.events] == [1, 1]
    assert result.state.errors[0].error == "RuntimeError: step two"


def test_run_with_schedule_stops_a_loop_at_max_steps() -> None:
    async def tick(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial(extra={"n": ctx.step})

    app = (
        GraphBuilder()
        .add_node("tick", tick)
        .add_edge(START, "tick")
        .add_conditional_edges("tick", lambda s: "tick")
        .compile()
    )
    result = run_with_schedule(app, VersionedState(), Schedule(), max_steps=5)
    assert not result.completed
    assert result.error is None
    assert result.step == 5
    assert [s.ran for s in result.steps] == [("tick",)] * 5


def _concurrency_probe(peak: list[int]) -> Any:
    running = [0]

    async def node(snapshot: Any, ctx: Any) -> None:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await trio.sleep(0.001)
        running[0] -= 1

    builder = GraphBuilder()
    for name in ("p", "q", "r"):
        builder.add_node(name, node).add_edge(START, name).add_edge(name, END)
    return builder.compile()


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_the_schedule_sets_the_concurrency_limit(limit: int) -> None:
    peak = [0]
    run_with_schedule(_concurrency_probe(peak), VersionedState(), Schedule(concurrency_limit=limit))
    assert peak[0] == limit


def test_a_runner_option_overrides_the_schedule() -> None:
    peak = [0]
    schedule = Schedule(concurrency_limit=1)
    run_with_schedule(_concurrency_probe(peak), VersionedState(), schedule, concurrency_limit=3)
    assert peak[0] == 3


# -- assert_interleaving_invariant -----------------------------------------------------------------

_SCHEDULES = (
    Schedule(),
    Schedule(((0, 0.003), (2, 0.0)), concurrency_limit=1),
    Schedule(((1, 0.001),), concurrency_limit=3),
)


def test_the_invariant_holds_for_a_deterministic_graph() -> None:
    result = assert_interleaving_invariant(_diamond(), VersionedState(), _SCHEDULES)
    assert result.completed
    assert result.step == 3


def test_the_invariant_calls_an_app_factory_once_per_schedule() -> None:
    built: list[Any] = []

    def factory() -> Any:
        built.append(_diamond())
        return built[-1]

    assert_interleaving_invariant(factory, VersionedState(), _SCHEDULES)
    assert len(built) == len(_SCHEDULES)


def test_the_invariant_reports_a_graph_that_depends_on_timing() -> None:
    async def clock_reader(snapshot: Any, ctx: Any) -> NodePartial:
        # Virtual time depends on the schedule's delays: a node must never write it.
        return NodePartial(extra={"t": trio.current_time()})

    app = (
        GraphBuilder()
        .add_node("clock_reader", clock_reader)
        .add_edge(START, "clock_reader")
        .add_edge("clock_reader", END)
        .compile()
    )
    with pytest.raises(AssertionError, match=r"schedule #1[\s\S]*state.extra\['t'\]"):
        assert_interleaving_invariant(app, VersionedState(), _SCHEDULES)


def test_the_invariant_needs_a_schedule() -> None:
    with pytest.raises(ValueError, match="at least one schedule"):
        assert_interleaving_invariant(_diamond(), VersionedState(), [])


@settings(max_examples=20, deadline=None)
@given(
    chosen=st.lists(schedules(), min_size=2, max_size=3),
    text=st.text(max_size=5),
    seed=st.random_module(),
)
def test_users_property_test_their_graph_like_this(
    chosen: list[Schedule], text: str, seed: Any
) -> None:
    assert_interleaving_invariant(_diamond(), VersionedState.with_user_message(text), chosen)


def test_describe_difference_names_what_differs() -> None:
    base = RunResult(VersionedState(), 1, (END,), (), None, True)
    other = RunResult(
        VersionedState(messages=[Message.user("x")], messages_version=2),
        2,
        ("a",),
        (StepTrace(1, ("a",), (), (), ("a",)),),
        RunError("a", 2, "ValueError: no"),
        False,
        events=(EventRecord("node", "s", "m"),),
    )
    text = describe_difference(base, other, limit=100)
    for expected in (
        "error: None != RunError",
        "step: 1 != 2",
        "completed: True != False",
        "frontier:",
        "number of steps: 0 != 1",
        "state.messages_version: 1 != 2",
        "state.messages[0]: '<none>' != Message",
        "events: 0 != 1 records",
    ):
        assert expected in text
    assert describe_difference(base, base) == "  (no difference)"
    assert describe_difference(base, other, limit=2).endswith("more")


# -- fixtures --------------------------------------------------------------------------------------


async def test_the_runner_fixture_opens_runners_on_the_mock_clock(
    treadle_runner: RunnerFactory, autojump_clock: trio.testing.MockClock
) -> None:
    async def stamp(snapshot: Any, ctx: Any) -> NodePartial:
        await trio.sleep(5)
        return NodePartial(extra={"ms": ctx.now_unix_ms()})

    app = GraphBuilder().add_node("stamp", stamp).add_edge(START, "stamp").add_edge("stamp", END)
    app = app.compile()
    with trio.fail_after(60):
        first = await treadle_runner(app)
        second = await treadle_runner(app, concurrency_limit=1)
        await first.create_session("s", VersionedState())
        await second.create_session("s", VersionedState())
        assert (await first.run_until_complete("s")).extra == {"ms": 0}
        assert (await second.run_until_complete("s")).extra == {"ms": 0}
