"""The scheduler actor: one per session; it owns the session's state and runs its supersteps."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import attrs
import outcome
import trio

from ...actors.mailbox import MailboxReceiver, MailboxSender, open_mailbox
from ...actors.perturb import Perturbation
from ...actors.request import ReplyTo, reply
from ..checkpointers.actor import CheckpointerActor
from ..checkpointers.checkpoint import Checkpoint, frozen_versions_seen
from ..errors import (
    CheckpointBackendError,
    CheckpointerError,
    ConcurrencyConflict,
    NodeRunError,
    SessionLeased,
)
from ..events.bus import EventBus
from ..events.lifecycle import NODE_SKIPPED_SCOPE, STEP_COMPLETED_SCOPE, runtime_event
from ..events.types import DiagnosticEvent, stream_end
from ..graph.builder import END, START, CompiledGraph
from ..graph.partial import NodePartial
from ..graph.persistent import FrozenMap
from ..graph.state import ErrorEvent, ErrorScope, StateSnapshot, VersionedState
from .barrier import apply_barrier
from .clock import Clock
from .context import trio_wall_ms
from .frontier import RouterFailed, route
from .iterative import Iterate, carry_out
from .messages import Execute, NodeDone, StepCancel
from .pool import NodePool
from .session import (
    Completed,
    Paused,
    PauseReason,
    SessionView,
    StepOptions,
    StepReport,
    StepResult,
    is_complete,
)

log = logging.getLogger("treadle.scheduler")
T = TypeVar("T")

Durability = Literal["sync", "async", "exit"]


@attrs.define
class SessionCore:
    """Everything a session is between steps; the scheduler actor is its only owner."""

    session_id: str
    state: VersionedState
    step: int
    frontier: tuple[str, ...]
    # Per node that ran, the (messages, extra) versions it last ran on. A persistent map: a step
    # makes the next one from the nodes it ran, and its checkpoint stores just those.
    versions_seen: FrozenMap
    join_state: dict[str, tuple[str, ...]]
    concurrency_limit: int
    # Iterative sessions (see iterative.py): inputs applied so far (None: a plain session), and
    # whether finish_iterative_session ended its stream.
    invocation: int | None = None
    finished: bool = False

    @classmethod
    def from_checkpoint(cls, cp: Checkpoint) -> SessionCore:
        return cls(
            session_id=cp.session_id,
            state=cp.state,
            step=cp.step,
            frontier=tuple(cp.frontier),
            versions_seen=frozen_versions_seen(cp.versions_seen),
            join_state={k: tuple(v) for k, v in cp.join_state.items()},
            concurrency_limit=cp.concurrency_limit,
            invocation=cp.invocation,
        )

    def view(self) -> SessionView:
        return SessionView(self.session_id, self.state, self.step, self.frontier, self.invocation)


@attrs.frozen
class RunStep:
    options: StepOptions
    reply_to: ReplyTo[StepResult]
    # The asker cancels this scope when it stops waiting, so the work it asked for stops too.
    abandon: trio.CancelScope = attrs.field(factory=trio.CancelScope)


@attrs.frozen
class RunSteps:
    options: StepOptions
    # Asked before each step; true stops the run there (a worker that drains).
    stop: Callable[[], bool]
    reply_to: ReplyTo[StepResult | None]
    abandon: trio.CancelScope = attrs.field(factory=trio.CancelScope)


@attrs.frozen
class RunToEnd:
    reply_to: ReplyTo[VersionedState]
    abandon: trio.CancelScope = attrs.field(factory=trio.CancelScope)


@attrs.frozen
class GetView:
    reply_to: ReplyTo[SessionView]


@attrs.frozen
class FlushCheckpoint:
    """Write the session's current state now (used on exit under ``durability="exit"``)."""

    reply_to: ReplyTo[None]


SchedulerMsg = RunStep | RunSteps | RunToEnd | GetView | FlushCheckpoint | Iterate


@attrs.define(eq=False)
class SchedulerConfig:
    """What a scheduler actor needs from its runner; shared by every session of one runner."""

    graph: CompiledGraph
    bus: EventBus
    clock: Clock | None
    checkpoints: CheckpointerActor | None
    autosave: bool
    durability: Durability
    pool: NodePool
    perturb: Perturbation | None = None
    # Publish node.skipped and step.completed (AppRunner(lifecycle_events=True)).
    lifecycle: bool = False
    stale_replies: int = 0
    """Replies that arrived after their step was abandoned, dropped (see RunnerStatistics)."""

    @property
    def graph_hash(self) -> str:
        """Recorded in every checkpoint, so that a resume with another graph can be refused.
        Computed on first use (once per compiled graph): a runner without checkpoints never
        hashes its graph."""
        return self.graph.graph_metadata().graph_hash

    def now_ms(self) -> int:
        return self.clock.now_unix_ms() if self.clock is not None else trio_wall_ms()


