"""Tasks: the ``@task`` decorator, :class:`Task`, its statuses, and how one task runs its attempts."""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, Literal, TypeAlias, TypeVar, overload

import trio

from ..errors import TaskExecutionError, TaskTimeoutError

log = logging.getLogger("treadle.workflow")

F = TypeVar("F", bound=Callable[..., Any])
StatusCallback: TypeAlias = "Callable[[str, TaskStatus], object]"
RetryCallback: TypeAlias = Callable[[str, int], object]
TaskCallback: TypeAlias = "Callable[[Task], object]"
# How a sync task body is called: on the Trio thread, or in a worker thread.
SyncMode: TypeAlias = Literal["inline", "thread"]
# Where an async task body runs: natively on Trio, or on its own asyncio loop in a worker thread.
AsyncBackend: TypeAlias = Literal["trio", "asyncio"]


class TaskStatus(enum.Enum):
    """Where a task is in its life. Values are lowercase strings (as in FlowWeaver)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    RETRYING = "retrying"


class WorkflowStatus(enum.Enum):
    """Where a workflow is: ``idle`` before its first run, then ``running``, then the outcome."""

    IDLE = "idle"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


_META = "__treadle_task__"


class Task:
    """One unit of work of a :class:`Workflow`, and its state after a run.

    Args:
        name: Unique inside a workflow; also the node name in the compiled graph.
        fn: A plain or ``async`` function. Its parameters named after direct dependencies receive
            their results; ``**kwargs`` receives all of them.
        retries: Extra attempts after a failure (``retries + 1`` attempts in all), with no delay.
        timeout: Seconds per attempt, enforced under every executor; ``None`` means no limit.
        on_status_change: Called as ``(name, status)`` on every status change.
        on_retry: Called as ``(name, attempt)`` before each retry (attempt 1 is the first retry).
        callbacks: Called as ``(task)`` once the task has completed or failed.

    Attributes ``status``, ``result``, ``error`` (the message), ``exception``, ``started_at``,
    ``completed_at``, ``duration`` (seconds) and ``attempts`` describe the last run.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any] | None = None,
        retries: int = 0,
        timeout: float | None = None,
        on_status_change: StatusCallback | None = None,
        on_retry: RetryCallback | None = None,
        *,
        callbacks: Sequence[TaskCallback] | None = None,
        func: Callable[..., Any] | None = None,
        async_backend: AsyncBackend | None = None,
    ) -> None:
        body = fn if fn is not None else func
        name_: object = name  # checked at run time: callers may not be type-checked
        if not isinstance(name_, str) or not name_:
            raise ValueError(f"a task name must be a non-empty string, not {name!r}")
        if body is None or not callable(body):
            raise TypeError(f"task {name!r}: fn must be callable, got {body!r}")
        retries_: object = retries
        if isinstance(retries_, bool) or not isinstance(retries_, int) or retries < 0:
            raise ValueError(f"task {name!r}: retries must be an int >= 0, got {retries!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"task {name!r}: timeout must be > 0 seconds or None, got {timeout!r}")
        self.name = name
        self.fn = body
        self.retries = retries
        self.timeout = timeout
        self.on_status_change = on_status_change
        self.on_retry = on_retry
        if async_backend not in (None, "trio", "asyncio"):
            raise ValueError(
                f"task {name!r}: async_backend must be 'trio', 'asyncio' or None, "
                f"got {async_backend!r}"
            )
        self.callbacks: list[TaskCallback] = list(callbacks or ())
        self.async_backend: AsyncBackend | None = async_backend
        self.reset()

    def __repr__(self) -> str:
        return f"Task(name={self.name!r}, status={self.status.value}, attempts={self.attempts})"

    @property
    def func(self) -> Callable[..., Any]:
        """The body (FlowWeaver's documented name for ``fn``)."""
        return self.fn

    def reset(self) -> None:
        """Forget the last run: back to ``pending`` with no result."""
        self.status = TaskStatus.PENDING
        self.result: Any = None
        self.error: str | None = None
        self.exception: BaseException | None = None
        self.started_at: datetime | None = None
        self.completed_at: datetime | None = None
        self.attempts = 0

    @property
    def duration(self) -> float | None:
        """Seconds from start to end of the last run, or ``None`` if it has not ended."""
        if self.started_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds()

    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def runs_on_asyncio(self) -> bool:
        """Whether this ``async`` task runs on an asyncio loop rather than natively on Trio.

        ``async_backend`` decides when given; otherwise a function whose module imported
        ``asyncio`` and not ``trio`` (FlowWeaver code awaiting ``asyncio.sleep``) runs on asyncio.
        """
        if self.async_backend is not None:
            return self.async_backend == "asyncio"
        return _module_uses_asyncio(self.fn)

    def execute(self, context: Mapping[str, Any] | None = None) -> Any:
        """Run this task alone, from plain code, with ``context`` as its upstream results.

        Retries, timeout and callbacks apply. Returns the result; a failure is recorded in
        ``status``/``error`` and ``None`` is returned (as FlowWeaver does), never raised.
        """

        async def main() -> Any:
            return await self.execute_async(context)

        return trio.run(main)

    async def execute_async(self, context: Mapping[str, Any] | None = None) -> Any:
        """Like :meth:`execute`, inside Trio (sync bodies run in a worker thread), or awaited on an
        asyncio loop (FlowWeaver's spelling), where it runs in the loop's default executor."""
        if _on_asyncio():
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, functools.partial(self.execute, context))
        kwargs = injected_arguments(self, context or {})
        outcome = await run_attempts(self, kwargs, sync_mode="thread", limiter=None, notify=None)
        return outcome.value if outcome.error is None else None

    # -- state changes -------------------------------------------------------------------------

    def _set_status(self, status: TaskStatus) -> None:
        self.status = status
        if self.on_status_change is not None:
            _safely(self.on_status_change, self.name, status, what="on_status_change")


