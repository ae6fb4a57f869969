"""Calling sinks: their names, and sync calls in a worker thread bounded by a wall-clock timeout.

A thread cannot be interrupted: a call that overruns its timeout is abandoned (it runs on to its end
in the background, still holding the sink's one worker slot) and reported as :class:`SinkTimeout`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import attrs
import trio

from ...actors.errors import TreadleError


def sink_name(sink: object) -> str:
    """The sink's ``name``, or its class name when it has none."""
    name = getattr(sink, "name", None)
    return name if isinstance(name, str) and name else type(sink).__name__


class SinkTimeout(TreadleError, TimeoutError):
    """One call into a sink (``handle`` or ``close``) took longer than its timeout."""

    def __init__(self, sink: str, call: str, timeout: float) -> None:
        self.sink = sink
        self.call = call
        self.timeout = timeout
        super().__init__(
            f"sink {sink!r}: {call} did not return within {timeout:g} s; it was abandoned "
            "(raise the sink's timeout if it is only slow)"
        )


@attrs.define(eq=False)
class ThreadedCalls:
    """Calls made one after another in a worker thread while a watcher thread times each one.

    The worker and the watcher share this record under a lock; the Trio side reads the outcome once
    both are done or abandoned.

    Attributes:
        done: How many calls returned in time; final once the calls are over.
        error: What the call after the ``done`` ones raised, if one did.
        timed_out: The call after the ``done`` ones (or the wait for the worker slot) overran.
    """

    calls: Sequence[Callable[[], object]]
    timeout: float | None
    # Whether waiting for the sink's worker slot counts against the timeout: for close, so that
    # shutdown stays bounded even while an abandoned handle call still holds the slot.
    timed_from_now: bool = False
    done: int = 0
    error: Exception | None = None
    timed_out: bool = False
    _started: float | None = None
    _over: bool = False
    _lock: threading.Condition = attrs.field(factory=threading.Condition)

    def __attrs_post_init__(self) -> None:
        if self.timed_from_now:
            self._started = time.monotonic()

    def _work(self) -> None:
        lock = self._lock
        for call in self.calls:
            with lock:
                if self._over:
                    return
                self._started = time.monotonic()
                lock.notify_all()
            try:
                call()
            except Exception as exc:
                with lock:
                    if not self._over:
                        self.error = exc
                break
            with lock:
                # Once the calls are over (timed out or abandoned) the count is final: a call that
                # returns after that is the one reported as overrunning. (A method, because the
                # watcher thread changes the flag while the call runs.)
                if self._ended():
                    return
                self.done += 1
        self.stop()

    def _watch(self) -> bool:
        """Wait in a thread until the calls end (``False``) or one overruns (``True``)."""
        assert self.timeout is not None
        lock = self._lock
        with lock:
            while not self._over:
                if self._started is None:
                    lock.wait()  # the worker has not started a call yet
                    continue
                remaining = self._started + self.timeout - time.monotonic()
                if remaining <= 0:
                    self._over = True
                    return True
                lock.wait(remaining)
        return False

    def _ended(self) -> bool:
        return self._over

    def stop(self) -> None:
        """End both threads: the worker after its current call, the watcher at once."""
        with self._lock:
            self._over = True
            self._lock.notify_all()

    async def run(self, limiter: trio.CapacityLimiter) -> None:
        """Make the calls in a worker thread of ``limiter``; return when they end or time out.

        The waits are in wall-clock time, whatever clock Trio runs on, so a mock clock that jumps
        while the worker is busy cannot time a call out.

        Cancellation: abandons both threads (the worker stops after its current call).
        """
        try:
            async with trio.open_nursery() as nursery:

                async def work() -> None:
                    await trio.to_thread.run_sync(
                        self._work, limiter=limiter, abandon_on_cancel=True
                    )
                    nursery.cancel_scope.cancel()

                async def watch() -> None:
                    if await trio.to_thread.run_sync(self._watch, abandon_on_cancel=True):
                        self.timed_out = True
                        nursery.cancel_scope.cancel()

                nursery.start_soon(work)
                if self.timeout is not None:
                    nursery.start_soon(watch)
        finally:
            self.stop()