@attrs.define(eq=False)
class Scheduler:
    """The scheduler actor of one session.

    It owns :class:`SessionCore`, starts node actors on first use, and answers :data:`SchedulerMsg`
    requests one at a time, so steps of one session never overlap.
    """

    config: SchedulerConfig
    core: SessionCore
    invocation_id: str
    _nodes: dict[str, MailboxSender[Execute | None]] = attrs.field(factory=dict, init=False)
    _replies_send: MailboxSender[NodeDone] = attrs.field(init=False)
    _replies: MailboxReceiver[NodeDone] = attrs.field(init=False)
    # The latest step stored for this session (None: nothing yet); every save states it, so a
    # second writer of the session is refused instead of interleaving its steps with ours.
    stored_step: int | None = attrs.field(default=None, kw_only=True)
    # A save whose asker was cancelled: it may have landed although its answer did not, so the
    # next request reads the stored head first (see _resync).
    _unsure: Checkpoint | None = attrs.field(default=None, init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _dirty: bool = attrs.field(default=False, init=False)
    # Counts the executions of steps; replies carry it, so one from an abandoned execution is
    # told apart from the reply to the same step run again.
    _round: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        # One reply per node at most is ever outstanding, so this mailbox never makes a node wait.
        size = max(1, len(self.config.graph.nodes))
        self._replies_send, self._replies = open_mailbox[NodeDone](
            size, name=f"{self.core.session_id}/replies", perturb=self.config.perturb
        )

    async def run(
        self,
        inbox: MailboxReceiver[SchedulerMsg],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve requests until the inbox closes or the actor is cancelled.

        Cancellation: cancelling the actor cancels every node actor of the session with it; a step
        cut short that way is not checkpointed, so the session resumes from the previous one.

        Backpressure: requests queue in ``inbox``; one is handled at a time.

        Errors: a failing step answers its request with :class:`NodeRunError`; the actor goes on.
        """
        with inbox, self._replies, self._replies_send:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                async for msg in inbox:
                    match msg:
                        case RunStep(options=options):
                            with msg.abandon, msg.reply_to:
                                await _answer(msg.reply_to, self.run_step, options)
                        case RunSteps(options=options, stop=stop):
                            with msg.abandon, msg.reply_to:
                                await _answer(msg.reply_to, self.run_steps, options, stop)
                        case RunToEnd():
                            with msg.abandon, msg.reply_to:
                                await _answer(msg.reply_to, self.run_to_end)
                        case GetView():
                            reply(msg.reply_to, outcome.Value(self.core.view()))
                        case FlushCheckpoint():
                            with msg.reply_to:
                                await _answer(msg.reply_to, self.flush_exit_checkpoint)
                        case Iterate():
                            with msg.abandon, msg.reply_to:
                                await _answer(msg.reply_to, carry_out, self, msg.op)
                        case _:
                            raise AssertionError(f"unknown scheduler message {msg!r}")
                nursery.cancel_scope.cancel(reason="session closed")
        # The session is retired: node actors it still holds (it had not completed) end with it;
        # a completed session gave its actors back to the pool already.
        for mailbox in self._nodes.values():
            mailbox.close()
        self._nodes = {}

    # -- requests ----------------------------------------------------------------------------------

    async def run_step(self, options: StepOptions) -> StepResult:
        if self._unsure is not None:
            await self._resync()
        core = self.core
        if is_complete(core.frontier):
            report = StepReport(core.step, (), core.frontier, (), (), completed=True)
            return Completed(report)
        if options.interrupt_before:
            for node in core.frontier:
                if node in options.interrupt_before:
                    await self.flush_exit_checkpoint()
                    return Paused(PauseReason("before_node", node), None)
        report = await self._superstep()
        if report.completed:
            self._release_nodes()
        if options.interrupt_after:
            for node in report.ran_nodes:
                if node in options.interrupt_after:
                    await self.flush_exit_checkpoint()
                    return Paused(PauseReason("after_node", node), report)
        if options.interrupt_each_step:
            await self.flush_exit_checkpoint()
            return Paused(PauseReason("after_step", None), report)
        return Completed(report)

    async def run_steps(self, options: StepOptions, stop: Callable[[], bool]) -> StepResult | None:
        """:meth:`run_step` until the session completes (then as :meth:`run_to_end`: its stream
        ends), a step pauses, or ``stop()`` is true before a step; the last step's result."""
        result: StepResult | None = None
        while not stop():
            result = await self.run_step(options)
            if isinstance(result, Paused):
                return result
            if result.report.completed:
                await self.run_to_end()
                return result
        return result

    async def run_to_end(self) -> VersionedState:
        core = self.core
        try:
            if self._unsure is not None:
                await self._resync()
            while not is_complete(core.frontier):
                await self._superstep()
            self._release_nodes()
            await self.flush_exit_checkpoint()
        except trio.Cancelled:
            self._publish_end(error="cancelled")
            raise
        except BaseException as exc:
            # Whatever ends the run (a node, its output, the checkpointer, an interrupt), the
            # stream ends with it, so no consumer waits for an end that never comes.
            self._publish_end(error=str(exc) or type(exc).__name__)
            raise
        self._publish_end()
        return core.state

    async def flush_exit_checkpoint(self) -> None:
        if self._dirty:
            await self._save(
                self._record(self.core, StepReport(self.core.step, (), (), (), (), False))
            )
            self._dirty = False

    # -- the superstep -----------------------------------------------------------------------------

    async def _superstep(self) -> StepReport:
        core = self.core
        graph = self.config.graph
        bus = self.config.bus
        if bus.lossless:
            # A lossless subscriber is behind: the run waits for it before the next step, so
            # what the last one published synchronously (lifecycle events) is held back too.
            await bus.wait_room(core.session_id)
        # The step counter moves only when the step ends or fails: a step abandoned half-way
        # (its asker was cancelled) leaves no trace.
        step = core.step + 1
        snapshot = core.state.snapshot()
        versions = (snapshot.messages_version, snapshot.extra_version)

        # The nodes to run and their places in the frontier, in two lists rather than a pair per
        # node: a wide step would otherwise make one more object per node for the collector.
        to_run: list[str] = []
        places: list[int] = []
        skipped: list[str] = []
        for index, node in enumerate(core.frontier):
            if node in (END, START) or core.versions_seen.get(node) == versions:
                skipped.append(node)
            else:
                to_run.append(node)
                places.append(index)
        ran = tuple(to_run)
        if self.config.lifecycle:
            await self._publish_skipped(step, skipped)

        partials, failure = await self._execute(step, snapshot, ran, places)
        if failure is not None:
            await self._fail(step, *failure)

        state, outcome_ = apply_barrier(core.state, ran, partials, graph.reducers)
        try:
            routing = route(
                graph, ran, state.snapshot(), outcome_.frontier_commands, core.join_state
            )
        except RouterFailed as exc:
            await self._fail(step, exc.node, exc.cause)

        # Only the nodes that ran change their entry, in a new persistent map that remembers them:
        # the step, its checkpoint and the stored delta cost O(nodes ran), not O(nodes that ever
        # ran).
        seen = dict.fromkeys(ran, versions)
        versions_seen = core.versions_seen.assigned(seen) if seen else core.versions_seen
        # Every field, spelled out: attrs.evolve costs more than the rest of a small step's bookkeeping.
        after = SessionCore(
            session_id=core.session_id,
            state=state,
            step=step,
            frontier=routing.frontier,
            versions_seen=versions_seen,
            join_state=dict(routing.join_state),
            concurrency_limit=core.concurrency_limit,
            invocation=core.invocation,
            finished=core.finished,
        )
        report = StepReport(
            step=step,
            ran_nodes=ran,
            skipped_nodes=tuple(skipped),
            updated_channels=outcome_.updated_channels,
            next_frontier=routing.frontier,
            completed=is_complete(routing.frontier),
        )
        await self._commit(after, report)
        if self.config.lifecycle:
            await self._publish_step(report)
        for source, target in routing.unknown_targets:
            await self.config.bus.publish(
                core.session_id,
                DiagnosticEvent(
                    scope="routing.unknown_target",
                    message=f"node {source!r} routed to unknown node {target!r} at step {step}",
                ),
            )
        return report

    async def _execute(
        self, step: int, snapshot: StateSnapshot, ran: tuple[str, ...], places: list[int]
    ) -> tuple[list[NodePartial], tuple[str, BaseException] | None]:
        """Run the step's nodes (``places``: their indices in the frontier) and wait for exactly
        one reply from each one started."""
        count = len(ran)
        results: list[NodePartial] = [_EMPTY] * count
        if not count:
            return results, None
        cancel = StepCancel()
        self._round += 1
        round_ = self._round
        limit = max(1, self.core.concurrency_limit)
        sent = 0
        in_flight = 0
        failed: tuple[int, str, BaseException] | None = None

        async def dispatch(index: int) -> None:
            node = ran[index]
            execute = Execute(
                step,
                index,
                places[index],
                snapshot,
                self.core.session_id,
                self.invocation_id,
                cancel,
                self._replies_send,
                round_,
            )
            mailbox = self._nodes.get(node)
            if mailbox is None:
                mailbox, started = self.config.pool.take(node, execute)
                self._nodes[node] = mailbox
                if started:
                    return
            await mailbox.post(execute)

        while sent < count and sent < limit:
            await dispatch(sent)
            sent += 1
            in_flight += 1
        while in_flight:
            try:
                done = await self._reply(round_)
            except trio.Cancelled:
                # Abandoned mid-step: stop every node and collect their replies. Node actors
                # answer even when cancelled; the bound is for a node stuck in a worker thread,
                # whose reply then comes late and is dropped by the next round.
                cancel.cancel_all()
                with trio.move_on_after(_DRAIN_TIMEOUT) as drain:
                    drain.shield = True
                    for _ in range(in_flight):
                        await self._reply(round_)
                raise
            in_flight -= 1
            if done.cancelled:
                pass
            elif done.error is not None:
                if failed is None or done.index < failed[0]:
                    failed = (done.index, done.node, done.error)
                    cancel.cancel_after(done.index)
            else:
                assert done.partial is not None
                results[done.index] = done.partial
            # Nodes not yet started come after every started one in frontier order, so once a node
            # has failed none of them could take precedence: they are never started.
            if sent < count and failed is None:
                await dispatch(sent)
                sent += 1
                in_flight += 1
        if failed is not None:
            return results, (failed[1], failed[2])
        return results, None

    async def _reply(self, round_: int) -> NodeDone:
        """The next reply of this round; a reply to an abandoned round is dropped and counted."""
        while True:
            done = await self._replies.receive()
            if done.round == round_:
                return done
            self.config.stale_replies += 1
            log.info(
                "session %r: dropped a late reply of node %r to an abandoned run of step %d",
                self.core.session_id, done.node, done.step,
            )  # fmt: skip

    async def _fail(self, step: int, node: str, error: BaseException) -> None:
        """Record a failed step and raise: partials dropped, frontier kept, step stays advanced."""
        core = self.core
        event = ErrorEvent(
            when=self.config.now_ms(),
            scope=ErrorScope.node(node, step),
            error=f"{type(error).__name__}: {error}",
            tags=("node",),
        )
        state, _ = apply_barrier(
            core.state, (), [NodePartial(errors=(event,))], self.config.graph.reducers
        )
        report = StepReport(step, (), (), ("errors",), core.frontier, False)
        await self._commit(attrs.evolve(core, step=step, state=state), report)
        raise NodeRunError(node, step, error) from error

    # -- helpers -----------------------------------------------------------------------------------

    def _release_nodes(self) -> None:
        """Give this session's node actors back to the pool once it has completed."""
        nodes, self._nodes = self._nodes, {}
        for node, mailbox in nodes.items():
            self.config.pool.give(node, mailbox)

    def _record(self, core: SessionCore, report: StepReport) -> Checkpoint:
        return Checkpoint(
            session_id=core.session_id,
            step=core.step,
            state=core.state,
            frontier=core.frontier,
            # Read-only, and each step makes a new one: shared, not copied.
            versions_seen=core.versions_seen,
            # The core never changes this dict in place (each step makes a new one): shared.
            join_state=core.join_state,
            concurrency_limit=core.concurrency_limit,
            created_at=self.config.now_ms(),
            ran_nodes=report.ran_nodes,
            skipped_nodes=report.skipped_nodes,
            updated_channels=report.updated_channels,
            graph_hash=self.config.graph_hash,
            invocation=core.invocation,
        )

    async def _commit(self, after: SessionCore, report: StepReport) -> None:
        """Checkpoint the session as ``after``, then make it the session's state.

        A step that cannot be stored is not applied: if the save fails (or is cancelled), the
        session stays as it was, so a retry runs the same step again and the stored history has no
        gap.
        """
        config = self.config
        if config.checkpoints is not None and config.autosave:
            if config.durability == "exit":
                self._dirty = True
            else:
                await self._save(self._record(after, report))
        core = self.core
        core.step = after.step
        core.state = after.state
        core.frontier = after.frontier
        core.versions_seen = after.versions_seen
        core.join_state = after.join_state

    async def _save(self, record: Checkpoint) -> None:
        checkpoints = self.config.checkpoints
        if checkpoints is None:
            return
        if self.config.durability == "async" or checkpoints.volatile:
            await checkpoints.save_pipelined(record, expected_step=self.stored_step)
        else:
            try:
                await checkpoints.save_with_concurrency_check(record, self.stored_step)
            except trio.Cancelled:
                self._unsure = record
                raise
            except (ConcurrencyConflict, SessionLeased):
                raise
            except CheckpointerError as exc:
                raise CheckpointBackendError.step_not_stored(
                    checkpoints.backend, record.session_id, record.step, exc
                ) from exc
        self.stored_step = record.step

    async def _resync(self) -> None:
        """Settle a save whose asker was cancelled: if the step it wrote is the stored head, the
        step is stored, so it is applied now (the session does not run it a second time); if it
        never landed, nothing changes and the step runs again.

        Errors: a store that cannot be read fails the request; the next one tries again.
        """
        unsure = self._unsure
        assert unsure is not None
        assert self.config.checkpoints is not None
        stored = await self.config.checkpoints.load_latest(unsure.session_id)
        self._unsure = None
        if stored is None or stored.step != unsure.step or not _same_step(stored, unsure):
            return
        core = self.core
        core.step = stored.step
        core.state = stored.state
        core.frontier = stored.frontier
        core.versions_seen = frozen_versions_seen(stored.versions_seen)
        core.join_state = dict(stored.join_state)
        self.stored_step = stored.step

    async def save_initial(self) -> None:
        """Write the step-0 checkpoint of a fresh session."""
        core = self.core
        await self._commit(core, StepReport(core.step, (), (), (), core.frontier, False))

    async def _publish_skipped(self, step: int, skipped: list[str]) -> None:
        core = self.core
        for index, node in enumerate(core.frontier):
            if node in skipped and node not in (START, END):
                event = runtime_event(
                    self.config.clock,
                    core.session_id,
                    self.invocation_id,
                    step,
                    NODE_SKIPPED_SCOPE,
                    f"{node} skipped at step {step}: its inputs did not change",
                    node_id=node,
                    frontier_index=index,
                )
                await self.config.bus.publish_fresh(event)

    async def _publish_step(self, report: StepReport) -> None:
        event = runtime_event(
            self.config.clock,
            self.core.session_id,
            self.invocation_id,
            report.step,
            STEP_COMPLETED_SCOPE,
            f"step {report.step} completed: ran {', '.join(report.ran_nodes) or 'nothing'}",
            ran=list(report.ran_nodes),
            skipped=list(report.skipped_nodes),
            next_frontier=list(report.next_frontier),
        )
        await self.config.bus.publish_fresh(event)

    def _publish_end(self, *, error: str | None = None) -> None:
        """Publish the run's ``STREAM_END``; never waits, so it is sent even when cancelled."""
        core = self.core
        clock = self.config.clock
        timestamp = clock.now_seconds() if clock is not None else None
        event = stream_end(core.session_id, core.step, error=error, timestamp=timestamp)
        self.config.bus.publish_nowait(core.session_id, event)


async def _answer(reply_to: ReplyTo[T], fn: Callable[..., Awaitable[T]], *args: object) -> None:
    """Answer a request with ``fn``'s result or exception; cancellation is never swallowed."""
    try:
        value = await fn(*args)
    except Exception as exc:
        reply(reply_to, outcome.Error(exc))
    else:
        reply(reply_to, outcome.Value(value))


_EMPTY = NodePartial()
# How long an abandoned step waits for its cancelled nodes to answer (seconds).
_DRAIN_TIMEOUT = 5.0


def _same_step(stored: Checkpoint, written: Checkpoint) -> bool:
    """Whether ``stored`` is the step this session wrote (not one another writer stored)."""
    return (
        stored.state == written.state
        and tuple(stored.frontier) == tuple(written.frontier)
        and dict(stored.versions_seen) == dict(written.versions_seen)
        and dict(stored.join_state) == dict(written.join_state)
    )