def _module_uses_asyncio(fn: Callable[..., Any]) -> bool:
    """Whether ``fn``'s module imported ``asyncio`` and not ``trio``; cached per function, since a
    module's imports are done before its functions run (uncached for unhashable callables)."""
    try:
        return _module_uses_asyncio_cached(fn)
    except TypeError:  # unhashable callable
        return _module_uses_asyncio_cached.__wrapped__(fn)


@functools.lru_cache(maxsize=4096)
def _module_uses_asyncio_cached(fn: Callable[..., Any]) -> bool:
    unwrapped = inspect.unwrap(fn)
    names = {
        v.__name__
        for v in getattr(unwrapped, "__globals__", {}).values()
        if isinstance(v, ModuleType)
    }
    return "asyncio" in names and "trio" not in names


def _on_asyncio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return True  # not inside Trio: the caller awaited us from asyncio
    return False


def _safely(fn: Callable[..., object], *args: Any, what: str) -> None:
    """Call a user callback; an exception it raises is logged, never propagated."""
    try:
        fn(*args)
    except Exception:
        log.exception("%s callback %r raised; the task is unaffected", what, fn)


# -- the decorator -----------------------------------------------------------------------------


@overload
def task(fn: F, /) -> F: ...
@overload
def task(
    name: str | None = None,
    *,
    retries: int = 0,
    timeout: float | None = None,
    on_status_change: StatusCallback | None = None,
    on_retry: RetryCallback | None = None,
    callbacks: Sequence[TaskCallback] | None = None,
    async_backend: AsyncBackend | None = None,
) -> Callable[[F], F]: ...


