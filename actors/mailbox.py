"""Mailboxes: bounded, named, typed channels between actors, with a stated policy when full.

``BLOCK`` mailboxes behave as ``trio.open_memory_channel`` does, built on trio's lowlevel wait in
fewer objects; ``DROP_OLDEST`` ones evict.
"""

from __future__ import annotations

import abc
import enum
from collections import deque
from collections.abc import Callable
from typing import ClassVar, Generic, Literal, Self, TypeAlias, TypeVar

import attrs
import outcome
import trio

from . import trap
from .closing import ClosesSynchronously
from .perturb import MailboxOp, Perturbation

T = TypeVar("T")

UndeliveredReason: TypeAlias = Literal["dropped", "stranded"]
"""Why a watched message left a mailbox without being received (see ``ask``)."""


class Overflow(enum.Enum):
    """What a mailbox does when a message arrives and its buffer is full."""

    BLOCK = "block"
    """``send()`` waits for room (backpressure); ``send_nowait()`` raises ``trio.WouldBlock``."""
    DROP_OLDEST = "drop_oldest"
    """``send()``/``send_nowait()`` never wait: the oldest buffered message is evicted, counted."""


@attrs.frozen
class MailboxStatistics:
    """A snapshot of one mailbox, shared by all its sender and receiver clones.

    ``sent``/``received`` count operations that completed (a ``send`` counts once it returns), so
    while a hand-off between two tasks is in flight they may briefly disagree with ``buffered``.
    Once the tasks are quiet, ``sent == received + buffered + dropped``; messages stranded after
    every receiver closed stay in ``buffered``.
    """

    name: str
    capacity: int
    overflow: Overflow
    buffered: int
    peak_buffered: int
    sent: int
    received: int
    dropped: int
    open_senders: int
    open_receivers: int
    waiting_senders: int
    waiting_receivers: int


@attrs.define(eq=False)
class _MailboxCore:
    """State shared by every clone of one mailbox: identity, counters and watched requests."""

    name: str
    capacity: int
    overflow: Overflow
    sent: int = 0
    received: int = 0
    dropped: int = 0
    # id(message) -> (message, callback) for requests whose asker must learn that the message was
    # evicted or stranded; holding the message keeps its id unique while it is watched.
    watched: dict[int, tuple[object, Callable[[UndeliveredReason], None]]] = attrs.Factory(dict)

    def op(self, op: Literal["send", "receive"]) -> MailboxOp:
        # Made when a perturbation asks, not kept: a parked actor's mailbox is visited by every
        # full garbage collection, and perturbations are installed in tests only.
        return MailboxOp(self.name, op)

    def undelivered(self, message: object, reason: UndeliveredReason) -> None:
        entry = self.watched.pop(id(message), None)
        if entry is not None:
            entry[1](reason)

    def strand_all(self) -> None:
        # Called when the last receiver closes: no watched message can be received any more. A
        # watched message still inside a blocked send() is told too; its send raises anyway.
        watched, self.watched = self.watched, {}
        for _message, callback in watched.values():
            callback("stranded")


def _closed(core: _MailboxCore, end: str) -> trio.ClosedResourceError:
    return trio.ClosedResourceError(
        f"this {end} of mailbox {core.name!r} is closed: use an open clone instead"
    )


def _broken(core: _MailboxCore) -> trio.BrokenResourceError:
    return trio.BrokenResourceError(
        f"mailbox {core.name!r} has no open receivers: the actor reading it has stopped"
    )


class _MailboxEnd(ClosesSynchronously):
    """What both ends of a mailbox hold: its shared core and the perturbation hook."""

    __slots__ = ("_core", "_perturb")

    def __init__(self, core: _MailboxCore, perturb: Perturbation | None) -> None:
        self._core = core
        self._perturb = perturb

    @property
    def name(self) -> str:
        """The mailbox name."""
        return self._core.name


