"""Iterative sessions (SPEC 4.5): one session, one checkpoint lineage, one input per invocation.

The operations here run inside the session's scheduler actor (message :class:`Iterate`), so an
invocation never overlaps a step of the same session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio

from ...actors.request import ReplyTo
from ..errors import (
    CheckpointerError,
    InvalidIterativeEntry,
    InvocationPaused,
    IterativeSessionFinished,
    NodeRunError,
    NoStartNodes,
    NotIterative,
)
from ..events.types import DiagnosticEvent, invocation_end, stream_end
from ..graph.builder import END, START, CompiledGraph
from ..graph.partial import NodePartial
from ..graph.persistent import FrozenMap
from ..graph.state import StateSnapshot, VersionedState
from .barrier import apply_barrier
from .frontier import Routing, initial_frontier
from .session import Paused, SessionView, StepOptions, is_complete

if TYPE_CHECKING:
    from .scheduler import Scheduler, SessionCore


@attrs.frozen
class Adopt:
    """``create_iterative_session`` found the session open or stored: check it is iterative."""


@attrs.frozen
class Invoke:
    """Apply ``input`` and run the graph from ``entry`` to completion."""

    input: NodePartial
    entry: str
    options: StepOptions


@attrs.frozen
class Continue:
    """Run the pending invocation (paused, failed, or cut short by a crash) to completion."""

    options: StepOptions


@attrs.frozen
class Finish:
    """End the session's stream with ``STREAM_END``."""


IterativeOp = Adopt | Invoke | Continue | Finish


@attrs.frozen
class Iterate:
    op: IterativeOp
    reply_to: ReplyTo[SessionView]
    # The asker cancels this scope when it stops waiting, so the invocation it asked for stops too.
    abandon: trio.CancelScope = attrs.field(factory=trio.CancelScope)


def check_entry(graph: CompiledGraph, entry: object) -> str:
    """``entry`` if it is START or a node of ``graph``; else :class:`InvalidIterativeEntry`."""
    if entry == START or (isinstance(entry, str) and entry != END and entry in graph.nodes):
        return str(entry)
    raise InvalidIterativeEntry(str(entry))


def entry_routing(graph: CompiledGraph, entry: str, snapshot: StateSnapshot) -> Routing:
    """Where an invocation starts: START's routes (evaluated on ``snapshot``) or the node.

    Raises:
        NoStartNodes: START routes lead nowhere but END for this state.
    """
    if entry == START:
        routing = initial_frontier(graph, snapshot)
        if is_complete(routing.frontier):
            raise NoStartNodes()
        return routing
    return Routing(frontier=(entry,), join_state={}, unknown_targets=())


async def carry_out(scheduler: Scheduler, op: IterativeOp) -> SessionView:
    """Carry out one iterative operation on the scheduler's session."""
    core = scheduler.core
    if core.invocation is None:
        raise NotIterative(core.session_id)
    match op:
        case Adopt():
            core.finished = False
            return core.view()
        case Invoke():
            _require_unfinished(core)
            return await _invoke(scheduler, op)
        case Continue():
            _require_unfinished(core)
            if core.invocation == 0 or is_complete(core.frontier):
                return core.view()
            return await _run(scheduler, op.options)
        case Finish():
            _require_unfinished(core)
            await scheduler.flush_exit_checkpoint()
            core.finished = True
            await _publish(scheduler, stream_end, None)
            return core.view()
        case _:
            raise AssertionError(f"unknown iterative operation {op!r}")


def _require_unfinished(core: SessionCore) -> None:
    if core.finished:
        raise IterativeSessionFinished(core.session_id)


async def _invoke(scheduler: Scheduler, op: Invoke) -> SessionView:
    core = scheduler.core
    graph = scheduler.config.graph
    assert core.invocation is not None
    if op.input.frontier is not None:
        raise ValueError(
            "an invoke_next input cannot carry a frontier command; choose where the run starts "
            "with entry="
        )
    # Everything below is computed before the session changes, so an error leaves it untouched.
    state, _ = apply_barrier(core.state, (), [op.input], graph.reducers)
    routing = entry_routing(graph, op.entry, state.snapshot())
    before = _Before.of(core)
    core.state = state
    core.frontier = routing.frontier
    core.join_state = dict(routing.join_state)
    # Identical consecutive inputs must still run the entry path: no node has "seen" anything.
    core.versions_seen = FrozenMap()
    core.invocation += 1
    scheduler.invocation_id = f"{core.session_id}:{core.invocation}"
    try:
        for _, target in routing.unknown_targets:
            await scheduler.config.bus.publish(
                core.session_id,
                DiagnosticEvent(
                    scope="routing.unknown_target",
                    message=f"START routed to unknown node {target!r}",
                ),
            )
        # The first step always runs: interrupting before it would leave the input unstored.
        try:
            first = await scheduler.run_step(attrs.evolve(op.options, interrupt_before=()))
        except NodeRunError as exc:
            await _publish(scheduler, invocation_end, str(exc))
            raise
    except CheckpointerError:
        # The input is stored with the invocation's first step, and a step not stored is not
        # applied: that step's save failed, so the session goes back to where it was.
        before.restore(core)
        raise
    except BaseException:
        # Cut short (cancelled) before its first step was recorded: the input never happened.
        if core.step == before.step:
            before.restore(core)
        raise
    if isinstance(first, Paused):
        raise InvocationPaused(core.session_id, core.invocation, first.reason)
    return await _run(scheduler, op.options)


async def _run(scheduler: Scheduler, options: StepOptions) -> SessionView:
    """Run supersteps until the invocation completes; end it with ``INVOCATION_END``."""
    core = scheduler.core
    scheduler.invocation_id = f"{core.session_id}:{core.invocation}"
    try:
        while not is_complete(core.frontier):
            result = await scheduler.run_step(options)
            if isinstance(result, Paused):
                assert core.invocation is not None
                raise InvocationPaused(core.session_id, core.invocation, result.reason)
        await scheduler.flush_exit_checkpoint()
    except NodeRunError as exc:
        await _publish(scheduler, invocation_end, str(exc))
        raise
    await _publish(scheduler, invocation_end, None)
    return core.view()


async def _publish(
    scheduler: Scheduler, sentinel: Callable[..., DiagnosticEvent], error: str | None
) -> None:
    core = scheduler.core
    clock = scheduler.config.clock
    timestamp = clock.now_seconds() if clock is not None else None
    event = sentinel(core.session_id, core.step, error=error, timestamp=timestamp)
    await scheduler.config.bus.publish(core.session_id, event)


@attrs.frozen
class _Before:
    """What an invocation changes before its first step, kept to undo it."""

    state: VersionedState
    step: int
    frontier: tuple[str, ...]
    versions_seen: FrozenMap
    join_state: dict[str, tuple[str, ...]]
    invocation: int | None

    @classmethod
    def of(cls, core: SessionCore) -> _Before:
        return cls(
            core.state,
            core.step,
            core.frontier,
            core.versions_seen,  # read-only
            dict(core.join_state),
            core.invocation,
        )

    def restore(self, core: SessionCore) -> None:
        core.state = self.state
        core.step = self.step
        core.frontier = self.frontier
        core.versions_seen = self.versions_seen
        core.join_state = self.join_state
        core.invocation = self.invocation