def task(
    name: Any = None,
    *,
    retries: int = 0,
    timeout: float | None = None,
    on_status_change: StatusCallback | None = None,
    on_retry: RetryCallback | None = None,
    callbacks: Sequence[TaskCallback] | None = None,
    async_backend: AsyncBackend | None = None,
) -> Any:
    """Mark a function as a workflow task; bare (``@task``) or called (``@task(retries=2)``).

    The function is returned unchanged and stays directly callable; the options are attached to it
    and read by :meth:`Workflow.add_task`, which builds a fresh :class:`Task` each time.
    """

    def mark(fn: F) -> F:
        options: dict[str, Any] = {
            "name": name if isinstance(name, str) else fn.__name__,
            "retries": retries,
            "timeout": timeout,
            "on_status_change": on_status_change,
            "on_retry": on_retry,
            "callbacks": list(callbacks or ()),
            "async_backend": async_backend,
        }
        Task(fn=fn, **options)  # validate the options now, at the decorator
        setattr(fn, _META, options)
        try:
            signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        # FlowWeaver's attribute, for code that reads it (its own tests do).
        setattr(fn, "__flowweaver__", {**options, "signature": signature})  # noqa: B010
        return fn

    if callable(name):
        fn, name = name, None
        return mark(fn)
    return mark


def as_task(obj: object) -> Task:
    """A :class:`Task` for ``obj``: a Task as is, a ``@task`` function or a plain function wrapped."""
    if isinstance(obj, Task):
        return obj
    options = getattr(obj, _META, None)
    if isinstance(options, dict):
        return Task(fn=obj, **options)  # type: ignore[arg-type]  # options built by task()
    if callable(obj) and hasattr(obj, "__name__"):
        return Task(obj.__name__, obj)
    raise TypeError(
        f"add_task takes a Task, a @task function or a plain function, not {type(obj).__name__}"
    )


# -- arguments by parameter name ---------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _parameters(fn: Callable[..., Any]) -> tuple[tuple[str, bool], ...] | None:
    """``(name, has_default)`` for each keyword-passable parameter; ``None`` means ``**kwargs``
    (everything is passed). Uncached for unhashable callables by the caller."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: pass what matches nothing
        return ()
    params: list[tuple[str, bool]] = []
    for p in signature.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            return None
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            params.append((p.name, p.default is not p.empty))
        elif p.kind is p.POSITIONAL_ONLY and p.default is p.empty:
            params.append((p.name, False))
    return tuple(params)


def parameters(fn: Callable[..., Any]) -> tuple[tuple[str, bool], ...] | None:
    try:
        return _parameters(fn)
    except TypeError:  # unhashable callable
        return _parameters.__wrapped__(fn)


def missing_parameter(task_: Task, dependencies: Sequence[str]) -> str | None:
    """The first parameter without a default that names no direct dependency, if any."""
    params = parameters(task_.fn)
    if params is None:
        return None
    deps = set(dependencies)
    for name, has_default in params:
        if not has_default and name not in deps:
            return name
    return None


def injected_arguments(task_: Task, results: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``task_`` gets from its direct dependencies' ``results``."""
    params = parameters(task_.fn)
    if params is None:
        return dict(results)
    return {name: results[name] for name, _ in params if name in results}


# -- running one task --------------------------------------------------------------------------


