"""One worker thread per storage connection: the blocking driver lives there, never on the Trio thread.

The thread is a single ``trio.to_thread.run_sync`` call behind the connection's own
``CapacityLimiter(1)``, for as long as the connection is open: it opens the connection, runs the
calls handed to it one at a time and in order, and closes the connection when it stops. A call costs
one thread wake-up each way: the thread sleeps in ``recv`` on one socket pair until a job is queued,
and the waiting task sleeps in ``wait_readable`` on another until the answer is in, so no other task
has to run in between. The connection never changes threads (sqlite3's rule).
"""

from __future__ import annotations

import socket
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

import outcome
import trio

from ..errors import CheckpointerError

C = TypeVar("C")
T = TypeVar("T")


class _Job(Generic[T]):
    __slots__ = ("fn", "result")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.result: outcome.Outcome[T] | None = None


_STOP: Final = None
"""Queued to end the thread: jobs queued before it still run."""


class ConnectionThread(Generic[C]):
    """The worker thread that owns one blocking connection, from opening to closing.

    Start it with ``conn = await nursery.start(thread.run)``: ``connect()`` runs in the new thread and
    its connection (or its exception) is what ``start`` returns (or raises). Then ``await
    thread.call(fn)`` runs ``fn()`` in that thread; :meth:`aclose` stops the thread and waits for it.
    Whatever stops the thread, ``disconnect(conn)`` runs in it last.

    Args:
        name: The thread's name (shown by debuggers and ``ps -L``).
        connect: Opens the connection; runs in the thread.
        disconnect: Closes it (after any last cleanup); runs in the thread. Its errors are swallowed:
            the thread is ending anyway.
        interrupt: Asks the driver to abandon the job in hand (``conn.cancel()``,
            ``conn.interrupt()``); called from the Trio thread when a call is cancelled.
        cancel_grace: Seconds a cancelled call, or :meth:`aclose`, waits for the job in hand.

    Cancellation:
        A cancelled call asks the driver to stop the job in hand (``interrupt``: the server is told
        to cancel the statement), then waits for the job at most ``cancel_grace`` seconds: a job
        that still ended normally delivers its result (the cancellation is seen at the next
        checkpoint), one that failed raises the cancellation. A job that outlives the grace leaves
        the thread *stuck*: the call raises the cancellation, and every later call fails at once
        with :class:`CheckpointerError`, so nothing waits on the driver without a bound.
        Cancelling :meth:`run` leaves the thread to finish the job in hand, close the connection and
        exit; :meth:`aclose` (which the checkpointer actor always calls) waits for that, at most
        ``cancel_grace`` seconds. If the
        start itself is cancelled while ``connect()`` is still running, nobody will call
        :meth:`aclose`: the thread closes the connection as soon as ``connect()`` returns, and the
        thread's sockets are closed once the object is no longer referenced.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], C],
        disconnect: Callable[[C], None],
        *,
        interrupt: Callable[[], None] | None = None,
        cancel_grace: float = 5.0,
    ) -> None:
        self.name = name
        self.cancel_grace = cancel_grace
        self._interrupt = interrupt
        self.limiter = trio.CapacityLimiter(1)
        self._connect = connect
        self._disconnect = disconnect
        # One byte on the job bell per queued job (or stop), read by the thread.
        self._jobs: deque[_Job[Any] | None] = deque()
        self._job_bell, self._job_bell_thread_end = socket.socketpair()
        # One byte on the wake socket per finished job, and one when the thread stops; callers take
        # turns (the lock), so at most one byte is ever unread.
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        # Closed by aclose(), or, for a thread nobody will close (its start was cancelled while it
        # was still connecting, and it finished on its own), once the object is unreachable.
        self._sockets_closer = weakref.finalize(
            self,
            _close_all,
            (self._job_bell, self._job_bell_thread_end, self._wake_reader, self._wake_writer),
        )
        self._turn = trio.Lock()
        self._started = False
        self._connected = False
        self._stopped = False  # set by the thread just before its last byte
        self._closed = False
        self._stuck = False  # a job outlived a cancelled call's grace: the thread takes no calls

    def __repr__(self) -> str:
        state = (
            "closed"
            if self._closed
            else "stopped"
            if self._stopped
            else "stuck"
            if self._stuck
            else "running"
        )
        return f"<ConnectionThread {self.name!r} {state}>"

    async def run(self, *, task_status: trio.TaskStatus[C] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the thread: open the connection, then serve calls until stopped.

        Raises:
            Exception: Whatever ``connect()`` raised (through ``nursery.start``).
        """
        if self._started:
            raise RuntimeError(f"{self!r} can run only once")
        self._started = True
        try:
            # abandon_on_cancel: cancelling the host must not wait for a blocked driver; the limiter
            # stays held until the thread has really finished.
            await trio.to_thread.run_sync(
                self._serve,
                task_status,
                limiter=self.limiter,
                thread_name=self.name,
                abandon_on_cancel=True,
            )
        except BaseException:
            if self._stopped and not self._connected:
                self._close_sockets()  # connect() failed: nobody will call aclose()
            raise
        finally:
            self._queue(_STOP)

    def _queue(self, job: _Job[Any] | None) -> None:
        if not self._closed:
            self._jobs.append(job)
            self._job_bell.send(b"\0")

    def _serve(self, task_status: trio.TaskStatus[C]) -> None:
        # The worker thread, from the connection's opening to its closing.
        try:
            conn = self._connect()
        except BaseException:
            self._stopped = True
            raise
        self._connected = True
        try:
            trio.from_thread.run_sync(task_status.started, conn)
            jobs, bell, wake = self._jobs, self._job_bell_thread_end, self._wake_writer
            while bell.recv(1) and (job := jobs.popleft()) is not _STOP:
                job.result = outcome.capture(job.fn)
                wake.send(b"\0")
        finally:
            try:
                self._disconnect(conn)
            except Exception:
                pass
            finally:
                self._stopped = True
                self._wake_writer.send(b"\1")

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` in the thread and return its result (or raise its exception).

        Raises:
            CheckpointerError: The thread is not running (not started, stopped or closed).
        """
        await self._take_turn()
        try:
            job = _Job(fn)
            self._queue(job)
            try:
                await trio.lowlevel.wait_readable(self._wake_reader)
            except trio.Cancelled:
                if self._interrupt is not None:
                    try:
                        self._interrupt()
                    except Exception:
                        pass  # the bounded wait below still holds
                if (
                    not await self._wait_for_byte()
                    or job.result is None
                    or isinstance(job.result, outcome.Error)
                ):
                    raise
            else:
                self._wake_reader.recv(1)
        finally:
            self._turn.release()
        if job.result is None:
            raise CheckpointerError(f"{self!r} stopped before running the call")
        return job.result.unwrap()

    async def _take_turn(self) -> None:
        """Wait for the turn to use the connection, and check that the thread takes calls."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._turn.acquire_nowait()  # the waiting below is this call's schedule point
        except trio.WouldBlock:
            await self._turn.acquire()
        if not self._started or self._stopped or self._closed or self._stuck:
            self._turn.release()
            raise CheckpointerError(f"{self!r} takes no calls")

    def between_calls(self) -> _BetweenCalls:
        """``async with`` it to hold the connection between two calls: none runs until the block
        ends, so the Trio thread may use the connection itself meanwhile, if it can without
        blocking (a non-blocking driver API waited on with ``trio.lowlevel.wait_readable``).

        Raises:
            CheckpointerError: The thread is not running (not started, stopped or closed).
        """
        return _BetweenCalls(self)

    async def _wait_for_byte(self) -> bool:
        """Wait, shielded but at most ``cancel_grace`` seconds, for the job in hand to end; False
        (and the thread is stuck) if it did not. Its byte must never be left for the next caller
        to mistake for its own, hence the shield."""
        with trio.move_on_after(self.cancel_grace, shield=True):
            await trio.lowlevel.wait_readable(self._wake_reader)
            self._wake_reader.recv(1)
            return True
        self._stuck = True
        return False

    async def aclose(self) -> None:
        """Stop the thread after the calls in progress; it closes the connection. Idempotent."""
        async with self._turn:
            if self._closed:
                return
            if self._started and not self._stopped and not self._stuck:
                self._queue(_STOP)
                await self._wait_for_byte()
            if self._stuck:
                # The thread is still in a job: it stops after it (and closes the connection);
                # its sockets are closed once nothing refers to this object.
                self._queue(_STOP)
                self._closed = True
                return
            self._close_sockets()

    def _close_sockets(self) -> None:
        self._closed = True
        self._sockets_closer()


def _close_all(sockets: tuple[socket.socket, ...]) -> None:
    for sock in sockets:
        sock.close()


class _BetweenCalls:
    """:meth:`ConnectionThread.between_calls`, as a class: a sync save enters it once per step,
    and an ``asynccontextmanager`` would make an async generator (registered with trio's hooks)
    each time."""

    __slots__ = ("_thread",)

    def __init__(self, thread: ConnectionThread[Any]) -> None:
        self._thread = thread

    async def __aenter__(self) -> None:
        await self._thread._take_turn()

    async def __aexit__(self, *exc_info: object) -> None:
        self._thread._turn.release()
