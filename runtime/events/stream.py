"""Bounded buffers (drop-oldest, or blocking for lossless streams) and the streams that read them
(:class:`EventStream`). Each sink and subscriber of the bus owns one, so a slow reader only loses
its own events, or, with ``overflow="block"``, holds back the run it asked to hold back."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, Literal, TypeVar

import attrs
import trio

from ...actors.cancel_point import run_context
from ...actors.closing import ClosesSynchronously
from .types import Event

T = TypeVar("T")

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled

YIELD_EVERY = 64
"""A stream reading buffered items yields to the scheduler at least once per this many."""

__all__ = ["OVERFLOW_POLICIES", "BufferedStream", "EventStream", "Overflow", "StreamStatistics"]

Overflow = Literal["drop_oldest", "block"]
OVERFLOW_POLICIES: tuple[Overflow, ...] = ("drop_oldest", "block")


def check_overflow(value: object) -> Overflow:
    """``value`` if it is an overflow policy; a ``ValueError`` naming the choices otherwise."""
    if value == "drop_oldest":
        return "drop_oldest"
    if value == "block":
        return "block"
    raise ValueError(f"overflow must be 'drop_oldest' or 'block', not {value!r}")


@attrs.define(eq=False)
class Buffer(Generic[T]):
    """A bounded FIFO read by one task; when full the oldest item that may be evicted goes.

    ``keep`` marks items that are never evicted (stream sentinels). When every buffered item is
    one, the oldest of those goes after all, which takes ``capacity`` unread sentinels; so the
    buffer never holds more than ``capacity`` items.

    A ``blocking`` buffer never evicts: :meth:`put` still never waits (it may run past
    ``capacity`` by what synchronous publishers add), and async publishers wait in
    :meth:`wait_room` until the reader has brought it under ``capacity`` again.

    Not thread-safe: every method runs on the Trio thread.
    """

    capacity: int
    keep: Callable[[T], bool] | None = None
    items: deque[T] = attrs.Factory(deque)
    dropped: int = 0
    ended: bool = False
    """No more items will arrive; readers see the end once ``items`` is empty."""
    patient: bool = False
    """Read by a task that may fall behind for good (a subscriber), not by a sink actor."""
    blocking: bool = False
    """Never drops (``overflow="block"``): publishers wait for room instead."""
    session_id: str | None = None
    """The one session whose events this buffer gets, if it is filtered."""
    _waiter: trio.lowlevel.Task | None = None
    _high_water: int = attrs.field(init=False, default=0)
    # Whether an item that keep protects may be buffered: set as one is put, cleared once the
    # buffer is found empty. While it is clear, a full buffer evicts its oldest item without asking
    # keep (the usual case: a reader that fell behind makes every put evict).
    _kept: bool = attrs.field(init=False, default=False)
    # Publishers waiting for room in a blocking buffer.
    _room: trio.lowlevel.ParkingLot | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"buffer capacity must be at least 1, not {self.capacity}")
        self._high_water = self.capacity // 2
        if self.blocking:
            self._room = trio.lowlevel.ParkingLot()

    def put(self, item: T) -> bool:
        """Append ``item``, evicting one if full, and wake the reader; never waits.

        Returns:
            Whether the buffer is more than half full, a hint that the publisher should let
            the reader run.
        """
        if self.keep is not None and self.keep(item):
            return self.put_kept(item)
        return self.put_plain(item)

    def put_kept(self, item: T) -> bool:
        """:meth:`put` for an item the publisher knows ``keep`` protects (a sentinel)."""
        hint = self.put_plain(item)
        if not self.ended:
            self._kept = True
        return hint

    def put_plain(self, item: T) -> bool:
        """:meth:`put` for an item the publisher knows ``keep`` does not protect, so that it asks
        once per item rather than once per buffer."""
        if self.ended:
            return False
        items = self.items
        if self._kept and not items:
            self._kept = False
        items.append(item)
        size = len(items)
        if size > self.capacity and not self.blocking:
            if self._kept:
                self._evict()
            else:
                items.popleft()
                self.dropped += 1
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)
        return size > self._high_water

    def _evict(self) -> None:
        items = self.items
        keep = self.keep
        self.dropped += 1
        if keep is None or not keep(items[0]):
            items.popleft()
            return
        for index, item in enumerate(items):
            if not keep(item):
                del items[index]
                return
        items.popleft()

    def put_back(self, items: list[T]) -> None:
        """Return ``items`` (taken but not handled) to the front, in order; never waits.

        If the buffer is then over capacity its oldest items are dropped and counted, as in
        :meth:`put`. Works after :meth:`end` too, so :meth:`discard` can count them.
        """
        self.items.extendleft(reversed(items))
        if items:
            self._kept = True  # which of them keep protects is asked only if one must go
        while len(self.items) > self.capacity:
            self._evict()

    def end(self) -> None:
        """Mark the end of input; a waiting reader wakes and sees it after the buffered items,
        and publishers waiting for room stop waiting."""
        self.ended = True
        self.wake()
        if self._room is not None:
            self._room.unpark_all()

    def full(self) -> bool:
        """A blocking buffer that publishers must wait on before adding more."""
        return self.blocking and not self.ended and len(self.items) >= self.capacity

    async def wait_room(self) -> None:
        """Wait until a blocking buffer is under capacity (or ended); not a checkpoint when it
        already is."""
        room = self._room
        while room is not None and self.full():
            await room.park()

    def taken(self) -> None:
        """The reader took items: once it has read the buffer down to half full, wake the
        publishers waiting for room (all at once, so that they and the reader each run in
        batches instead of taking turns event by event)."""
        room = self._room
        if room is not None and len(self.items) <= self._high_water and room:
            room.unpark_all()

    def discard(self) -> int:
        """Drop everything buffered (counted in ``dropped``) and end; returns how many went."""
        count = len(self.items)
        self.dropped += count
        self.items.clear()
        self.end()
        return count

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    async def wait_readable(self) -> None:
        """Wait until an item is buffered or the input ended; always a checkpoint.

        Raises:
            trio.BusyResourceError: Another task is already waiting on this buffer.
        """
        if self.items or self.ended:
            await trio.lowlevel.checkpoint()
            return
        if self._waiter is not None:
            raise trio.BusyResourceError("another task is already reading this event stream")
        self._waiter = trio.lowlevel.current_task()

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            self._waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


@attrs.frozen
class StreamStatistics:
    """A snapshot of one stream: how full its buffer is and how much it lost."""

    capacity: int
    buffered: int
    dropped: int
    ended: bool
    closed: bool


class BufferedStream(ClosesSynchronously, trio.abc.ReceiveChannel[T]):
    """The reading end of one bus buffer; a ``trio.abc.ReceiveChannel``.

    ``async for item in stream`` ends at the end of the stream. Only one task may read at a time.
    Closing (``close()``, ``with stream:``, ``async with stream:``) unsubscribes at once and drops
    what is still buffered; reading a closed stream raises ``trio.ClosedResourceError``.
    """

    __slots__ = ("_buffer", "_closed", "_on_close", "_streak")

    def __init__(self, buffer: Buffer[T], on_close: Callable[[], None] | None = None) -> None:
        self._buffer = buffer
        self._on_close = on_close
        self._closed = False
        self._streak = 0

    @property
    def dropped(self) -> int:
        """How many items this stream lost because its buffer was full."""
        return self._buffer.dropped

    def statistics(self) -> StreamStatistics:
        buffer = self._buffer
        return StreamStatistics(
            capacity=buffer.capacity,
            buffered=len(buffer.items),
            dropped=buffer.dropped,
            ended=buffer.ended,
            closed=self._closed,
        )

    def receive_nowait(self) -> T:
        """The next item without waiting.

        Raises:
            trio.WouldBlock: Nothing is buffered yet.
            trio.EndOfChannel: The stream ended and everything was read.
            trio.ClosedResourceError: This stream was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("this event stream is closed")
        buffer = self._buffer
        if buffer.items:
            item = buffer.items.popleft()
            if buffer.blocking:
                buffer.taken()
            return item
        if buffer.ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> T:
        """The next item, waiting for one.

        Always a cancellation point. While items are buffered it hands them out without a
        context switch (yielding once every :data:`YIELD_EVERY` items): a reader never runs
        ahead of its bounded buffer, and a switch per event would cost more than the event.

        Raises:
            trio.EndOfChannel: The stream ended and everything was read.
            trio.ClosedResourceError: This stream was closed.
        """
        buffer = self._buffer
        if buffer.items and not self._closed and self._streak < YIELD_EVERY:
            await trio.lowlevel.checkpoint_if_cancelled()
            return self._pop()
        return await self._wait_and_receive()

    async def __anext__(self) -> T:
        # receive()'s fast path again: ``async for`` takes most events without a second
        # coroutine per event.
        buffer = self._buffer
        items = buffer.items
        if items and not self._closed and self._streak < YIELD_EVERY:
            # checkpoint_if_cancelled(), without a coroutine (see actors.cancel_point).
            task = run_context.task
            if task._cancel_status.effectively_cancelled or task is task._runner.main_task:
                await _checkpoint_if_cancelled()  # raises what is pending
            else:
                task._cancel_points += 1
            # _pop(), inline: this runs for every event a stream reads.
            self._streak += 1
            item = items.popleft()
            if buffer.blocking:
                buffer.taken()
            return item
        try:
            return await self._wait_and_receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def _pop(self) -> T:
        self._streak += 1
        buffer = self._buffer
        item = buffer.items.popleft()
        if buffer.blocking:
            buffer.taken()
        return item

    async def _wait_and_receive(self) -> T:
        self._streak = 0
        buffer = self._buffer
        while True:
            await buffer.wait_readable()
            try:
                return self.receive_nowait()
            except trio.WouldBlock:
                continue

    async def next_timeout(self, seconds: float) -> T | None:
        """The next item, or ``None`` if none arrives within ``seconds`` or the stream ended."""
        with trio.move_on_after(seconds):
            try:
                return await self.receive()
            except trio.EndOfChannel:
                return None
        return None

    def _receive_batch(self) -> list[T]:
        buffer = self._buffer
        batch = list(buffer.items)
        buffer.items.clear()
        if buffer.blocking:
            buffer.taken()
        return batch

    async def _next_batch(self) -> list[T]:
        try:
            first = await self.receive()
        except trio.EndOfChannel:
            return []
        batch = self._receive_batch()
        batch.insert(0, first)
        return batch

    def blocking_iter(self, *, trio_token: trio.lowlevel.TrioToken | None = None) -> Iterator[T]:
        """Iterate from a worker thread (started with ``trio.to_thread.run_sync``, or pass the
        ``trio_token``); each hop to the Trio thread takes everything buffered at once.

        The iterator ends when the stream ends.
        """
        while True:
            batch = trio.from_thread.run(self._next_batch, trio_token=trio_token)
            if not batch:
                return
            yield from batch

    def close(self) -> None:
        """Unsubscribe and drop what is buffered (idempotent, not a checkpoint)."""
        if self._closed:
            return
        self._closed = True
        self._buffer.items.clear()
        self._buffer.end()
        if self._on_close is not None:
            self._on_close()


class EventStream(BufferedStream[Event]):
    """Events of a bus subscription (``bus.subscribe()`` / ``runner.event_stream()``).

    A subscriber sees events published after it subscribed. A stream for one session ends right
    after that session's ``STREAM_END``; an unfiltered stream ends when the bus closes. When the
    reader falls behind, the oldest events are dropped and counted in :attr:`dropped`; sentinels
    (``STREAM_END``, ``INVOCATION_END``) are kept. A stream subscribed with ``overflow="block"``
    loses nothing: the runs it sees wait for its reader instead (closing it lets them go on).
    """

    __slots__ = ()