class MailboxSender(_MailboxEnd, trio.abc.SendChannel[T]):
    """The sending end of a mailbox; clone it to give each producer its own end.

    A ``trio.abc.SendChannel``, so it fits wherever a channel is expected. Closing is synchronous:
    ``with sender:`` and ``async with sender:`` both close without a checkpoint, so leaving the
    block never replaces a real error with a pending ``Cancelled`` (the trio hazard of
    ``async with send_channel:``). The ``perturb`` hook, when installed, is awaited by ``send()``
    only, not by ``send_nowait()`` (which must stay synchronous).
    """

    __slots__ = ()

    @abc.abstractmethod
    def send_nowait(self, msg: T) -> None:
        """Send without waiting.

        Raises:
            trio.WouldBlock: A full ``BLOCK`` mailbox (``DROP_OLDEST`` evicts instead).
            trio.BrokenResourceError: Every receiver is closed.
            trio.ClosedResourceError: This end is closed.
        """

    async def post(self, msg: T) -> None:
        """Send, reaching a schedule point only when the message has to wait for room.

        ``send()`` is always a checkpoint, as trio's channels are; on an actor's hot path that costs
        a trip through the run loop for nothing when the mailbox has room and the sender is about to
        block on its next receive anyway. With a ``perturb`` hook installed ``post`` is exactly
        ``send()``, so interleaving tests still explore every schedule.
        """
        if self._perturb is None:
            try:
                self.send_nowait(msg)
            except trio.WouldBlock:
                pass
            else:
                return
        await self.send(msg)

    @abc.abstractmethod
    def clone(self) -> MailboxSender[T]:
        """Another sending end of the same mailbox; receivers see the end once all are closed."""

    @abc.abstractmethod
    def statistics(self) -> MailboxStatistics:
        """A snapshot of the mailbox."""

    def _watch(self, message: object, callback: Callable[[UndeliveredReason], None]) -> None:
        """Call ``callback`` if ``message`` is later evicted or stranded instead of received."""
        self._core.watched[id(message)] = (message, callback)

    def _unwatch(self, message: object) -> None:
        entry = self._core.watched.get(id(message))
        if entry is not None and entry[0] is message:
            del self._core.watched[id(message)]


class MailboxReceiver(_MailboxEnd, trio.abc.ReceiveChannel[T]):
    """The receiving end of a mailbox; ``async for msg in receiver`` ends at end-of-channel.

    Closing is synchronous, as for :class:`MailboxSender`. The ``perturb`` hook is awaited by
    ``receive()`` (and so by ``async for``) only, not by ``receive_nowait()``/``drain_nowait()``.
    """

    __slots__ = ()

    @abc.abstractmethod
    def receive_nowait(self) -> T:
        """Receive without waiting.

        Raises:
            trio.WouldBlock: Nothing is buffered.
            trio.EndOfChannel: Nothing is buffered and every sender is closed.
            trio.ClosedResourceError: This end is closed.
        """

    @abc.abstractmethod
    def drain_nowait(self, limit: int | None = None) -> list[T]:
        """Everything receivable right now (at most ``limit`` messages), oldest first; never waits.

        Meant for batching after a ``receive()``. It returns ``[]`` rather than raising
        ``EndOfChannel`` so that a batch already received is never lost; the next ``receive()``
        reports the end.

        Raises:
            ValueError: ``limit`` is negative.
            trio.ClosedResourceError: This end is closed.
        """

    @abc.abstractmethod
    def clone(self) -> MailboxReceiver[T]:
        """Another receiving end; each message goes to exactly one of the clones."""

    @abc.abstractmethod
    def statistics(self) -> MailboxStatistics:
        """A snapshot of the mailbox."""


def _check_limit(limit: int | None) -> int:
    if limit is None:
        return -1
    if limit < 0:
        raise ValueError(f"drain limit must be >= 0 or None, not {limit}")
    return limit


# -- BLOCK: trio memory channel semantics, on trio's lowlevel wait -------------------------------
#
# The same behaviour as ``trio.open_memory_channel`` (and tested as such), in fewer objects: a
# node actor parks on its mailbox for as long as its session lives, and often long after, so each
# object of a parked receive is one more for every full garbage collection to visit, thousands of
# times over in a wide graph. Trio's pair keeps 8 objects and its parked receive 9 more; here a
# mailbox is its core and two ends, and a receive parked alone its coroutine and one generator
# (``actors.trap``). The buffer is made only when needed; the queues of waiters stay empty dicts,
# which the garbage collector does not track.


