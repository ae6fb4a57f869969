"""Property-test helpers for treadle graphs: schedule strategies, perturbed runs and pytest fixtures.

Users import it as ``treadle.testing``; it needs the test extras (hypothesis, pytest, pytest-trio).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import pytest
import trio
import trio.testing
from hypothesis import strategies as st

from .actors.perturb import Perturbation, perturbation_from_plan
from .runtime.errors import NodeRunError
from .runtime.events.types import DiagnosticEvent, Event, LLMEvent, NodeEvent, canonical_order
from .runtime.execution.clock import MockClock
from .runtime.execution.replay import (
    ReplayComparison,
    ReplayRun,
    compare_event_sequences_with,
    compare_final_state,
    compare_replay_runs,
    normalize_event,
    normalize_event_default,
    normalize_state,
)
from .runtime.execution.runner import AppRunner
from .runtime.execution.session import Completed
from .runtime.graph.app import App
from .runtime.graph.frozen import EMPTY, FrozenDict
from .runtime.graph.state import VersionedState

__all__ = [
    "EventRecord",
    "ReplayComparison",
    "ReplayRun",
    "compare_event_sequences_with",
    "compare_final_state",
    "compare_replay_runs",
    "normalize_event",
    "normalize_event_default",
    "normalize_state",
    "RunError",
    "RunResult",
    "RunnerFactory",
    "Schedule",
    "StepTrace",
    "assert_interleaving_invariant",
    "describe_difference",
    "run_with_schedule",
    "schedules",
    "treadle_clock",
    "treadle_runner",
]

# Big enough that no realistic test run drops an event from its record; a drop is reported.
_EVENT_CAPACITY = 100_000
_DEFAULT_MAX_STEPS = 1_000


# -- schedules -------------------------------------------------------------------------------------


def _plan(value: Sequence[tuple[int, float]]) -> tuple[tuple[int, float], ...]:
    return tuple((int(n), float(delay)) for n, delay in value)


@attrs.frozen
class Schedule:
    """One way to interleave a run's actors.

    Attributes:
        plan: ``(extra_yields, virtual_delay_seconds)`` pairs consumed cyclically, one per mailbox
            operation of the run (in the order the operations happen): before the operation the
            actor yields ``extra_yields`` times to the Trio scheduler, then sleeps the delay on the
            virtual clock.
        concurrency_limit: How many nodes of a step may execute at once, or ``None`` to leave the
            runner's setting alone. It belongs to the schedule because it changes only the
            interleaving, never the result.
    """

    plan: tuple[tuple[int, float], ...] = attrs.field(default=((0, 0.0),), converter=_plan)
    concurrency_limit: int | None = None

    def __attrs_post_init__(self) -> None:
        perturbation_from_plan(self.plan)  # validates: non-empty, counts and delays >= 0
        if self.concurrency_limit is not None and self.concurrency_limit < 1:
            raise ValueError(
                f"Schedule.concurrency_limit must be at least 1 or None, not {self.concurrency_limit}"
            )

    def perturbation(self) -> Perturbation:
        """A fresh perturbation hook replaying :attr:`plan` (each run needs its own: it keeps its
        position in the plan)."""
        return perturbation_from_plan(self.plan)


def schedules(
    *,
    max_length: int = 16,
    max_yields: int = 3,
    max_delay_ms: int = 5,
    concurrency_limits: st.SearchStrategy[int | None] | None = None,
) -> st.SearchStrategy[Schedule]:
    """A Hypothesis strategy for :class:`Schedule`.

    Delays are whole milliseconds of virtual time, about two thirds of them zero, so most
    operations only reorder tasks and some let timers fire in between. Combine with
    ``st.random_module()`` so Trio's own scheduling choices vary too.

    Args:
        max_length: Longest plan (the plan repeats, so short plans still cover long runs).
        max_yields: Most extra yields before one mailbox operation.
        max_delay_ms: Longest virtual delay before one mailbox operation, in milliseconds.
        concurrency_limits: Strategy for :attr:`Schedule.concurrency_limit`; by default ``None``
            or 1 to 4.
    """
    if max_length < 1 or max_yields < 0 or max_delay_ms < 0:
        raise ValueError(
            "schedules() needs max_length >= 1, max_yields >= 0 and max_delay_ms >= 0, got "
            f"{max_length}, {max_yields} and {max_delay_ms}"
        )
    delay_ms = st.just(0)
    if max_delay_ms > 0:
        delay_ms = st.one_of(st.just(0), st.just(0), st.integers(1, max_delay_ms))
    entry = st.tuples(st.integers(0, max_yields), delay_ms.map(lambda ms: ms / 1000))
    limits = concurrency_limits
    if limits is None:
        limits = st.none() | st.integers(1, 4)
    return st.builds(
        Schedule,
        plan=st.lists(entry, min_size=1, max_size=max_length).map(tuple),
        concurrency_limit=limits,
    )


# -- what a run did --------------------------------------------------------------------------------


@attrs.frozen
class StepTrace:
    """What one successful superstep reported (node lists in frontier order)."""

    step: int
    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    updated_channels: tuple[str, ...]
    next_frontier: tuple[str, ...]


@attrs.frozen
class RunError:
    """The ``NodeRunError`` a run ended with; ``error`` is ``"ExceptionType: message"``."""

    node: str
    step: int
    error: str


@attrs.frozen
class EventRecord:
    """An event with what legitimately varies between interleavings removed.

    The bus ``seq`` and ``timestamp`` follow arrival order and the virtual clock, so they are
    dropped; records are kept in the canonical order of :func:`canonical_order`.
    """

    type: str
    scope: str
    message: str
    metadata: FrozenDict = EMPTY

    @classmethod
    def from_event(cls, event: Event) -> EventRecord:
        return cls(event.json_type, event.scope, event.message, event.metadata)


@attrs.frozen
class RunResult:
    """Everything about a run that must not depend on the interleaving.

    Attributes:
        state: The session's state at the end.
        step: The session's step counter at the end.
        frontier: The frontier the session was left with.
        steps: One trace per successful step, in order.
        error: The node failure that ended the run, if any.
        completed: Whether the session finished (frontier empty or only END).
        versions_seen: From the last checkpoint: per node, the versions it last ran on.
        join_state: From the last checkpoint: per join, the sources seen since it last fired.
        events: The session's events in canonical order, minus those of a failed step (how far
            a cancelled node got before its step was abandoned depends on timing by design).
    """

    state: VersionedState
    step: int
    frontier: tuple[str, ...]
    steps: tuple[StepTrace, ...]
    error: RunError | None
    completed: bool
    versions_seen: tuple[tuple[str, tuple[int, int]], ...] = ()
    join_state: tuple[tuple[str, tuple[str, ...]], ...] = ()
    events: tuple[EventRecord, ...] = ()


# -- running under a schedule ----------------------------------------------------------------------


def run_with_schedule(
    app: App,
    state: VersionedState,
    schedule: Schedule,
    *,
    session_id: str = "treadle-test",
    max_steps: int = _DEFAULT_MAX_STEPS,
    **runner_options: Any,
) -> RunResult:
    """Run a fresh session of ``app`` from ``state`` under ``schedule``, step by step.

    Calls ``trio.run`` itself with ``trio.testing.MockClock(autojump_threshold=0)``, so every
    sleep is virtual and a run takes milliseconds; call it from sync code (a ``@given`` test).
    The runner gets ``perturbation=schedule.perturbation()``, a treadle ``MockClock(0)`` (so
    timestamps in state are reproducible) and the schedule's concurrency limit, unless
    ``runner_options`` say otherwise.

    Args:
        app: The compiled graph. Its nodes must not keep state between runs.
        state: The session's initial state.
        schedule: The interleaving to impose.
        session_id: The session's id (it appears in event metadata).
        max_steps: Stop after this many successful steps (``completed`` is then ``False``), so a
            graph that loops forever still gives a result.
        **runner_options: Passed to :class:`AppRunner`.

    Returns:
        The run's :class:`RunResult`; a ``NodeRunError`` ends the run and is recorded in
        ``error`` rather than raised.
    """
    options = dict(runner_options)
    options.setdefault("perturbation", schedule.perturbation())
    options.setdefault("clock", MockClock(0))
    if schedule.concurrency_limit is not None:
        options.setdefault("concurrency_limit", schedule.concurrency_limit)

    async def main() -> RunResult:
        async with AppRunner(app, **options) as runner:
            return await _drive(runner, session_id, state, max_steps)

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def _drive(
    runner: AppRunner, session_id: str, state: VersionedState, max_steps: int
) -> RunResult:
    with runner.event_stream(session_id=session_id, capacity=_EVENT_CAPACITY) as stream:
        await runner.create_session(session_id, state)
        traces: list[StepTrace] = []
        error: RunError | None = None
        view = await runner.get_session(session_id)
        while not view.completed and len(traces) < max_steps:
            try:
                result = await runner.run_step(session_id)
            except NodeRunError as exc:
                cause = exc.cause
                error = RunError(exc.node, exc.step, f"{type(cause).__name__}: {cause}")
                break
            # No interrupts are requested, so a step can only complete.
            assert isinstance(result, Completed), result
            report = result.report
            traces.append(
                StepTrace(
                    report.step,
                    report.ran_nodes,
                    report.skipped_nodes,
                    report.updated_channels,
                    report.next_frontier,
                )
            )
            if report.completed:
                break
        view = await runner.get_session(session_id)
        checkpoint = await runner.checkpoints.load_latest(session_id)
        events: list[Event] = []
        while True:
            try:
                events.append(stream.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        if stream.dropped:
            raise AssertionError(
                f"the event record of session {session_id!r} dropped {stream.dropped} events; "
                "emit fewer events per run"
            )
    failed_step = error.step if error is not None else None
    records = tuple(
        EventRecord.from_event(event)
        for event in canonical_order(events)
        if failed_step is None or _event_step(event) != failed_step
    )
    return RunResult(
        state=view.state,
        step=view.step,
        frontier=view.frontier,
        steps=tuple(traces),
        error=error,
        completed=view.completed,
        versions_seen=_sorted_items(checkpoint.versions_seen) if checkpoint else (),
        join_state=_sorted_items(checkpoint.join_state) if checkpoint else (),
        events=records,
    )


def _event_step(event: Event) -> object:
    if isinstance(event, NodeEvent):
        return event.step
    if isinstance(event, DiagnosticEvent | LLMEvent):
        return event.metadata.get("step")
    return None


def _sorted_items(mapping: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((key, tuple(value)) for key, value in mapping.items()))


# -- the invariant ---------------------------------------------------------------------------------


def assert_interleaving_invariant(
    app: App | Callable[[], App],
    state: VersionedState,
    schedules: Sequence[Schedule],
    **options: Any,
) -> RunResult:
    """Run ``app`` from ``state`` under every schedule and check all results are identical.

    Args:
        app: The graph, or a factory called once per schedule (for nodes that keep per-run
            state, such as attempt counters).
        state: The initial state of every run.
        schedules: At least one schedule; draw them with :func:`schedules`.
        **options: Passed to :func:`run_with_schedule`.

    Returns:
        The common result.

    Raises:
        AssertionError: Two schedules gave different results; the message names both schedules
            and the first differences.
    """
    if not schedules:
        raise ValueError("assert_interleaving_invariant needs at least one schedule")
    results: list[RunResult] = []
    for schedule in schedules:
        target = app if isinstance(app, App) else app()
        results.append(run_with_schedule(target, state, schedule, **options))
    first = results[0]
    for index, result in enumerate(results[1:], start=1):
        if result != first:
            raise AssertionError(
                f"the run under schedule #{index} ({schedules[index]!r}) differs from the run "
                f"under schedule #0 ({schedules[0]!r}):\n" + describe_difference(first, result)
            )
    return first


def describe_difference(expected: RunResult, actual: RunResult, *, limit: int = 10) -> str:
    """Human lines naming how two results differ, most telling first (at most ``limit``)."""
    lines: list[str] = []
    if expected.error != actual.error:
        lines.append(f"error: {expected.error!r} != {actual.error!r}")
    for field in ("step", "completed", "frontier"):
        a, b = getattr(expected, field), getattr(actual, field)
        if a != b:
            lines.append(f"{field}: {a!r} != {b!r}")
    for i, (a_step, b_step) in enumerate(zip(expected.steps, actual.steps, strict=False)):
        if a_step != b_step:
            lines.append(f"steps[{i}]: {a_step!r} != {b_step!r}")
            break
    if len(expected.steps) != len(actual.steps):
        lines.append(f"number of steps: {len(expected.steps)} != {len(actual.steps)}")
    lines.extend(_state_difference(expected.state, actual.state))
    for field in ("versions_seen", "join_state"):
        a, b = getattr(expected, field), getattr(actual, field)
        if a != b:
            lines.append(f"{field}: {a!r} != {b!r}")
    if expected.events != actual.events:
        pairs = zip(expected.events, actual.events, strict=False)
        first = next((i for i, (x, y) in enumerate(pairs) if x != y), None)
        if first is None:
            lines.append(f"events: {len(expected.events)} != {len(actual.events)} records")
        else:
            lines.append(f"events[{first}]: {expected.events[first]!r} != {actual.events[first]!r}")
    if not lines:
        lines.append("(no difference)")
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return "\n".join("  " + line for line in lines)


def _state_difference(a: VersionedState, b: VersionedState) -> list[str]:
    lines: list[str] = []
    for version in ("messages_version", "extra_version", "errors_version"):
        if getattr(a, version) != getattr(b, version):
            lines.append(f"state.{version}: {getattr(a, version)} != {getattr(b, version)}")
    if a.messages != b.messages:
        pairs = zip(a.messages, b.messages, strict=False)
        i = next(
            (i for i, (x, y) in enumerate(pairs) if x != y), min(len(a.messages), len(b.messages))
        )
        left = a.messages[i] if i < len(a.messages) else "<none>"
        right = b.messages[i] if i < len(b.messages) else "<none>"
        lines.append(f"state.messages[{i}]: {left!r} != {right!r}")
    if a.extra != b.extra or any(
        type(a.extra[k]) is not type(b.extra[k]) for k in a.extra if k in b.extra
    ):
        keys = sorted(set(a.extra) | set(b.extra))
        for key in keys:
            left, right = a.extra.get(key, "<absent>"), b.extra.get(key, "<absent>")
            if left != right or type(left) is not type(right):
                lines.append(f"state.extra[{key!r}]: {left!r} != {right!r}")
    if a.errors != b.errors:
        lines.append(f"state.errors: {a.errors!r} != {b.errors!r}")
    return lines


# -- pytest fixtures -------------------------------------------------------------------------------


class RunnerFactory(Protocol):
    """What the :func:`treadle_runner` fixture yields: ``await open_runner(app, **options)``."""

    async def __call__(self, app: App, **options: Any) -> AppRunner: ...


@pytest.fixture
def treadle_clock() -> MockClock:
    """A treadle ``MockClock`` at Unix time 0, so ``ctx.now_unix_ms()`` and error times are 0."""
    return MockClock(0)


@pytest.fixture
async def treadle_runner(treadle_clock: MockClock) -> AsyncIterator[RunnerFactory]:
    """Open :class:`AppRunner` instances that live until the test ends.

    ``runner = await treadle_runner(app, **options)`` starts a runner (with the
    :func:`treadle_clock` unless ``clock=`` is given) in a task owned by the fixture; at teardown
    every runner is closed cleanly. Import it into a ``conftest.py``
    (``from treadle.testing import treadle_clock, treadle_runner``) or list ``"treadle.testing"``
    in ``pytest_plugins``; pair it with pytest-trio's ``autojump_clock`` for virtual time.
    """
    closing = trio.Event()
    async with trio.open_nursery() as nursery:

        async def open_runner(app: App, **options: Any) -> AppRunner:
            options.setdefault("clock", treadle_clock)
            runner: AppRunner = await nursery.start(_hold_runner, app, options, closing)
            return runner

        try:
            yield open_runner
        finally:
            closing.set()


async def _hold_runner(
    app: App,
    options: dict[str, Any],
    closing: trio.Event,
    *,
    task_status: trio.TaskStatus[AppRunner] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with AppRunner(app, **options) as runner:
        task_status.started(runner)
        await closing.wait()
