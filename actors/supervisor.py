"""One-for-one supervision: restart a crashed actor with backoff; give up after too many crashes."""

from __future__ import annotations

import enum
import functools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import trio

logger = logging.getLogger(__name__)


@attrs.frozen
class RestartPolicy:
    """How often a crashed child is restarted, and how long to wait before each restart.

    A child that crashes more than ``max_restarts`` times within ``within`` seconds has failed. A
    crash counts while it is less than ``within`` seconds old; the number of counted crashes, the
    new one included, also sets the backoff (:meth:`backoff`), so a child that has been healthy for
    a whole window starts again from ``initial_backoff``.

    Attributes:
        max_restarts: Restarts allowed inside one window (0: the first crash is fatal).
        within: The window length in seconds.
        initial_backoff: Seconds to wait before the first restart.
        backoff_factor: Growth of the wait for each further crash in the window.
        max_backoff: Upper bound of the wait.
    """

    max_restarts: int = 5
    within: float = 10.0
    initial_backoff: float = 0.1
    backoff_factor: float = 2.0
    max_backoff: float = 5.0

    def __attrs_post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, not {self.max_restarts}")
        if not self.within > 0:
            raise ValueError(f"within must be > 0 seconds, not {self.within}")
        if not 0 <= self.initial_backoff <= self.max_backoff:
            raise ValueError(
                f"backoffs must satisfy 0 <= initial_backoff ({self.initial_backoff}) <= "
                f"max_backoff ({self.max_backoff})"
            )
        if not self.backoff_factor >= 1:
            raise ValueError(f"backoff_factor must be >= 1, not {self.backoff_factor}")

    def backoff(self, consecutive_crashes: int) -> float:
        """Seconds to wait before restarting after the ``consecutive_crashes``-th counted crash.

        ``initial_backoff * backoff_factor ** (consecutive_crashes - 1)``, capped at
        ``max_backoff``: 0.1, 0.2, 0.4, … with the defaults.
        """
        if consecutive_crashes < 1:
            raise ValueError(f"consecutive_crashes must be >= 1, not {consecutive_crashes}")
        # Cap the exponent's effect before it can overflow a float.
        delay = self.initial_backoff
        for _ in range(consecutive_crashes - 1):
            if delay >= self.max_backoff:
                break
            delay *= self.backoff_factor
        return min(delay, self.max_backoff)


DEFAULT_RESTART_POLICY = RestartPolicy()
"""At most 5 restarts in 10 s, backing off 0.1 s, 0.2 s, … up to 5 s."""


class ChildState(enum.Enum):
    """Where a supervised child is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    STOPPED = "stopped"
    FAILED = "failed"


@attrs.frozen
class ChildCrash:
    """One crash of a supervised child, as passed to ``on_crash``.

    Attributes:
        child: The child's name.
        error: The exception it raised.
        when: ``trio.current_time()`` of the crash.
        occurrence: 1 for the child's first crash, 2 for the second, … (never reset).
    """

    child: str
    error: BaseException
    when: float
    occurrence: int


@attrs.frozen
class ChildStatistics:
    """A snapshot of a supervised child: the actor statistics of the kernel."""

    name: str
    state: ChildState
    crashes: int
    restarts: int
    last_error: str | None
    last_error_at: float | None


@attrs.define(eq=False)
class ChildHandle:
    """The handle of one supervised child, returned through ``task_status.started``."""

    name: str
    _state: ChildState = attrs.field(default=ChildState.STARTING, init=False)
    _crashes: int = attrs.field(default=0, init=False)
    _restarts: int = attrs.field(default=0, init=False)
    _last_error: str | None = attrs.field(default=None, init=False)
    _last_error_at: float | None = attrs.field(default=None, init=False)
    _cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope, init=False)
    _finished: trio.Event = attrs.field(factory=trio.Event, init=False)

    @property
    def state(self) -> ChildState:
        """The child's current state."""
        return self._state

    def statistics(self) -> ChildStatistics:
        """A snapshot of the child's state and crash counters."""
        return ChildStatistics(
            name=self.name,
            state=self._state,
            crashes=self._crashes,
            restarts=self._restarts,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
        )

    def cancel(self, reason: str | None = None) -> None:
        """Stop this child (and its pending restart) only; its ``supervise`` returns quietly."""
        self._cancel_scope.cancel(reason)

    async def wait_finished(self) -> None:
        """Wait until the child has stopped or failed for good."""
        await self._finished.wait()


def _record_crash(handle: ChildHandle, error: Exception, now: float) -> ChildCrash:
    handle._crashes += 1
    handle._last_error = f"{type(error).__name__}: {error}"
    handle._last_error_at = now
    return ChildCrash(child=handle.name, error=error, when=now, occurrence=handle._crashes)