@attrs.define(eq=False)
class _BlockCore(_MailboxCore, Generic[T]):
    # Made when a message is first buffered: a node's inbox hands its messages straight to its
    # parked actor, and never needs one.
    data: deque[T] | None = None
    # Tasks parked in receive() / send(), oldest first. Plain dicts: an empty one is not tracked
    # by the garbage collector, and a parked receiver leaves ``senders`` empty.
    receivers: dict[trio.lowlevel.Task, _Waiter] = attrs.Factory(dict)
    senders: dict[trio.lowlevel.Task, _Waiter] = attrs.Factory(dict)
    # The first receiver to park while none waits takes this slot instead of ``receivers``, with
    # no waiter: the core is its abort function (see ``actors.trap``). Whoever holds the slot
    # parked before everyone in ``receivers``.
    parked: trio.lowlevel.Task | None = None
    parked_end: object = None
    open_senders: int = 0
    open_receivers: int = 0
    peak_buffered: int = 0

    def __call__(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        """Abort the receive parked in the slot (trio calls this only while it is parked)."""
        self.parked = self.parked_end = None
        return trio.lowlevel.Abort.SUCCEEDED

    def wake_receiver(self) -> trio.lowlevel.Task | None:
        """Take the longest-parked receiver off its queue, if one is parked."""
        task = self.parked
        if task is not None:
            self.parked = self.parked_end = None
            return task
        if self.receivers:
            return _wake_first(self.receivers).task
        return None

    def buffer(self) -> deque[T]:
        if self.data is None:
            self.data = deque()
        return self.data

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            name=self.name,
            capacity=self.capacity,
            overflow=self.overflow,
            buffered=len(self.data or ()),
            peak_buffered=self.peak_buffered,
            sent=self.sent,
            received=self.received,
            dropped=self.dropped,
            open_senders=self.open_senders,
            open_receivers=self.open_receivers,
            waiting_senders=len(self.senders),
            waiting_receivers=len(self.receivers) + (self.parked is not None),
        )


