"""``AppRunner``: the async context that owns every actor of a run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, TypeVar

import attrs
import trio

from ...actors.errors import ActorGone
from ...actors.mailbox import MailboxSender, open_mailbox
from ...actors.perturb import Perturbation
from ...actors.request import ask
from ..checkpointers.actor import CheckpointerActor
from ..checkpointers.checkpoint import (
    Checkpoint,
    Checkpointer,
    CheckpointerType,
    StepInfo,
    resolve_checkpointer,
)
from ..errors import (
    CheckpointBackendError,
    ConcurrencyConflict,
    GraphMismatch,
    NoStartNodes,
    NotIterative,
    RunnerClosed,
    SessionExists,
    SessionNotFound,
)
from ..events.bus import EventBus, EventStream
from ..events.stream import Overflow
from ..events.types import DiagnosticEvent
from ..graph.app import App
from ..graph.builder import START
from ..graph.partial import NodePartial
from ..graph.persistent import FrozenMap
from ..graph.state import VersionedState
from ..workers import queue
from .clock import Clock
from .frontier import initial_frontier
from .iterative import (
    Adopt,
    Continue,
    Finish,
    Invoke,
    Iterate,
    IterativeOp,
    check_entry,
    entry_routing,
)
from .pool import NodePool
from .scheduler import (
    Durability,
    FlushCheckpoint,
    GetView,
    RunStep,
    RunSteps,
    RunToEnd,
    Scheduler,
    SchedulerConfig,
    SchedulerMsg,
    SessionCore,
)
from .session import Fresh, Resumed, SessionInit, SessionView, StepOptions, StepResult

_log = logging.getLogger("treadle.runner")

T = TypeVar("T")

_DURABILITY = ("sync", "async", "exit")
# How long a clean exit waits for queued checkpoint writes and sink deliveries before cancelling.
_SHUTDOWN_GRACE = 10.0
# How long giving up the lease of a session retired, or not opened, still waits once its caller
# is cancelled.
_RELEASE_GRACE = 5.0


@attrs.frozen
class RunnerStatistics:
    """What a runner holds now: open sessions, node actors started so far, idle node actors, and
    how many node replies came after their step was abandoned by its caller (and were dropped)."""

    sessions: int
    node_actors_started: int
    idle_node_actors: int
    stale_replies: int = 0


@attrs.define(eq=False)
class _OpenSession:
    """A session open on the runner: its scheduler's inbox and how many calls are using it."""

    inbox: MailboxSender[SchedulerMsg]
    busy: int = 0
    # Set while no call is using the session (close_session waits for it).
    quiet: trio.Event = attrs.field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self.quiet.set()


@attrs.frozen
class RunMetadata:
    """What a run depended on, for comparing runs and replays."""

    graph_hash: str
    runtime_config_hash: str
    checkpointer_backend: str
    clock_mode: str