async def supervise(
    name: str,
    fn: Callable[[], Awaitable[None]],
    *,
    policy: RestartPolicy = DEFAULT_RESTART_POLICY,
    escalate: bool = True,
    on_crash: Callable[[ChildCrash], None] | None = None,
    task_status: trio.TaskStatus[ChildHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``fn()`` as a supervised child, restarting it with backoff when it crashes.

    Start it with ``handle = await nursery.start(supervise, name, fn)``. A clean return of ``fn``
    stops the child (``STOPPED``) and returns.

    Args:
        name: Names the child in statistics, crashes and logs.
        fn: The actor body; called afresh for every restart.
        policy: Restart limits and backoff.
        escalate: When the child fails for good, re-raise its last error (``True``) or just return.
        on_crash: Called synchronously with every crash, the fatal one included; an exception it
            raises is logged and otherwise ignored.
        task_status: Receives the :class:`ChildHandle` before ``fn`` first runs.

    Cancellation:
        ``handle.cancel()`` ends the child, or its backoff, quietly (``STOPPED``); cancelling the
        enclosing scope propagates as usual. Only ``Exception`` counts as a crash, never
        ``Cancelled`` or ``KeyboardInterrupt``.

    Errors:
        After more than ``policy.max_restarts`` crashes within ``policy.within`` seconds the child
        is ``FAILED`` and, with ``escalate``, its last exception is re-raised here (with a note
        naming the child), which cancels the enclosing nursery as any task failure does.
    """
    handle = ChildHandle(name)
    task_status.started(handle)
    recent: deque[float] = deque()  # times of the crashes still inside the window
    try:
        with handle._cancel_scope:
            while True:
                handle._state = ChildState.RUNNING
                try:
                    await fn()
                except Exception as exc:
                    error = exc
                else:
                    return
                now = trio.current_time()
                while recent and now - recent[0] >= policy.within:
                    recent.popleft()
                recent.append(now)
                crash = _record_crash(handle, error, now)
                if on_crash is not None:
                    try:
                        on_crash(crash)
                    except Exception:
                        logger.exception("on_crash callback of child %r raised", name)
                if len(recent) > policy.max_restarts:
                    handle._state = ChildState.FAILED
                    logger.warning(
                        "child %r failed: %d crashes within %g s, last %s",
                        name,
                        len(recent),
                        policy.within,
                        handle._last_error,
                    )
                    if escalate:
                        error.add_note(
                            f"supervised child {name!r} gave up after {len(recent)} crashes "
                            f"within {policy.within:g} s"
                        )
                        raise error
                    return
                logger.debug("child %r crashed (%s); restarting", name, handle._last_error)
                del error  # do not keep the traceback's frames alive while backing off
                handle._state = ChildState.BACKING_OFF
                await trio.sleep(policy.backoff(len(recent)))
                handle._restarts += 1
                handle._state = ChildState.STARTING
    finally:
        if handle._state is not ChildState.FAILED:
            handle._state = ChildState.STOPPED
        handle._finished.set()


@attrs.define(eq=False)
class Supervisor:
    """Owns a nursery of supervised children; open it with :func:`open_supervisor`."""

    name: str
    _nursery: trio.Nursery
    _children: dict[str, ChildHandle] = attrs.field(factory=dict, init=False)
    _starting: set[str] = attrs.field(factory=set, init=False)

    async def start(
        self,
        name: str,
        fn: Callable[[], Awaitable[None]],
        *,
        policy: RestartPolicy = DEFAULT_RESTART_POLICY,
        escalate: bool = True,
        on_crash: Callable[[ChildCrash], None] | None = None,
    ) -> ChildHandle:
        """Start ``fn`` as a supervised child (see :func:`supervise`) and return its handle.

        Raises:
            ValueError: A child of that name is still running or starting; names identify children.
        """
        existing = self._children.get(name)
        alive = existing is not None and existing.state not in _FINISHED
        if alive or name in self._starting:
            raise ValueError(
                f"supervisor {self.name!r} already has a running child {name!r}: stop it first "
                "or use another name"
            )
        self._starting.add(name)
        try:
            handle: ChildHandle = await self._nursery.start(
                functools.partial(
                    supervise, name, fn, policy=policy, escalate=escalate, on_crash=on_crash
                ),
                name=f"{self.name}/{name}",
            )
        finally:
            self._starting.discard(name)
        self._children[name] = handle
        return handle

    def children(self) -> list[ChildHandle]:
        """Every child started here (the newest handle per name, stopped ones included)."""
        return list(self._children.values())

    def cancel(self, reason: str | None = None) -> None:
        """Stop every child; leaving the ``async with`` block then returns promptly."""
        for handle in self._children.values():
            handle.cancel(reason)


_FINISHED = (ChildState.STOPPED, ChildState.FAILED)


@asynccontextmanager
async def open_supervisor(name: str) -> AsyncIterator[Supervisor]:
    """Open a :class:`Supervisor` whose children live in a nursery owned by this block.

    Leaving the block waits for every child, as a nursery does: call ``sup.cancel()`` first to stop
    long-lived ones. A child that fails with ``escalate=True`` cancels the block and its siblings
    and surfaces as an exception group.
    """
    async with trio.open_nursery() as nursery:
        yield Supervisor(name, nursery)