class Outcome:
    """What :func:`run_attempts` ended with: a value, or the last error."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


Notify: TypeAlias = "Callable[[Task, TaskStatus, int], Any] | None"


async def run_attempts(
    task_: Task,
    kwargs: dict[str, Any],
    *,
    sync_mode: SyncMode,
    limiter: trio.CapacityLimiter | None,
    notify: Notify,
) -> Outcome:
    """Run ``task_`` with its retries and per-attempt timeout; record its state; never raise
    for the task's own failures (cancellation propagates).

    ``notify(task, status, attempt)`` is awaited after each status change (the workflow turns it
    into an event on the bus).
    """

    async def changed(status: TaskStatus) -> None:
        task_._set_status(status)
        if notify is not None:
            await notify(task_, status, task_.attempts)

    task_.reset()
    task_.started_at = _now()
    task_.attempts = 1
    await changed(TaskStatus.RUNNING)
    started = time.perf_counter()
    while True:
        try:
            value = await _attempt(task_, kwargs, sync_mode, limiter)
        except Exception as exc:
            if task_.attempts > task_.retries:
                task_.exception = TaskExecutionError(task_.name, exc, attempts=task_.attempts)
                task_.exception.__cause__ = exc
                task_.error = str(exc) or type(exc).__name__
                task_.completed_at = _now()
                log.info("task %r failed after %d attempt(s): %r", task_.name, task_.attempts, exc)
                await changed(TaskStatus.FAILED)
                _after(task_)
                return Outcome(error=task_.exception)
            log.info(
                "task %r failed attempt %d of %d (%r); retrying",
                task_.name, task_.attempts, task_.retries + 1, exc,
            )  # fmt: skip
            if task_.on_retry is not None:
                _safely(task_.on_retry, task_.name, task_.attempts, what="on_retry")
            task_.attempts += 1
            await changed(TaskStatus.RETRYING)
        else:
            task_.result = value
            task_.completed_at = _now()
            log.debug("task %r completed in %.3f s", task_.name, time.perf_counter() - started)
            await changed(TaskStatus.COMPLETED)
            _after(task_)
            return Outcome(value=value)


def _after(task_: Task) -> None:
    for callback in task_.callbacks:
        _safely(callback, task_, what="callbacks")


async def _attempt(
    task_: Task, kwargs: dict[str, Any], sync_mode: SyncMode, limiter: trio.CapacityLimiter | None
) -> Any:
    if task_.timeout is None:
        return await _call(task_, kwargs, sync_mode, limiter)
    with trio.move_on_after(task_.timeout) as scope:
        return await _call(task_, kwargs, sync_mode, limiter, abandonable=True)
    assert scope.cancelled_caught
    raise TaskTimeoutError(task_.name, task_.timeout)


async def _call(
    task_: Task,
    kwargs: dict[str, Any],
    sync_mode: SyncMode,
    limiter: trio.CapacityLimiter | None,
    *,
    abandonable: bool = False,
) -> Any:
    result = await _call_body(task_, kwargs, sync_mode, limiter, abandonable=abandonable)
    if inspect.isawaitable(result):
        # A plain function that returns a coroutine (``lambda: fetch(uid)``): await it.
        return await result
    return result


async def _call_body(
    task_: Task,
    kwargs: dict[str, Any],
    sync_mode: SyncMode,
    limiter: trio.CapacityLimiter | None,
    *,
    abandonable: bool = False,
) -> Any:
    fn = task_.fn
    if task_.is_async():
        if not task_.runs_on_asyncio():
            return await fn(**kwargs)

        def on_asyncio() -> list[Any]:
            return [asyncio.run(_with_timeout(fn(**kwargs), task_.timeout))]

        # Its own event loop in a worker thread; at a deadline asyncio cancels the coroutine
        # itself, and the thread is abandoned if it does not end at once.
        boxed = await trio.to_thread.run_sync(
            on_asyncio, abandon_on_cancel=True, limiter=limiter or _unbounded()
        )
        return boxed[0]
    if sync_mode == "inline" and not abandonable:
        return fn(**kwargs)

    def call() -> list[Any]:
        # Boxed, so a plain function returning a coroutine passes through Trio's thread check.
        return [fn(**kwargs)]

    if not abandonable:
        return (await trio.to_thread.run_sync(call, limiter=limiter))[0]
    # A thread cannot be interrupted: at the deadline it is abandoned (it runs on, its result is
    # dropped). Its slot in ``limiter`` is given back at once, so later tasks are not held up.
    if limiter is None:
        boxed = await trio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=_unbounded())
        return boxed[0]
    async with limiter:
        boxed = await trio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=_unbounded())
    return boxed[0]


async def _with_timeout(coro: Any, seconds: float | None) -> Any:
    if seconds is None:
        return await coro
    return await asyncio.wait_for(coro, seconds)


def _unbounded() -> trio.CapacityLimiter:
    # A limiter per call: abandoned threads are bounded by the callers' own limiters instead.
    return trio.CapacityLimiter(1)


def _now() -> datetime:
    return datetime.now(UTC)