class AppRunner:
    """Runs sessions of an :class:`App`; every actor lives under this context's nursery.

    Leaving ``async with AppRunner(...)`` flushes queued checkpoint writes and sink deliveries (bounded
    by a grace period), also when the block raised or was cancelled, releases the session leases,
    then cancels and joins every actor: no task or thread outlives the block. What could not be
    stored is reported: by ``CheckpointBackendError``, or, when the block raised, in a note on the
    block's own error (and a warning in the ``treadle.runner`` log).

    Args:
        app: the compiled graph.
        checkpointer: a :class:`CheckpointerType`, a URL (``memory://``, ``sqlite:///path.db``,
            ``postgresql://…``, ``json:///dir``), a :class:`Checkpointer`, or ``None`` for in-memory.
        autosave: write a checkpoint after every step (subject to ``durability``).
        event_bus: where events go; a bus with no sinks by default.
        clock: the clock nodes read (``ctx.now_unix_ms()``) and error/checkpoint times come from.
        concurrency_limit: how many nodes of one step execute at once (default ``os.cpu_count()``).
        durability: ``"sync"`` waits for each checkpoint before the next step, ``"async"`` pipelines
            writes in order, ``"exit"`` writes only when a run ends, pauses or the runner closes.
        perturbation: a hook awaited at every mailbox operation, for interleaving tests.
        max_threads: how many ``thread=True`` nodes may run in worker threads at once.
        lifecycle_events: the runtime publishes ``node.started``, ``node.completed``,
            ``node.failed``, ``node.retrying``, ``node.skipped`` and ``step.completed`` events
            (see :mod:`treadle.runtime.events.lifecycle`); off by default, and free when off.
        idle_session_ttl: seconds after which a session that no call is using is retired: its
            actors end and its memory is released, and it is reloaded from the checkpointer on
            next use. ``None`` keeps sessions open until the runner closes. Only sessions that
            can be reloaded are retired on their own (``autosave=True``);
            :meth:`close_session` retires one at once in any case.
        max_idle_sessions: how many idle sessions stay open at most, whatever their TTL: past it
            the one idle longest is retired at once, so a runner that serves sessions faster than
            ``idle_session_ttl`` retires them still holds a bounded number. ``None`` sets no bound.
    """

    def __init__(
        self,
        app: App,
        *,
        checkpointer: CheckpointerType | str | Checkpointer | None = None,
        autosave: bool = True,
        event_bus: EventBus | None = None,
        clock: Clock | None = None,
        concurrency_limit: int | None = None,
        durability: Durability = "sync",
        perturbation: Perturbation | None = None,
        max_threads: int = 8,
        lifecycle_events: bool = False,
        idle_session_ttl: float | None = 60.0,
        max_idle_sessions: int | None = 1000,
    ) -> None:
        if not isinstance(app, App):
            raise TypeError(
                f"AppRunner needs a compiled graph (an App from GraphBuilder().compile()) as app, "
                f"not {app!r}"
            )
        if isinstance(max_threads, bool) or not isinstance(max_threads, int):
            raise TypeError(f"max_threads must be an int, not {max_threads!r}")
        if max_threads < 1:
            raise ValueError(
                f"max_threads must be at least 1 (thread=True nodes need a thread), not {max_threads}"
            )
        if durability not in _DURABILITY:
            raise ValueError(
                f"durability must be one of {', '.join(_DURABILITY)}, not {durability!r}"
            )
        if concurrency_limit is not None and concurrency_limit < 1:
            raise ValueError(f"concurrency_limit must be at least 1, not {concurrency_limit}")
        ttl: object = idle_session_ttl
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 <= ttl < math.inf
        ):
            raise ValueError(
                f"idle_session_ttl must be a finite number of seconds >= 0, or None, not {ttl!r}"
            )
        cap: object = max_idle_sessions
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise ValueError(f"max_idle_sessions must be an int >= 0, or None, not {cap!r}")
        self.app = app
        self.bus = event_bus if event_bus is not None else EventBus()
        self.clock = clock
        self.autosave = autosave
        self.durability: Durability = durability
        self.concurrency_limit = concurrency_limit or os.cpu_count() or 1
        self._checkpointer = resolve_checkpointer(checkpointer)
        self._checkpoints = CheckpointerActor(self._checkpointer, perturb=perturbation)
        self._perturb = perturbation
        self._max_threads = max_threads
        self.lifecycle_events = lifecycle_events
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.idle_session_ttl = idle_session_ttl
        self.max_idle_sessions = max_idle_sessions
        self._sessions: dict[str, _OpenSession] = {}
        # Sessions no call is using, with the time each is due to be retired, soonest first
        # (a session that goes idle again moves to the end, and the TTL is the same for all), so
        # the first is also the one idle longest, retired first past max_idle_sessions.
        self._idle: dict[str, float] = {}
        self._reaper_wake = trio.Event()
        # Sessions being opened (reloaded) or retired: a call for one waits until it is done.
        self._changing: dict[str, trio.Event] = {}
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._config: SchedulerConfig | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> AppRunner:
        if self._stack is not None:
            raise RuntimeError("an AppRunner can be entered only once")
        stack = AsyncExitStack()
        self._stack = stack
        nursery = await stack.enter_async_context(trio.open_nursery())
        try:
            await nursery.start(self.bus.run)
            await nursery.start(self._checkpoints.run)
        except BaseException:
            nursery.cancel_scope.cancel(reason="AppRunner failed to start")
            await stack.aclose()
            raise
        self._nursery = nursery
        if self._retires:
            nursery.start_soon(self._reap_idle_sessions, name="treadle session reaper")
        thread_limiter = trio.CapacityLimiter(self._max_threads)
        self._config = SchedulerConfig(
            graph=self.app.graph,
            bus=self.bus,
            clock=self.clock,
            checkpoints=self._checkpoints,
            autosave=self.autosave,
            durability=self.durability,
            pool=NodePool(
                graph=self.app.graph,
                nursery=nursery,
                bus=self.bus,
                clock=self.clock,
                thread_limiter=thread_limiter,
                perturb=self._perturb,
                lifecycle=self.lifecycle_events,
            ),
            perturb=self._perturb,
            lifecycle=self.lifecycle_events,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, nursery = self._stack, self._nursery
        assert stack is not None
        self._nursery = None
        shutdown_error: BaseException | None = None
        try:
            if nursery is not None:
                # Also when the block raised (or was cancelled): what is owed is still written,
                # within the grace period.
                with trio.move_on_after(_SHUTDOWN_GRACE, shield=True) as grace:
                    await self._shutdown()
                if self._config is not None:
                    with trio.CancelScope(shield=True):
                        await self._config.pool.stop_idle()
                if grace.cancelled_caught:
                    raise CheckpointBackendError(
                        self._checkpointer.backend,
                        f"leaving the runner, checkpoint writes and sink deliveries still queued "
                        f"after {_SHUTDOWN_GRACE:g} s were dropped; their sessions resume from "
                        "their last stored step",
                    )
        except BaseException as error:
            # Raised once every actor is joined below: the nursery must be left whatever happens.
            shutdown_error = error
        finally:
            # Actors that are only waiting for work are told to end first (idle node actors were
            # stopped above unless shutdown failed); the cancellation then has only the busy ones
            # left to interrupt.
            sessions, self._sessions = self._sessions, {}
            self._idle = {}
            for entry in sessions.values():
                entry.inbox.close()
            if self._config is not None:
                self._config.pool.close()
            if nursery is not None:
                nursery.cancel_scope.cancel(reason="AppRunner closed")
        if shutdown_error is not None and exc is not None:
            # The caller's own error comes first; what shutdown could not do goes with it.
            _log.warning("while leaving the runner after %r: %s", exc, shutdown_error)
            exc.add_note(f"leaving the runner also failed: {shutdown_error}")
            shutdown_error = None
        try:
            suppressed = await stack.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The nursery wraps an error raised in the block; hand the caller their own error back.
            if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                return False
            raise
        if shutdown_error is not None:
            raise shutdown_error
        return suppressed

    async def _shutdown(self) -> None:
        """Write what is owed, give up the leases, then close the bus (its sinks) in any case."""
        try:
            for session_id, entry in list(self._sessions.items()):
                if self.durability == "exit":
                    await ask(entry.inbox, FlushCheckpoint, actor=f"scheduler of {session_id!r}")
                else:
                    # Queued behind the request in hand (a run the block abandoned), so that what
                    # that run still writes and publishes (its STREAM_END) goes first.
                    with contextlib.suppress(ActorGone):
                        await _view(entry.inbox, session_id)
            # The in-memory store keeps nothing past the process: no write to wait for, no lease.
            if not self._checkpoints.volatile:
                await self._checkpoints.flush()
                await self._checkpoints.release_leases(list(self._sessions), self._owner)
        finally:
            await self.bus.aclose()

    # -- sessions ----------------------------------------------------------------------------------

    async def create_session(
        self,
        session_id: str,
        state: VersionedState | None = None,
        *,
        concurrency_limit: int | None = None,
        allow_graph_change: bool = False,
    ) -> SessionInit:
        """Open a session: resume it if the checkpointer holds it, else start it from ``state``.

        Args:
            allow_graph_change: resume a stored session even if a graph with another definition
                wrote it (its next checkpoints record this app's graph).

        Returns:
            :class:`Resumed` with the stored step (``state`` is then ignored), or :class:`Fresh`.

        Raises:
            NoStartNodes: a fresh session's START routes lead nowhere.
            SessionLeased: another process is running this session (PostgreSQL).
            GraphMismatch: the stored session was written by another graph.
        """
        return await self._create(session_id, state, concurrency_limit, allow_graph_change, None)

    async def _create(
        self,
        session_id: str,
        state: VersionedState | None,
        concurrency_limit: int | None,
        allow_graph_change: bool,
        iterative_entry: str | None,
    ) -> SessionInit:
        """Open, resume or start a session (an iterative one when ``iterative_entry`` is set)."""
        self._require_open()
        if not _is_session_id(session_id):
            raise ValueError(f"a session id must be a non-empty string, not {session_id!r}")
        await self._settled(session_id)
        entry = self._sessions.get(session_id)
        if entry is not None:
            if iterative_entry is not None:
                view = await self._use(session_id, iterate, Adopt())
            else:
                view = await self._use(session_id, _view)
            return Resumed(view.step)
        with self._changing_session(session_id):
            return await self._open(
                session_id,
                state,
                concurrency_limit,
                allow_graph_change=allow_graph_change,
                iterative_entry=iterative_entry,
            )

    async def _open(
        self,
        session_id: str,
        state: VersionedState | None,
        concurrency_limit: int | None,
        *,
        allow_graph_change: bool = False,
        reload: bool = False,
        iterative_entry: str | None = None,
    ) -> SessionInit:
        """Spawn the scheduler of a stored session, or of a fresh one from ``state``; with
        ``reload`` (a retired session used again) a session that is not stored is not found.
        With ``iterative_entry`` the session is an iterative one starting at that entry."""
        config = self._require_open()
        leased = not self._checkpoints.volatile
        if leased:
            await self._checkpoints.acquire_lease(session_id, self._owner)
        try:
            return await self._open_leased(
                session_id, state, concurrency_limit, config,
                allow_graph_change=allow_graph_change, reload=reload, iterative_entry=iterative_entry,
            )  # fmt: skip
        except BaseException:
            # The session did not open (not found, another graph's, no start nodes, its first
            # write failed or was cancelled): no other process may find it leased by this runner.
            if leased:
                await self._drop_unopened(session_id)
            raise

    async def _give_up_lease(self, session_id: str) -> None:
        """Release the lease of a session this runner does not run (any more). Clean-up: it goes
        on when the caller is cancelled meanwhile, for at most ``_RELEASE_GRACE`` seconds."""
        with trio.move_on_after(_RELEASE_GRACE, shield=True):
            await self._checkpoints.release_lease(session_id, self._owner)

    async def _drop_unopened(self, session_id: str) -> None:
        """:meth:`_give_up_lease` for a session that failed to open: the error raised is the
        opening's, so one in giving up the lease is logged (the lease ends with the connection)."""
        try:
            await self._give_up_lease(session_id)
        except Exception as exc:
            _log.warning("could not give up the lease of session %r: %s", session_id, exc)

    async def _open_leased(
        self,
        session_id: str,
        state: VersionedState | None,
        concurrency_limit: int | None,
        config: SchedulerConfig,
        *,
        allow_graph_change: bool,
        reload: bool,
        iterative_entry: str | None,
    ) -> SessionInit:
        """:meth:`_open` once the session's lease is held (if the checkpointer has leases)."""
        stored = await self._checkpoints.load_latest(session_id)
        if stored is not None:
            _check_graph(stored, config, allow_graph_change)
            if iterative_entry is not None and stored.invocation is None:
                raise NotIterative(session_id)
            await self._spawn(SessionCore.from_checkpoint(stored), config, fresh=False)
            return Resumed(stored.step)
        if reload:
            raise SessionNotFound(session_id)
        state = state if state is not None else VersionedState()
        if iterative_entry is None:
            routing = initial_frontier(self.app.graph, state.snapshot())
        else:
            routing = entry_routing(self.app.graph, iterative_entry, state.snapshot())
        for _, target in routing.unknown_targets:
            await self.bus.publish(
                session_id,
                DiagnosticEvent(
                    scope="routing.unknown_target",
                    message=f"START routed to unknown node {target!r}",
                ),
            )
        if not routing.frontier:
            raise NoStartNodes()
        core = SessionCore(
            session_id=session_id,
            state=state,
            step=0,
            frontier=routing.frontier,
            versions_seen=FrozenMap(),
            join_state=dict(routing.join_state),
            concurrency_limit=concurrency_limit or self.concurrency_limit,
            invocation=None if iterative_entry is None else 0,
        )
        await self._spawn(core, config, fresh=True)
        return Fresh()

    async def _spawn(self, core: SessionCore, config: SchedulerConfig, *, fresh: bool) -> Scheduler:
        assert self._nursery is not None
        scheduler = Scheduler(
            config,
            core,
            invocation_id=core.session_id,
            stored_step=None if fresh else core.step,
        )
        send, receive = open_mailbox[SchedulerMsg](
            16, name=f"{core.session_id}/scheduler", perturb=self._perturb
        )
        await self._nursery.start(scheduler.run, receive)
        if fresh:
            # A session whose first checkpoint is not stored is not opened: a caller who goes on
            # after this failed (or was cancelled) creates it again instead of running a session
            # with no step 0 in the store.
            try:
                await scheduler.save_initial()
            except BaseException:
                send.close()
                raise
        self._sessions[core.session_id] = _OpenSession(send)
        self._went_idle(core.session_id)
        return scheduler

    async def run_step(self, session_id: str, options: StepOptions | None = None) -> StepResult:
        """Run one superstep of a session (see :class:`StepOptions` for interrupts).

        Raises:
            NodeRunError: a node failed; the step was discarded and the session can be retried.
            SessionNotFound: no such session is open on this runner.
        """
        opts = options if options is not None else StepOptions()
        return await self._use(session_id, _run_step, opts)

    async def run_steps(
        self,
        session_id: str,
        options: StepOptions | None = None,
        *,
        stop: Callable[[], bool] | None = None,
    ) -> StepResult | None:
        """Run supersteps, as :meth:`run_step` in a loop, until the session completes, a step
        pauses on an interrupt of ``options``, or ``stop()`` is true before a step (checked before
        the first one too). The whole run is one request to the session's scheduler, where a loop
        of :meth:`run_step` makes one per step.

        Once the session is complete its event stream ends, as :meth:`run_until_complete` ends it;
        a run that fails, pauses or stops leaves it open.

        Returns:
            The last step's result: :class:`Paused`, or :class:`Completed` whose
            ``report.completed`` is false if ``stop()`` ended the run; ``None`` if ``stop()`` was
            true before the first step.

        Raises:
            NodeRunError: a node failed; as for :meth:`run_step`, the steps before it are stored.
            SessionNotFound: no such session is open on this runner.
        """
        return await self._use(session_id, _run_steps, _opts(options), stop or _never)

    async def run_until_complete(self, session_id: str) -> VersionedState:
        """Run supersteps until the frontier is empty or only END; return the final state.

        The session's event stream ends with one ``STREAM_END`` event (``status=completed`` or
        ``status=error``).
        """
        return await self._use(session_id, _run_to_end)

    async def get_session(self, session_id: str) -> SessionView:
        """The session's current state, step and frontier."""
        return await self._use(session_id, _view)

    def sessions(self) -> list[str]:
        """The ids of the sessions open on this runner (retired ones are not), oldest first."""
        return list(self._sessions)

    async def close_session(self, session_id: str) -> None:
        """Retire a session now: once no call is using it, its checkpoint is written (under
        ``durability="exit"``), its lease released, and its actors end. It is reloaded from the
        checkpointer if it is used again. A session that is not open is left as it is.
        """
        self._require_open()
        await self._settled(session_id)
        entry = self._sessions.get(session_id)
        while entry is not None and entry.busy:
            await entry.quiet.wait()
            await self._settled(session_id)
            entry = self._sessions.get(session_id)
        if entry is not None:
            await self._retire(session_id)

    async def _retire(self, session_id: str) -> None:
        entry = self._sessions[session_id]
        with self._changing_session(session_id):
            # Its writes first: a retirement cut short (cancelled, or a write that failed) leaves
            # the session open as it was, and leased here, so that nothing is lost or locked out.
            if self.durability == "exit":
                await ask(entry.inbox, FlushCheckpoint, actor=f"scheduler of {session_id!r}")
            if not self._checkpoints.volatile:
                await self._checkpoints.flush()
            self._idle.pop(session_id, None)
            del self._sessions[session_id]
            entry.inbox.close()  # the scheduler ends, and the node actors it still holds
            if not self._checkpoints.volatile:
                await self._give_up_lease(session_id)

    @property
    def _retires(self) -> bool:
        """Whether idle sessions are retired on their own (they must be reloadable)."""
        bounded = self.idle_session_ttl is not None or self.max_idle_sessions is not None
        return bounded and self.autosave

    def _too_many_idle(self) -> bool:
        cap = self.max_idle_sessions
        return cap is not None and len(self._idle) > cap

    async def _reap_idle_sessions(self) -> None:
        """Retire sessions that stayed idle for ``idle_session_ttl`` seconds, and the ones idle
        longest while more than ``max_idle_sessions`` are idle.

        Cancellation: ends with the runner's nursery. Errors: a session that cannot be retired
        (its checkpoint cannot be written) is logged and stays open; the reaper goes on.
        """
        while True:
            if not self._idle:
                self._reaper_wake = trio.Event()
                await self._reaper_wake.wait()
                continue
            session_id, due = next(iter(self._idle.items()))
            if trio.current_time() < due and not self._too_many_idle():
                self._reaper_wake = trio.Event()
                with trio.move_on_at(due):
                    await self._reaper_wake.wait()
                continue
            del self._idle[session_id]
            entry = self._sessions.get(session_id)
            if entry is None or entry.busy or session_id in self._changing:
                continue
            try:
                await self._retire(session_id)
            except Exception:
                _log.exception("could not retire idle session %r; it stays open", session_id)

    async def _use(
        self,
        session_id: str,
        request: Callable[..., Awaitable[T]],
        *args: Any,
    ) -> T:
        """Send ``request`` to the session's scheduler, reloading a retired session first; the
        session counts as busy (never retired) until the request is answered."""
        self._require_open()
        await self._settled(session_id)
        entry = self._sessions.get(session_id)
        if entry is None:
            if not self.autosave:
                raise SessionNotFound(session_id)
            with self._changing_session(session_id):
                await self._open(session_id, None, None, reload=True)
            entry = self._sessions[session_id]
        if entry.busy == 0:
            entry.quiet = trio.Event()
            self._idle.pop(session_id, None)
        entry.busy += 1
        try:
            return await request(entry.inbox, session_id, *args)
        finally:
            entry.busy -= 1
            if entry.busy == 0:
                entry.quiet.set()
                if self._sessions.get(session_id) is entry:
                    self._went_idle(session_id)

    def _went_idle(self, session_id: str) -> None:
        if not self._retires:
            return
        ttl = self.idle_session_ttl
        self._idle.pop(session_id, None)
        self._idle[session_id] = math.inf if ttl is None else trio.current_time() + ttl
        if len(self._idle) == 1 or self._too_many_idle():
            self._reaper_wake.set()  # a sooner deadline, or one too many

    async def _settled(self, session_id: str) -> None:
        """Wait while ``session_id`` is being opened or retired."""
        while (changing := self._changing.get(session_id)) is not None:
            await changing.wait()

    @contextlib.contextmanager
    def _changing_session(self, session_id: str) -> Iterator[None]:
        """Mark ``session_id`` as being opened or retired for the block: :meth:`_settled` waits."""
        changing = self._changing[session_id] = trio.Event()
        try:
            yield
        finally:
            del self._changing[session_id]
            changing.set()

    # -- iterative sessions (SPEC 4.5; the work happens in iterative.py) --------------------------

    async def create_iterative_session(
        self,
        session_id: str,
        state: VersionedState | None = None,
        entry: str = START,
        *,
        concurrency_limit: int | None = None,
        allow_graph_change: bool = False,
    ) -> SessionInit:
        """Open an iterative session: one checkpoint lineage that :meth:`invoke_next` feeds inputs.

        A stored iterative session is resumed as stored (``state`` and ``entry`` are then not
        applied; :attr:`SessionView.invocation_pending` tells whether its last invocation must be
        finished with :meth:`continue_invocation`). A fresh one starts from ``state`` with its
        frontier at ``entry``.

        Returns:
            :class:`Resumed` with the stored step, or :class:`Fresh`.

        Raises:
            InvalidIterativeEntry: ``entry`` is END or not a node of the graph (nothing is opened).
            NotIterative: the session exists as a plain session.
            GraphMismatch: the stored session was written by another graph (see
                :meth:`create_session`).
        """
        checked = check_entry(self.app.graph, entry)
        return await self._create(session_id, state, concurrency_limit, allow_graph_change, checked)

    async def invoke_next(
        self,
        session_id: str,
        input: NodePartial | None = None,
        entry: str = START,
        *,
        options: StepOptions | None = None,
    ) -> VersionedState:
        """Apply ``input`` and run the session from ``entry`` to completion; return its state.

        The input is merged through the barrier rules as one write before the entry nodes run;
        the frontier is reset to the entry and version gating is cleared, so an identical input
        runs again. Steps continue from the session's step. The invocation ends with one
        ``INVOCATION_END`` event; the stream stays open.

        Args:
            options: Interrupts for the invocation's steps (``interrupt_before`` applies from its
                second step on, since the first one stores the input).

        Raises:
            InvalidIterativeEntry: ``entry`` is END or unknown; nothing changed.
            NodeRunError: a node failed (the session stays usable; ``INVOCATION_END`` has
                ``status=error``).
            InvocationPaused: an interrupt in ``options`` paused the invocation.
            NotIterative: the session was not opened as an iterative session.
            IterativeSessionFinished: :meth:`finish_iterative_session` was called.
        """
        checked = check_entry(self.app.graph, entry)
        op = Invoke(input if input is not None else NodePartial(), checked, _opts(options))
        view = await self._use(session_id, iterate, op)
        return view.state

    async def continue_invocation(
        self, session_id: str, *, options: StepOptions | None = None
    ) -> VersionedState:
        """Run the pending invocation (paused, failed, or cut short by a crash) to its end.

        With nothing pending it returns the session's state and runs nothing.
        """
        view = await self._use(session_id, iterate, Continue(_opts(options)))
        return view.state

    async def finish_iterative_session(self, session_id: str) -> None:
        """End the session's event stream with ``STREAM_END``; later ``invoke_next`` calls fail.

        The stored lineage stays: :meth:`create_iterative_session` continues it.
        """
        await self._use(session_id, iterate, Finish())

    # -- the work queue (SPEC 12; workers run what is enqueued) -----------------------------------

    async def enqueue(
        self, session_id: str, state: VersionedState | None = None, *, priority: int = 0
    ) -> bool:
        """Store ``session_id`` as pending, for a :class:`~treadle.runtime.workers.Worker` of this
        graph to claim and run (needs a PostgreSQL checkpointer).

        Idempotent per session id: an id already queued is left as it is (a ``paused`` one is made
        pending again, which is how a paused session is handed back to the workers).

        Args:
            state: The session's initial state (ignored if the session is already stored).
            priority: Higher runs first; equal priorities run oldest first.

        Returns:
            Whether the session is pending because of this call.

        Raises:
            CheckpointerError: The checkpointer is not PostgreSQL.
        """
        config = self._require_open()
        if not _is_session_id(session_id):
            raise ValueError(f"a session id must be a non-empty string, not {session_id!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, not {priority!r}")
        store = queue.require_postgres(self._checkpointer, "enqueue")
        initial = state if state is not None else VersionedState()
        return await store.run_sync(
            lambda conn: queue.enqueue(
                conn, store.schema, session_id, config.graph_hash, initial, priority
            )
        )

    async def queued_sessions(self) -> dict[str, queue.QueueRow]:
        """Every session in the work queue (any graph's), by id: status, owner, priority, attempts
        and last error, as ``treadle sessions list`` shows them (needs a PostgreSQL checkpointer).
        """
        self._require_open()
        store = queue.require_postgres(self._checkpointer, "queued_sessions")
        return await store.run_sync(queue.rows)

    # -- time travel -------------------------------------------------------------------------------

    async def get_state_history(self, session_id: str) -> list[StepInfo]:
        """The stored steps of a session, oldest first (the in-memory store keeps only the latest)."""
        self._require_open()
        return await self._checkpoints.list_steps(session_id)

    async def load_checkpoint(self, session_id: str, step: int) -> Checkpoint:
        """The stored checkpoint of ``session_id`` at ``step``."""
        self._require_open()
        return await self._checkpoints.load(session_id, step)

    async def fork(
        self, session_id: str, step: int, new_session_id: str, *, allow_graph_change: bool = False
    ) -> Resumed:
        """Start ``new_session_id`` from the stored ``step`` of ``session_id``.

        The new session has its own history; the original is untouched, and so is any session
        already called ``new_session_id``.

        Raises:
            SessionExists: ``new_session_id`` is stored or open on this runner.
            GraphMismatch: another graph wrote ``session_id`` (see :meth:`create_session`).
        """
        config = self._require_open()
        if not _is_session_id(new_session_id):
            raise ValueError(f"a session id must be a non-empty string, not {new_session_id!r}")
        if new_session_id in self._sessions:
            raise SessionExists(new_session_id)
        stored = await self._checkpoints.load(session_id, step)
        _check_graph(stored, config, allow_graph_change)
        # As _create does: not while the new id is being opened or retired by another call, whose
        # lease this one would share and then give up.
        await self._settled(new_session_id)
        if new_session_id in self._sessions:
            raise SessionExists(new_session_id)
        with self._changing_session(new_session_id):
            await self._open_fork(attrs.evolve(stored, session_id=new_session_id), config)
        return Resumed(step)

    async def _open_fork(self, record: Checkpoint, config: SchedulerConfig) -> None:
        """Store ``record`` as the first step of its new session and spawn it, under its lease."""
        new_session_id = record.session_id
        await self._checkpoints.acquire_lease(new_session_id, self._owner)
        try:
            # Written only if nothing is stored under the new id: the check and the write are one
            # transaction, so a session stored meanwhile by another process is not overwritten.
            try:
                await self._checkpoints.save_with_concurrency_check(record, None)
            except ConcurrencyConflict:
                raise SessionExists(new_session_id, where="stored in the checkpointer") from None
            await self._spawn(SessionCore.from_checkpoint(record), config, fresh=False)
        except BaseException:
            await self._drop_unopened(new_session_id)  # as in _open
            raise

    # -- events and metadata -----------------------------------------------------------------------

    def event_stream(
        self,
        *,
        session_id: str | None = None,
        capacity: int | None = None,
        overflow: Overflow = "drop_oldest",
    ) -> EventStream:
        """Subscribe to the events of every session (or one), from now on.

        ``overflow="block"`` makes the stream lossless: the runs it sees wait for its reader
        instead of dropping events (see :meth:`EventBus.subscribe`).
        """
        return self.bus.subscribe(session_id=session_id, capacity=capacity, overflow=overflow)

    def statistics(self) -> RunnerStatistics:
        """Counts of sessions and node actors (see :class:`RunnerStatistics`)."""
        config = self._require_open()
        return RunnerStatistics(
            sessions=len(self._sessions),
            node_actors_started=config.pool.started,
            idle_node_actors=config.pool.idle(),
            stale_replies=config.stale_replies,
        )

    def run_metadata(self) -> RunMetadata:
        """Hashes and modes that identify what this runner's runs depend on."""
        config = {
            "concurrency_limit": self.concurrency_limit,
            "durability": self.durability,
            "autosave": self.autosave,
        }
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
        return RunMetadata(
            graph_hash=self.app.graph_metadata().graph_hash,
            runtime_config_hash=digest,
            checkpointer_backend=self._checkpointer.backend,
            clock_mode=self.clock.mode if self.clock is not None else "system",
        )

    @property
    def checkpointer(self) -> Checkpointer:
        """The storage backend (use :attr:`checkpoints` to reach it while the runner is open)."""
        return self._checkpointer

    @property
    def owner(self) -> str:
        """This runner's name as a lease holder (``host:pid:random``), unique per runner."""
        return self._owner

    @property
    def checkpoints(self) -> CheckpointerActor:
        """The checkpointer actor: every storage request of this runner goes through it."""
        return self._checkpoints

    # -- internals ---------------------------------------------------------------------------------

    def _require_open(self) -> SchedulerConfig:
        if self._config is None or self._nursery is None:
            raise RunnerClosed()
        return self._config


async def _run_step(
    inbox: MailboxSender[SchedulerMsg], session_id: str, options: StepOptions
) -> StepResult:
    abandon = trio.CancelScope()
    try:
        return await ask(
            inbox, lambda r: RunStep(options, r, abandon), actor=f"scheduler of {session_id!r}"
        )
    finally:
        abandon.cancel(reason="the caller of run_step stopped waiting")


async def _run_steps(
    inbox: MailboxSender[SchedulerMsg],
    session_id: str,
    options: StepOptions,
    stop: Callable[[], bool],
) -> StepResult | None:
    abandon = trio.CancelScope()
    try:
        return await ask(
            inbox,
            lambda r: RunSteps(options, stop, r, abandon),
            actor=f"scheduler of {session_id!r}",
        )
    finally:
        abandon.cancel(reason="the caller of run_steps stopped waiting")


async def _run_to_end(inbox: MailboxSender[SchedulerMsg], session_id: str) -> VersionedState:
    abandon = trio.CancelScope()
    try:
        return await ask(
            inbox, lambda r: RunToEnd(r, abandon), actor=f"scheduler of {session_id!r}"
        )
    finally:
        abandon.cancel(reason="the caller of run_until_complete stopped waiting")


async def _view(inbox: MailboxSender[SchedulerMsg], session_id: str) -> SessionView:
    return await ask(inbox, GetView, actor=f"scheduler of {session_id!r}")


def _check_graph(stored: Checkpoint, config: SchedulerConfig, allow_graph_change: bool) -> None:
    """Refuse to resume ``stored`` with a graph other than the one that wrote it."""
    if allow_graph_change or stored.graph_hash is None or stored.graph_hash == config.graph_hash:
        return
    raise GraphMismatch(stored.session_id, stored.graph_hash, config.graph_hash)


async def iterate(
    inbox: MailboxSender[SchedulerMsg], session_id: str, op: IterativeOp
) -> SessionView:
    """Ask a session's scheduler to carry out one iterative operation."""
    abandon = trio.CancelScope()
    try:
        view: SessionView = await ask(
            inbox, lambda r: Iterate(op, r, abandon), actor=f"scheduler of {session_id!r}"
        )
    finally:
        abandon.cancel(reason="the caller stopped waiting for the invocation")
    return view


def _never() -> bool:
    return False


def _opts(options: StepOptions | None) -> StepOptions:
    return options if options is not None else StepOptions()


def _is_session_id(value: object) -> bool:
    return isinstance(value, str) and bool(value)
