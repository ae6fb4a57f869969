"""The event bus actor: stamps events, fans them out to supervised sinks and to subscribers.

Every consumer has its own bounded drop-oldest buffer, so none can slow the run or another.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from ...actors.supervisor import ChildCrash, RestartPolicy, supervise
from ..graph.frozen import FrozenDict
from .sink_calls import SinkTimeout, ThreadedCalls, sink_name
from .stream import Buffer, BufferedStream, EventStream, Overflow, StreamStatistics, check_overflow
from .types import (
    SINK_ERROR_SCOPE,
    STREAM_END_SCOPE,
    DiagnosticEvent,
    Event,
    NodeEvent,
    is_sentinel,
)

if TYPE_CHECKING:
    # Types only: sinks sit above the runtime and import its event types.
    from ...sinks.base import Sink

__all__ = [
    "BusStatistics",
    "DiagnosticStream",
    "DiagnosticsConfig",
    "EventBus",
    "EventStream",
    "SinkDiagnostic",
    "SinkHealth",
    "StreamStatistics",
]

DEFAULT_CAPACITY = 1024
_new_object = object.__new__
(
    _,
    _,
    _set_scope,
    _set_message,
    _,
    _set_timestamp,
    _,
    _set_seq,
    _set_origin,
    _set_node_seq,
) = NodeEvent._slot_setters
# Under pressure a publisher yields once per this many events (see EventBus._pressure).
_YIELD_EVERY = 32
# What _deliver calls for each buffer, looked up once (a class attribute costs a lookup each time).
_put_plain = Buffer.put_plain
_put_kept = Buffer.put_kept


@attrs.frozen
class DiagnosticsConfig:
    """How sink failures are reported.

    Attributes:
        enabled: Publish each failure as a :class:`SinkDiagnostic` to ``bus.diagnostics()``
            streams. Health counters are kept either way.
        buffer_capacity: Buffer size of each diagnostics stream (``None``: the bus capacity).
        emit_to_events: Also publish each failure as a ``DiagnosticEvent(scope="sink.error")`` on
            the main stream (to every consumer except the sink that failed).
    """

    enabled: bool = True
    buffer_capacity: int | None = None
    emit_to_events: bool = False

    def __attrs_post_init__(self) -> None:
        if self.buffer_capacity is not None and self.buffer_capacity < 1:
            raise ValueError(
                f"DiagnosticsConfig buffer_capacity must be at least 1 or None, "
                f"not {self.buffer_capacity}"
            )


@attrs.frozen
class SinkHealth:
    """How one sink is doing.

    Attributes:
        sink: The sink's name.
        state: ``"pending"`` (bus not running yet), ``"running"``, ``"backing_off"`` (waiting to
            restart after a failure), ``"stopped"`` (the bus closed) or ``"failed"`` (too many
            failures: detached, receives nothing more).
        error_count: How many times the sink failed (each failing event is skipped).
        restarts: How many times it was restarted after a failure.
        dropped: Events it lost: evicted from its full buffer, or still buffered when it failed.
        last_error: ``"ExceptionType: message"`` of the latest failure.
        last_error_at: When that was, read from the bus clock (Unix seconds by default).
    """

    sink: str
    state: str
    error_count: int
    restarts: int
    dropped: int
    last_error: str | None
    last_error_at: float | None


@attrs.frozen
class SinkDiagnostic:
    """One sink failure, as streamed by ``bus.diagnostics()``; ``occurrence`` counts from 1."""

    sink: str
    error: str
    when: float
    occurrence: int


@attrs.frozen
class BusStatistics:
    """A snapshot of the bus: events published, consumers attached, whether it is closed."""

    published: int
    sinks: int
    subscribers: int
    closed: bool


class DiagnosticStream(BufferedStream[SinkDiagnostic]):
    """Sink failures as they happen (``bus.diagnostics()``); ends when the bus closes."""

    __slots__ = ()


@attrs.define(eq=False)
class _SinkSlot:
    """The bus's bookkeeping for one sink; touched only on the Trio thread.

    ``threaded``: the sink's ``handle`` is a plain method that is not marked ``inline``, so it is
    called in the sink's one worker thread (``limiter``), each call bounded by ``handle_timeout``.
    """

    sink: Sink
    name: str
    buffer: Buffer[Event]
    threaded: bool
    handle_timeout: float | None
    close_timeout: float
    limiter: trio.CapacityLimiter = attrs.Factory(lambda: trio.CapacityLimiter(1))
    state: str = "pending"
    opened: bool = False
    incarnations: int = 0
    error_count: int = 0
    delivered: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    finished: bool = False
    done: trio.Event = attrs.Factory(trio.Event)
    # Set once a serving sink's server first started, or failed to.
    ready: trio.Event = attrs.Factory(trio.Event)

    def health(self) -> SinkHealth:
        return SinkHealth(
            sink=self.name,
            state=self.state,
            error_count=self.error_count,
            restarts=max(self.incarnations - 1, 0),
            dropped=self.buffer.dropped,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
        )


async def _maybe_await(value: object) -> None:
    if inspect.isawaitable(value):
        await value


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _check_timeout(what: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        allowed = "a number of seconds > 0" + (" or None" if optional else "")
        raise ValueError(f"{what} must be {allowed}, not {value!r}")


class EventBus:
    """Fans every published event out to its sinks and subscribers.

    The bus stamps each event with its session id and a per-session sequence number (0, 1, 2… in
    the order the bus received them), then appends it to one bounded buffer per consumer. A sink
    is served by its own supervised actor that drains its buffer in batches; a subscriber
    (:meth:`subscribe`) reads its buffer through an :class:`EventStream`. When a buffer is full its
    oldest event is dropped and counted; sentinels (``STREAM_END``, ``INVOCATION_END``) are kept.

    Args:
        sinks: Where every event goes.
        capacity: Buffer size of each sink and subscriber (at least 1).
        diagnostics: How sink failures are reported.
        restart_policy: How failing sinks are restarted (default: at most 5 restarts in 10 s,
            with backoff from 0.1 s doubling up to 5 s), after which a sink is detached.
        clock: Where ``last_error_at`` and ``SinkDiagnostic.when`` are read (Unix seconds).
        handle_timeout: How long one ``handle`` call may take (seconds, ``None``: no limit) before
            it counts as a failure; a sink's own ``handle_timeout`` attribute overrides it.
        close_timeout: How long closing one sink may take at shutdown; a sink's own
            ``close_timeout`` attribute overrides it.

    A plain (sync) ``handle`` is called in a worker thread of its own sink, never on the Trio
    thread, so a slow or hung sink cannot slow the run; a hung call is abandoned at its timeout.
    Sinks whose sync ``handle`` is quick and must run on the Trio thread (it calls Trio) say so
    with ``inline = True``; an async ``handle`` runs on the Trio thread, its timeout a Trio one.
    """

    def __init__(
        self,
        sinks: Sequence[Sink] = (),
        *,
        capacity: int = DEFAULT_CAPACITY,
        diagnostics: DiagnosticsConfig = DiagnosticsConfig(),  # frozen, so sharing it is safe
        restart_policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.time,
        handle_timeout: float | None = 10.0,
        close_timeout: float = 5.0,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"EventBus capacity must be at least 1, not {capacity}")
        _check_timeout("handle_timeout", handle_timeout, optional=True)
        _check_timeout("close_timeout", close_timeout, optional=False)
        self._handle_timeout = handle_timeout
        self.capacity = capacity
        self.diagnostics_config = diagnostics
        self.restart_policy = restart_policy if restart_policy is not None else RestartPolicy()
        self._clock = clock
        self._close_timeout = close_timeout
        self._slots: list[_SinkSlot] = []
        # Buffers that get every event (sinks and unfiltered subscribers), and per-session ones.
        # Replaced, never mutated, so a fan-out loop never sees a change mid-way.
        self._targets: tuple[Buffer[Event], ...] = ()
        self._by_session: dict[str, tuple[Buffer[Event], ...]] = {}
        # For each session in _by_session, every buffer that gets its events (_targets first), so
        # a publish walks one tuple.
        self._routes: dict[str | None, tuple[Buffer[Event], ...]] = {}
        # Subscribers' buffers with overflow="block" (lossless): async publishers wait for them.
        self._blocking: tuple[Buffer[Event], ...] = ()
        self._diagnostic_buffers: tuple[Buffer[SinkDiagnostic], ...] = ()
        self._seqs: dict[str | None, int] = {}
        self._published = 0
        # Set by each publish: some buffer is over half full and the publisher should yield (see
        # _deliver: at once for a sink, once per _YIELD_EVERY events for a lagging subscriber).
        self._pressure = False
        self._pressured = 0
        self._subscribers = 0
        self._phase = "new"  # new -> running -> closed
        self._closing = False
        self._closed = trio.Event()
        self._run_done = trio.Event()
        self._nursery: trio.Nursery | None = None
        for sink in sinks:
            self._attach(sink)

    # -- consumers ---------------------------------------------------------------------------------

    def _attach(self, sink: Sink) -> _SinkSlot:
        if not callable(getattr(sink, "handle", None)):
            raise TypeError(
                f"{sink!r} is not a sink: give it a handle(event) method (and optionally a name)"
            )
        handle = sink.handle
        handle_timeout = getattr(sink, "handle_timeout", self._handle_timeout)
        close_timeout = getattr(sink, "close_timeout", self._close_timeout)
        _check_timeout(f"{sink_name(sink)}.handle_timeout", handle_timeout, optional=True)
        _check_timeout(f"{sink_name(sink)}.close_timeout", close_timeout, optional=False)
        slot = _SinkSlot(
            sink,
            sink_name(sink),
            Buffer(self.capacity, keep=is_sentinel),
            threaded=not (getattr(sink, "inline", False) or inspect.iscoroutinefunction(handle)),
            handle_timeout=handle_timeout,
            close_timeout=close_timeout,
        )
        self._slots.append(slot)
        self._set_targets((*self._targets, slot.buffer))
        return slot

    def _detach_buffer(self, buffer: Buffer[Event]) -> None:
        self._set_targets(tuple(b for b in self._targets if b is not buffer))

    def _set_targets(self, targets: tuple[Buffer[Event], ...]) -> None:
        self._targets = targets
        self._routes = {sid: (*targets, *subs) for sid, subs in self._by_session.items()}

    def _set_subscribers(self, session_id: str, subscribers: tuple[Buffer[Event], ...]) -> None:
        if subscribers:
            self._by_session[session_id] = subscribers
            self._routes[session_id] = (*self._targets, *subscribers)
        else:
            self._by_session.pop(session_id, None)
            self._routes.pop(session_id, None)

    async def add_sink(self, sink: Sink) -> None:
        """Attach another sink; it receives events published from now on.

        Raises:
            trio.ClosedResourceError: The bus is closed.
        """
        if self._closing:
            raise trio.ClosedResourceError("this event bus is closed: add sinks before closing it")
        slot = self._attach(sink)
        if self._nursery is not None:
            await self._nursery.start(self._sink_task, slot)
        else:
            await trio.lowlevel.checkpoint()

    def subscribe(
        self,
        *,
        session_id: str | None = None,
        capacity: int | None = None,
        overflow: Overflow = "drop_oldest",
    ) -> EventStream:
        """A stream of the events published from now on.

        Args:
            session_id: Only this session's events; the stream then ends right after the
                session's ``STREAM_END``. Without it the stream sees every session and ends when
                the bus closes.
            capacity: This stream's buffer size (default: the bus capacity).
            overflow: ``"drop_oldest"`` (the default) drops and counts the oldest events when the
                reader falls behind, and never slows a run. ``"block"`` loses nothing: the runs
                it sees wait for the reader once ``capacity`` events are unread (their nodes'
                ``ctx.emit`` and their next step wait). Read it from another task than the one
                driving those runs, or close it.
        """
        blocking = check_overflow(overflow) == "block"
        buffer: Buffer[Event] = Buffer(
            capacity or self.capacity,
            keep=is_sentinel,
            patient=True,
            blocking=blocking,
            session_id=session_id,
        )
        if self._closing:
            buffer.end()
            return EventStream(buffer)
        self._subscribers += 1
        if blocking:
            self._blocking = (*self._blocking, buffer)
        if session_id is None:
            self._set_targets((*self._targets, buffer))

            def unsubscribe() -> None:
                self._subscribers -= 1
                self._detach_buffer(buffer)
                self._unblock(buffer)

        else:
            self._set_subscribers(session_id, (*self._by_session.get(session_id, ()), buffer))

            def unsubscribe() -> None:
                self._subscribers -= 1
                remaining = tuple(
                    b for b in self._by_session.get(session_id, ()) if b is not buffer
                )
                self._set_subscribers(session_id, remaining)
                self._unblock(buffer)

        return EventStream(buffer, unsubscribe)

    def _unblock(self, buffer: Buffer[Event]) -> None:
        if buffer.blocking:
            self._blocking = tuple(b for b in self._blocking if b is not buffer)

    @property
    def lossless(self) -> bool:
        """Whether a subscriber with ``overflow="block"`` is attached (publishers may wait)."""
        return bool(self._blocking)

    async def wait_room(self, session_id: str | None) -> None:
        """Wait while a lossless (``overflow="block"``) subscriber that gets ``session_id``'s
        events has ``capacity`` of them unread; returns at once when there is none.

        The runtime calls it between steps, so that events published synchronously (lifecycle
        events, ``emit_nowait``) are held back too.
        """
        for buffer in self._blocking:
            if buffer.session_id is None or buffer.session_id == session_id:
                await buffer.wait_room()

    def _must_wait(self, session_id: str | None) -> bool:
        """Whether :meth:`wait_room` would wait now (without a coroutine per event to find out)."""
        for buffer in self._blocking:
            # buffer.full(), inline: this runs for every event while a lossless stream is open.
            if (
                len(buffer.items) >= buffer.capacity
                and not buffer.ended
                and (buffer.session_id is None or buffer.session_id == session_id)
            ):
                return True
        return False

    def diagnostics(self) -> DiagnosticStream:
        """A stream of the sink failures from now on; it ends when the bus closes."""
        config = self.diagnostics_config
        buffer: Buffer[SinkDiagnostic] = Buffer(config.buffer_capacity or self.capacity)
        if self._closing:
            buffer.end()
            return DiagnosticStream(buffer)
        self._diagnostic_buffers = (*self._diagnostic_buffers, buffer)

        def unsubscribe() -> None:
            self._diagnostic_buffers = tuple(b for b in self._diagnostic_buffers if b is not buffer)

        return DiagnosticStream(buffer, unsubscribe)

    @property
    def sinks(self) -> tuple[Sink, ...]:
        """The sinks, in the order they were given (failed ones included)."""
        return tuple(slot.sink for slot in self._slots)

    def sink_health(self) -> list[SinkHealth]:
        """The health of every sink, in the order they were given."""
        return [slot.health() for slot in self._slots]

    def statistics(self) -> BusStatistics:
        return BusStatistics(
            published=self._published,
            sinks=len(self._slots),
            subscribers=self._subscribers,
            closed=self._closing,
        )

    # -- publishing --------------------------------------------------------------------------------

    def publish_nowait(self, session_id: str | None, event: Event) -> Event:
        """Stamp ``event`` and hand it to every consumer; never waits, never fails for lack of one.

        The event keeps its own ``session_id`` if it has one, else takes ``session_id``; its
        ``seq`` is the next number of that session. Must be called on the Trio thread. After the
        bus closed the event is stamped and returned but delivered to no one.

        Returns:
            The stamped event (a copy; events are immutable).
        """
        sid = event.session_id
        if sid is None:
            sid = session_id
        seqs = self._seqs
        seq = seqs.get(sid, 0)
        seqs[sid] = seq + 1
        stamped = event.stamped(sid, seq)
        self._deliver(sid, stamped, is_sentinel(stamped))
        return stamped

    def publish_fresh_nowait(self, event: Event) -> bool:
        """Publish an event that nobody else holds yet, stamping its ``seq`` in place.

        For the runtime's own hot path (``ctx.emit``): the event was just built with its
        ``session_id`` set and has not been shared, so the copy :meth:`publish_nowait` makes to
        keep a caller's event unchanged is unnecessary.

        Returns:
            Whether an async publisher should now :meth:`settle` (a consumer is falling behind,
            or a lossless one is full).
        """
        sid = event.session_id
        seqs = self._seqs
        seq = seqs.get(sid, 0)
        seqs[sid] = seq + 1
        type(event)._set_seq(event, seq)
        # By type first: the runtime's events, node and LLM ones, are never sentinels.
        self._deliver(sid, event, type(event) is DiagnosticEvent and is_sentinel(event))
        return self._pressure or (bool(self._blocking) and self._must_wait(sid))

    def publish_emitted(
        self, origin: tuple[str, int, str, FrozenDict], scope: str, message: str, node_seq: int
    ) -> bool:
        """Build and publish the event of a ``ctx.emit`` without metadata of its own.

        The runtime's hottest path: ``origin`` is ``(node_id, step, session_id, metadata)``, shared
        by every event of one node execution (``metadata`` holds ``node_id`` and ``step``, the
        event's gets ``node_seq`` added); ``scope`` and ``message`` are ``str``. The event is built
        compact (see :class:`NodeEvent`), timestamped now, stamped and delivered at once.

        Returns:
            Like :meth:`publish_fresh_nowait`, whether an async publisher should :meth:`settle`.
        """
        sid = origin[2]
        seqs = self._seqs
        seq = seqs.get(sid, 0)
        seqs[sid] = seq + 1
        event = _new_object(NodeEvent)
        _set_origin(event, origin)
        _set_scope(event, scope)
        _set_message(event, message)
        _set_timestamp(event, time.time())
        _set_seq(event, seq)
        _set_node_seq(event, node_seq)
        self._deliver(sid, event, False)  # a NodeEvent is never a sentinel
        return self._pressure or (bool(self._blocking) and self._must_wait(sid))

    async def publish_fresh(self, event: Event) -> None:
        """:meth:`publish_fresh_nowait` with :meth:`publish`'s scheduling behaviour."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.publish_fresh_nowait(event):
            await self.settle(event.session_id)

    async def settle(self, session_id: str | None) -> None:
        """What an async publish does after delivering: yield to the consumers if one is over
        half full (see :meth:`publish`), and wait for room in a lossless subscriber's buffer."""
        if self._pressure:
            await trio.lowlevel.cancel_shielded_checkpoint()
        if self._blocking and self._must_wait(session_id):
            await self.wait_room(session_id)

    def _deliver(self, sid: str | None, stamped: Event, kept: bool) -> None:
        """Put ``stamped`` (a sentinel if ``kept``) in every buffer that gets ``sid``'s events."""
        self._published += 1
        put = _put_kept if kept else _put_plain
        # A sink actor over half full makes the publisher yield at once; a subscriber only every
        # _YIELD_EVERY events, since it may never read and must not tax every publish.
        urgent = lagging = False
        for buffer in self._routes.get(sid, self._targets):
            if put(buffer, stamped):
                if buffer.patient:
                    lagging = True
                else:
                    urgent = True
        # Checked for a sentinel first: a compact node event fills its fields on the first read.
        if kept and stamped.scope == STREAM_END_SCOPE and sid in self._by_session:
            # The session's stream is over: its subscribers end after this event.
            subscribers = self._by_session[sid]
            self._set_subscribers(sid, ())
            for buffer in subscribers:
                buffer.end()
        if urgent:
            self._pressure = True
        elif lagging:
            self._pressure = self._pressured % _YIELD_EVERY == 0
            self._pressured += 1
        else:
            self._pressure = False
            self._pressured = 0

    async def publish(self, session_id: str | None, event: Event) -> Event:
        """Like :meth:`publish_nowait`; a cancellation point that waits on no consumer but a
        lossless one.

        Backpressure: a full consumer buffer drops its oldest event instead of waiting, except a
        subscriber's with ``overflow="block"``, which this waits on while it is full.
        When a sink's buffer is more than half full, ``publish`` yields to the scheduler so a busy
        emitter lets the sink actors catch up (this costs no virtual time); for a subscriber's
        buffer it yields once per 32 events, so a reader that never reads cannot make every
        publish pay for a switch. Otherwise it does not switch tasks: a
        switch per event would cost more than delivering it.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        stamped = self.publish_nowait(session_id, event)
        await self.settle(stamped.session_id)
        return stamped

    # -- the actor ---------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The bus actor: start one supervised actor per sink (opening it), then serve.

        Use ``await nursery.start(bus.run)``; a bus runs once.

        Cancellation: cancelling it stops every sink actor at once (each sink is still closed,
        within ``close_timeout``); :meth:`aclose` is the graceful way, delivering what is buffered.
        Backpressure: none towards publishers; each sink drains its own bounded buffer.
        Errors: a failing sink never escapes; it is restarted with backoff and, past the restart
        policy's limit, marked ``failed`` and detached (see :meth:`sink_health`).
        """
        if self._phase != "new":
            raise RuntimeError(
                "this EventBus has already run or was closed: create a new bus for each runner"
            )
        self._phase = "running"
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for slot in self._slots:
                    await nursery.start(self._sink_task, slot)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._phase = "closed"
            self._run_done.set()

    async def _sink_task(self, slot: _SinkSlot, *, task_status: trio.TaskStatus[None]) -> None:
        """Supervise one sink's actor, then detach it if it failed and close it."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    functools.partial(
                        supervise,
                        f"sink {slot.name!r}",
                        functools.partial(self._sink_actor, slot),
                        policy=self.restart_policy,
                        escalate=False,
                        on_crash=functools.partial(self._on_crash, slot),
                    )
                )
                if callable(getattr(slot.sink, "serve", None)):
                    # A server's address is known once the bus runs (or its first start failed).
                    await slot.ready.wait()
                task_status.started()
            if not slot.finished:
                # The supervisor gave up: the sink is detached and its backlog dropped.
                slot.state = "failed"
                self._detach_buffer(slot.buffer)
                slot.buffer.discard()
            else:
                slot.state = "stopped"
        finally:
            if slot.state not in ("failed", "stopped"):
                slot.state = "stopped"
            # Cut short (the bus was cancelled, or its flush ran out of time): what the sink never
            # handled is lost, and counted.
            self._detach_buffer(slot.buffer)
            slot.buffer.discard()
            await self._close_sink(slot)
            slot.done.set()

    async def _sink_actor(self, slot: _SinkSlot) -> None:
        """Deliver one sink's buffer to it, a batch per wake-up, until the buffer ends."""
        slot.incarnations += 1
        slot.state = "running"
        sink = slot.sink
        if not slot.opened:
            opener = getattr(sink, "open", None)
            if opener is not None:
                await _maybe_await(opener())
            slot.opened = True
        serve = getattr(sink, "serve", None)
        if serve is None:
            await self._deliver_all(slot)
            return
        # A serving sink (a network server) runs its server beside the delivery loop, both in
        # this supervised actor, so a crash of either restarts both. It is closed while its
        # server still runs, so closing can finish its clients gracefully.
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(serve)
            finally:
                slot.ready.set()
            await self._deliver_all(slot)
            await self._close_sink(slot)
            nursery.cancel_scope.cancel()

    async def _deliver_all(self, slot: _SinkSlot) -> None:
        buffer = slot.buffer
        items = buffer.items
        deliver = self._deliver_threaded if slot.threaded else self._deliver_inline
        while True:
            await buffer.wait_readable()
            if not items:
                if buffer.ended:
                    break
                continue
            await deliver(slot)
        slot.finished = True

    async def _deliver_inline(self, slot: _SinkSlot) -> None:
        """Hand the buffered events to the sink on the Trio thread, awaiting what it returns."""
        handle = slot.sink.handle
        items = slot.buffer.items
        timeout = slot.handle_timeout
        delivered = 0
        try:
            while items:
                # Popped before handling, so an event that makes the sink fail is skipped.
                result = handle(items.popleft())
                if result is not None:
                    if timeout is None:
                        await result
                    else:
                        with trio.move_on_after(timeout) as scope:
                            await result
                        if scope.cancelled_caught:
                            raise SinkTimeout(slot.name, "handle", timeout)
                delivered += 1
        finally:
            slot.delivered += delivered

    async def _deliver_threaded(self, slot: _SinkSlot) -> None:
        """Hand the buffered events to the sink in its worker thread, one batch per call.

        An event whose ``handle`` raised or overran is skipped (it is the failure); the events
        after it go back to the front of the buffer for the restarted sink.
        """
        buffer = slot.buffer
        batch = list(buffer.items)
        buffer.items.clear()
        handle = slot.sink.handle
        calls = ThreadedCalls(
            [functools.partial(handle, event) for event in batch], slot.handle_timeout
        )
        try:
            await calls.run(slot.limiter)
        finally:
            done = calls.done
            slot.delivered += done
            failed = calls.error is not None or calls.timed_out
            rest = batch[done + 1 :] if failed else batch[done:]
            if rest:
                buffer.put_back(rest)
        if calls.error is not None:
            raise calls.error
        if calls.timed_out:
            assert slot.handle_timeout is not None
            raise SinkTimeout(slot.name, "handle", slot.handle_timeout)

    def _on_crash(self, slot: _SinkSlot, crash: ChildCrash) -> None:
        slot.ready.set()
        slot.state = "backing_off"
        slot.error_count += 1
        error = _describe(crash.error)
        when = self._clock()
        slot.last_error = error
        slot.last_error_at = when
        self._report(slot, error, when)

    def _report(self, slot: _SinkSlot, error: str, when: float) -> None:
        config = self.diagnostics_config
        if config.enabled:
            diagnostic = SinkDiagnostic(slot.name, error, when, slot.error_count)
            for buffer in self._diagnostic_buffers:
                buffer.put(diagnostic)
        if config.emit_to_events and not self._closing:
            event = DiagnosticEvent(
                SINK_ERROR_SCOPE,
                f"{slot.name}: {error}",
                FrozenDict({"sink": slot.name, "occurrence": slot.error_count}),
                when,
            )
            # Not to the sink that failed, or a sink failing on every event would feed itself.
            self._publish_except(event, slot.buffer)

    def _publish_except(self, event: Event, skip: Buffer[Event]) -> None:
        seq = self._seqs.get(None, 0)
        self._seqs[None] = seq + 1
        stamped = event.stamped(None, seq)
        self._published += 1
        for buffer in self._targets:
            if buffer is not skip:
                buffer.put(stamped)

    async def _close_sink(self, slot: _SinkSlot) -> None:
        closer = getattr(slot.sink, "close", None)
        if closer is None or not slot.opened:
            return
        slot.opened = False
        timeout = slot.close_timeout
        with trio.CancelScope(shield=True) as scope:
            try:
                if slot.threaded and not inspect.iscoroutinefunction(closer):
                    # Like handle, a plain close runs in the sink's thread, timed in wall-clock time.
                    calls = ThreadedCalls([closer], timeout, timed_from_now=True)
                    await calls.run(slot.limiter)
                    if calls.error is not None:
                        raise calls.error
                    if calls.timed_out:
                        raise SinkTimeout(slot.name, "close", timeout)
                else:
                    scope.relative_deadline = timeout
                    await _maybe_await(closer())
                    if scope.cancelled_caught:
                        raise SinkTimeout(slot.name, "close", timeout)
            except Exception as exc:
                # Shutdown goes on; the failure is reported like any other.
                slot.error_count += 1
                slot.last_error = _describe(exc)
                slot.last_error_at = self._clock()
                self._report(slot, slot.last_error, slot.last_error_at)

    # -- shutdown ----------------------------------------------------------------------------------

    async def aclose(self, *, flush_timeout: float = 5.0) -> None:
        """Deliver what is buffered (waiting at most ``flush_timeout``), close the sinks, end
        every stream. Idempotent; later publishes reach no one.

        Cancellation: if cancelled while flushing, the sink actors are cancelled too (each sink
        is still closed).
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        if self._phase == "new":
            self._phase = "closed"  # a bus closed before it ran never runs
            self._run_done.set()
        try:
            for slot in self._slots:
                slot.buffer.end()
            for buffer in self._targets:
                buffer.end()
            for subscribers in self._by_session.values():
                for buffer in subscribers:
                    buffer.end()
            self._by_session = {}
            self._routes = {}
            self._blocking = ()
            if self._phase == "running":
                with trio.move_on_after(flush_timeout):
                    for slot in self._slots:
                        await slot.done.wait()
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
            await self._run_done.wait()
        finally:
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
            self._set_targets(())
            for diagnostic_buffer in self._diagnostic_buffers:
                diagnostic_buffer.end()
            self._diagnostic_buffers = ()
            self._closed.set()

    def __repr__(self) -> str:
        names = ", ".join(slot.name for slot in self._slots)
        return f"EventBus(sinks=[{names}], capacity={self.capacity}, phase={self._phase!r})"