class _Waiter:
    """A task parked on one end (with the message it sends, for a sender); its own abort function."""

    __slots__ = ("end", "msg", "queue", "task")

    def __init__(
        self,
        end: object,
        task: trio.lowlevel.Task,
        queue: dict[trio.lowlevel.Task, _Waiter],
        msg: object = None,
    ) -> None:
        self.end = end
        self.task = task
        self.queue = queue
        self.msg = msg

    def __call__(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        del self.queue[self.task]
        return trio.lowlevel.Abort.SUCCEEDED


def _wake_first(queue: dict[trio.lowlevel.Task, _Waiter]) -> _Waiter:
    task = next(iter(queue))
    return queue.pop(task)


class _BlockEnd(_MailboxEnd, Generic[T]):
    """What both ends of a blocking mailbox share: the core, their own closed flag, cloning."""

    __slots__ = ("_closed", "_state")
    _END: ClassVar[str]

    def __init__(self, state: _BlockCore[T], perturb: Perturbation | None) -> None:
        super().__init__(state, perturb)
        self._state = state
        self._closed = False

    @trio.lowlevel.enable_ki_protection
    def clone(self) -> Self:
        if self._closed:
            raise _closed(self._state, self._END)
        return type(self)(self._state, self._perturb)

    def statistics(self) -> MailboxStatistics:
        return self._state.statistics()

    def _wake_own(self, queue: dict[trio.lowlevel.Task, _Waiter]) -> None:
        """Wake the tasks parked on this end (which is closing) with ClosedResourceError."""
        for task in [task for task, waiter in queue.items() if waiter.end is self]:
            del queue[task]
            trio.lowlevel.reschedule(task, outcome.Error(_closed(self._state, self._END)))


class _BlockSender(_BlockEnd[T], MailboxSender[T]):
    __slots__ = ()
    _END = "sender"

    def __init__(self, state: _BlockCore[T], perturb: Perturbation | None) -> None:
        super().__init__(state, perturb)
        state.open_senders += 1

    @trio.lowlevel.enable_ki_protection
    async def send(self, msg: T) -> None:
        if self._perturb is not None:
            await self._perturb(self._core.op("send"))
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.send_nowait(msg)
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        task = trio.lowlevel.current_task()
        senders = self._state.senders
        waiter = senders[task] = _Waiter(self, task, senders, msg)
        await trio.lowlevel.wait_task_rescheduled(waiter)
        self._state.sent += 1

    @trio.lowlevel.enable_ki_protection
    def send_nowait(self, msg: T) -> None:
        if self._closed:
            raise _closed(self._state, "sender")
        state = self._state
        if not state.open_receivers:
            raise _broken(state)
        task = state.wake_receiver()
        if task is not None:
            # Hand over directly: a waiting receiver means the buffer is empty.
            state.sent += 1
            state.received += 1
            if state.watched:
                state.watched.pop(id(msg), None)
            trio.lowlevel.reschedule(task, outcome.Value(msg))
            return
        if len(state.data or ()) >= state.capacity:
            raise trio.WouldBlock
        data = state.buffer()
        data.append(msg)
        state.sent += 1
        if len(data) > state.peak_buffered:
            state.peak_buffered = len(data)

    @trio.lowlevel.enable_ki_protection
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        state = self._state
        self._wake_own(state.senders)
        state.open_senders -= 1
        if state.open_senders == 0:
            while (task := state.wake_receiver()) is not None:
                trio.lowlevel.reschedule(task, outcome.Error(trio.EndOfChannel()))


class _BlockReceiver(_BlockEnd[T], MailboxReceiver[T]):
    __slots__ = ()
    _END = "receiver"
    # Trio drops what is buffered when the last receiver closes; a drop-oldest mailbox keeps it
    # (counted in ``buffered``, see MailboxStatistics).
    _CLEARS_WHEN_LAST_CLOSES: ClassVar[bool] = True

    def __init__(self, state: _BlockCore[T], perturb: Perturbation | None) -> None:
        super().__init__(state, perturb)
        state.open_receivers += 1

    @trio.lowlevel.enable_ki_protection
    async def receive(self) -> T:
        if self._perturb is not None:
            await self._perturb(self._core.op("receive"))
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            msg = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return msg
        task = trio.lowlevel.current_task()
        state = self._state
        # The sender reschedules us with exactly one T (or an error outcome).
        if state.parked is None and not state.receivers:
            state.parked, state.parked_end = task, self
            return await trap.wait(state)  # type: ignore[no-any-return]
        waiter = state.receivers[task] = _Waiter(self, task, state.receivers)
        return await trio.lowlevel.wait_task_rescheduled(waiter)  # type: ignore[no-any-return]

    @trio.lowlevel.enable_ki_protection
    def receive_nowait(self) -> T:
        if self._closed:
            raise _closed(self._state, "receiver")
        state = self._state
        if state.senders:
            # A parked sender's message joins the buffer (behind what was there) and it returns.
            waiter = _wake_first(state.senders)
            state.buffer().append(waiter.msg)  # type: ignore[arg-type]
            trio.lowlevel.reschedule(waiter.task)
        data = state.data
        if data:
            msg = data.popleft()
            state.received += 1
            if state.watched:
                state.watched.pop(id(msg), None)
            return msg
        if not state.open_senders:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    def drain_nowait(self, limit: int | None = None) -> list[T]:
        remaining = _check_limit(limit)
        batch: list[T] = []
        while remaining != 0:
            try:
                batch.append(self.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            remaining -= 1
        return batch

    @trio.lowlevel.enable_ki_protection
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        state = self._state
        if state.parked_end is self:
            task = state.wake_receiver()
            assert task is not None
            trio.lowlevel.reschedule(task, outcome.Error(_closed(state, self._END)))
        self._wake_own(state.receivers)
        state.open_receivers -= 1
        if state.open_receivers == 0:
            senders, state.senders = state.senders, {}
            for task in senders:
                trio.lowlevel.reschedule(task, outcome.Error(_broken(state)))
            if self._CLEARS_WHEN_LAST_CLOSES and state.data:
                state.data.clear()
            if state.watched:
                state.strand_all()


# -- DROP_OLDEST: a BLOCK mailbox whose sends never wait: the oldest buffered message is evicted --


class _DropOldestSender(_BlockSender[T]):
    __slots__ = ()

    async def send(self, msg: T) -> None:
        if self._perturb is not None:
            await self._perturb(self._core.op("send"))
        await trio.lowlevel.checkpoint_if_cancelled()
        self.send_nowait(msg)
        await trio.lowlevel.cancel_shielded_checkpoint()

    @trio.lowlevel.enable_ki_protection
    def send_nowait(self, msg: T) -> None:
        state = self._state
        data = state.data
        # A full buffer has no receiver waiting: make room for ``msg``, if it can be sent at all.
        if data and len(data) >= state.capacity and not self._closed and state.open_receivers:
            evicted = data.popleft()
            state.dropped += 1
            if state.watched:
                state.undelivered(evicted, "dropped")
        super().send_nowait(msg)


class _DropOldestReceiver(_BlockReceiver[T]):
    __slots__ = ()
    _CLEARS_WHEN_LAST_CLOSES = False


# Written as a class, like trio.open_memory_channel, so that ``open_mailbox[Msg](8, name="x")``
# type-checks.
class open_mailbox(tuple[MailboxSender[T], MailboxReceiver[T]]):
    """Open a named mailbox: a bounded channel with a stated policy when full.

    Use ``tx, rx = open_mailbox[Msg](8, name="node:plan")``. Hand producers ``tx.clone()``s and
    close every end you own (``with rx:``). Receivers see ``trio.EndOfChannel`` once every sender is
    closed and the buffer is drained; senders get ``trio.BrokenResourceError`` once every receiver
    is closed; using a closed end raises ``trio.ClosedResourceError``.

    Args:
        capacity: Messages buffered before the overflow policy applies; ``>= 0`` for ``BLOCK`` (0 is
            a rendezvous), ``>= 1`` for ``DROP_OLDEST``.
        name: Names the mailbox in statistics, errors and perturbation hooks.
        overflow: ``Overflow.BLOCK`` (backpressure) or ``Overflow.DROP_OLDEST`` (evict and count).
        perturb: Awaited before every ``send()``/``receive()`` to perturb scheduling in tests; the
            ``_nowait`` methods never await it. ``None`` costs a single ``is not None`` check.

    Returns:
        ``(sender, receiver)``: data flows left to right.

    Raises:
        ValueError: The capacity is invalid for the policy.
    """

    def __new__(  # type: ignore[misc]  # returns a plain tuple, like trio.open_memory_channel
        cls,
        capacity: int,
        *,
        name: str,
        overflow: Overflow = Overflow.BLOCK,
        perturb: Perturbation | None = None,
    ) -> tuple[MailboxSender[T], MailboxReceiver[T]]:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"mailbox {name!r}: capacity must be an int, not {capacity!r}")
        if overflow is Overflow.BLOCK:
            if capacity < 0:
                raise ValueError(f"mailbox {name!r}: capacity must be >= 0, not {capacity}")
            # Not _BlockCore[T](...): calling a subscripted class costs ~1 µs a mailbox.
            core: _BlockCore[T] = _BlockCore(name, capacity, overflow)
            return _BlockSender(core, perturb), _BlockReceiver(core, perturb)
        if overflow is Overflow.DROP_OLDEST:
            if capacity < 1:
                raise ValueError(
                    f"mailbox {name!r}: a drop-oldest mailbox needs capacity >= 1, not {capacity}"
                )
            state: _BlockCore[T] = _BlockCore(name, capacity, overflow)
            return _DropOldestSender(state, perturb), _DropOldestReceiver(state, perturb)
        raise TypeError(f"mailbox {name!r}: overflow must be an Overflow, not {overflow!r}")

    def __init__(
        self,
        capacity: int,
        *,
        name: str,
        overflow: Overflow = Overflow.BLOCK,
        perturb: Perturbation | None = None,
    ) -> None: ...
