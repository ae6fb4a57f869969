"""``Workflow``: a DAG of tasks, validated as it is built and run as a graph on the actor runtime."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import attrs
import trio

from ..errors import (
    DependencyCycle,
    DuplicateTask,
    MissingArgument,
    UnknownDependency,
    WorkflowExecutionError,
)
from ..execution.runner import AppRunner
from ..graph.builder import END, START, GraphBuilder
from ..graph.frozen import _trusted
from ..graph.partial import NodePartial, Replace
from .executors import SequentialExecutor, resolve_executor
from .stores import TaskRecord
from .task import (
    Task,
    TaskStatus,
    WorkflowStatus,
    as_task,
    missing_parameter,
    parameters,
    run_attempts,
)

if TYPE_CHECKING:
    from ..events.bus import EventBus
    from ..execution.context import NodeContext
    from ..graph.app import App
    from ..graph.state import StateSnapshot
    from .executors import Executor
    from .stores import StateStore

log = logging.getLogger("treadle.workflow")

ExecutorName: TypeAlias = Literal["sequential", "threaded", "async"]
# The prefix of the ``extra`` keys holding each task's final status in the run's graph state.
STATUS_KEY_PREFIX = "task:"


@attrs.frozen
class TaskView:
    """A read-only line of :meth:`Workflow.task_graph`: a task, its direct dependencies, its status."""

    name: str
    depends_on: tuple[str, ...]
    status: TaskStatus


class Workflow:
    """A named DAG of tasks. Dependencies must exist when a task is added, so the graph is checked
    (unknown names, cycles, unfillable parameters) at :meth:`add_task`, in time linear in its size.

    Args:
        name: Names the workflow in errors, events and state stores (records are keyed by it).
        description: Free text for people.
    """

    def __init__(self, name: str, description: str | None = None) -> None:
        name_: object = name  # checked at run time: callers may not be type-checked
        if not isinstance(name_, str) or not name_:
            raise ValueError(f"a workflow name must be a non-empty string, not {name!r}")
        self.name = name
        self.description = description
        self.status = WorkflowStatus.IDLE
        self._tasks: dict[str, Task] = {}
        self._deps: dict[str, tuple[str, ...]] = {}
        self._dependents: dict[str, list[str]] = {}
        self._layer: dict[str, int] = {}
        # The graph of the last run, reused until a task is added; its node bodies run the tasks
        # of whichever run the slot holds.
        self._compiled: tuple[App, _RunSlot] | None = None

    def __repr__(self) -> str:
        return f"Workflow(name={self.name!r}, tasks={len(self._tasks)}, status={self.status.value})"

    # -- building ---------------------------------------------------------------------------------

    def add_task(self, task: object, depends_on: Iterable[str] | None = None) -> Task:
        """Add a :class:`Task`, a ``@task`` function or a plain function; return its Task.

        Raises:
            DuplicateTask: the name is taken.
            UnknownDependency: a dependency has not been added yet.
            DependencyCycle: the task depends on itself.
            MissingArgument: a parameter without a default names no direct dependency.
        """
        t = as_task(task)
        deps = tuple(dict.fromkeys(depends_on or ()))
        if t.name in self._tasks:
            raise DuplicateTask(self.name, t.name)
        for dep in deps:
            if not isinstance(dep, str):
                raise TypeError(f"task {t.name!r}: depends_on holds task names, not {dep!r}")
            if dep == t.name:
                raise DependencyCycle(self.name, [t.name, t.name])
            if dep not in self._tasks:
                raise UnknownDependency(self.name, t.name, dep)
        missing = missing_parameter(t, deps)
        if missing is not None:
            raise MissingArgument(self.name, t.name, missing)
        # Every dependency already exists, so no edge can close a cycle: the graph stays a DAG and
        # the task's layer is known now, in O(number of dependencies).
        self._compiled = None
        self._tasks[t.name] = t
        self._deps[t.name] = deps
        self._dependents[t.name] = []
        for dep in deps:
            self._dependents[dep].append(t.name)
        self._layer[t.name] = 1 + max((self._layer[d] for d in deps), default=-1)
        return t

    # -- reading ----------------------------------------------------------------------------------

    @property
    def tasks(self) -> list[Task]:
        """The tasks in the order they were added."""
        return list(self._tasks.values())

    def get_task(self, name: str) -> Task | None:
        return self._tasks.get(name)

    def get_all_tasks(self) -> dict[str, Task]:
        """A copy of ``{name: Task}`` in insertion order."""
        return dict(self._tasks)

    def get_dependencies(self, name: str) -> list[str]:
        """The direct dependencies of ``name`` (a copy); ``[]`` for an unknown task."""
        return list(self._deps.get(name, ()))

    def get_task_status(self, name: str) -> TaskStatus | None:
        t = self._tasks.get(name)
        return None if t is None else t.status

    def get_task_result(self, name: str) -> Any:
        """The result of ``name``'s last successful run (``None`` before).

        Raises:
            KeyError: no task has that name.
        """
        return self._tasks[name].result

    def task_graph(self) -> list[TaskView]:
        """Every task with its direct dependencies and current status, in insertion order.

        This is what renderers (``export_mermaid``) read: a snapshot that later runs do not change.
        """
        return [TaskView(n, self._deps[n], t.status) for n, t in self._tasks.items()]

    def get_execution_plan(self) -> list[list[Task]]:
        """Layers of tasks: each task sits one layer after its deepest dependency; names are
        alphabetical within a layer. Linear in the number of tasks and dependencies."""
        layers: list[list[str]] = []
        for name, layer in self._layer.items():
            while len(layers) <= layer:
                layers.append([])
            layers[layer].append(name)
        return [[self._tasks[n] for n in sorted(names)] for names in layers]

    def stats(self) -> dict[str, Any]:
        """Counts by status and the wall time of the last run (FlowWeaver's stats keys, plus
        ``retrying``, ``skipped`` and ``status``)."""
        counts = dict.fromkeys(s.value for s in TaskStatus)
        for s in TaskStatus:
            counts[s.value] = 0
        starts = []
        ends = []
        for t in self._tasks.values():
            counts[t.status.value] = (counts[t.status.value] or 0) + 1
            if t.started_at is not None and t.completed_at is not None:
                starts.append(t.started_at)
                ends.append(t.completed_at)
        total = (max(ends) - min(starts)).total_seconds() if starts else 0.0
        return {
            "total_tasks": len(self._tasks),
            "completed": counts["completed"],
            "failed": counts["failed"],
            "pending": counts["pending"],
            "running": counts["running"],
            "retrying": counts["retrying"],
            "skipped": counts["skipped"],
            "total_time_seconds": total,
            "status": self.status.value,
        }

    get_workflow_stats = stats

    # -- running ----------------------------------------------------------------------------------

    def run(
        self,
        executor: ExecutorName | Executor = "sequential",
        *,
        max_workers: int | None = None,
        max_concurrent: int | None = None,
        state_store: StateStore | None = None,
        event_bus: EventBus | None = None,
        lifecycle_events: bool = False,
    ) -> dict[str, Any]:
        """Run the workflow to the end from plain code (``trio.run`` inside); return
        ``{task: result}`` of every completed task.

        Raises:
            WorkflowExecutionError: a task failed; its :class:`TaskExecutionError` is the cause.
        """

        async def main() -> dict[str, Any]:
            return await self.run_async(
                executor,
                max_workers=max_workers,
                max_concurrent=max_concurrent,
                state_store=state_store,
                event_bus=event_bus,
                lifecycle_events=lifecycle_events,
            )

        return trio.run(main)

    async def run_async(
        self,
        executor: ExecutorName | Executor = "sequential",
        *,
        max_workers: int | None = None,
        max_concurrent: int | None = None,
        state_store: StateStore | None = None,
        event_bus: EventBus | None = None,
        session_id: str | None = None,
        lifecycle_events: bool = False,
    ) -> dict[str, Any]:
        """Like :meth:`run`, inside Trio.

        The workflow is compiled into a graph (each task a node, each task's dependencies a join
        edge into it) and run in one session of an :class:`AppRunner` with ``event_bus``; every
        task status change is a ``task.<status>`` event on it (metadata ``task``, ``workflow``,
        ``status``, ``attempt``; ``error`` on ``task.failed``), emitted by the task's node, and
        ``lifecycle_events=True`` adds the runtime's ``node.*``/``step.*`` events. Without a bus
        the events go nowhere and cost little.
        """

        chosen = resolve_executor(executor, max_workers=max_workers, max_concurrent=max_concurrent)
        store = state_store if state_store is not None else chosen.state_store
        return await _WorkflowRun(self, chosen, store).run(event_bus, session_id, lifecycle_events)

    def execute(self, executor: Executor | None = None) -> None:
        """Run with ``executor`` (sequential by default): FlowWeaver's documented spelling."""

        (executor or SequentialExecutor()).execute(self)

    def reset(self) -> None:
        """Every task back to ``pending`` with no result; the workflow back to ``idle``."""
        for t in self._tasks.values():
            t.reset()
        self.status = WorkflowStatus.IDLE

    clear_results = reset


@attrs.define(eq=False)
class _WorkflowRun:
    """One run: the compiled graph's node bodies close over it (results, stored records)."""

    workflow: Workflow
    executor: Executor
    store: StateStore | None
    results: dict[str, Any] = attrs.field(factory=dict)
    stored: dict[str, TaskRecord] = attrs.field(factory=dict)
    failures: dict[str, BaseException] = attrs.field(factory=dict)
    failed_step: int | None = None
    store_limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    thread_limiter: trio.CapacityLimiter | None = None
    # Whether task.* events can reach anyone: without a bus of the caller's, the runner's own bus
    # has no subscriber and never will, so the events are not built at all.
    events: bool = True

    async def run(
        self, bus: EventBus | None, session_id: str | None, lifecycle_events: bool
    ) -> dict[str, Any]:

        wf = self.workflow
        wf.reset()
        wf.status = WorkflowStatus.RUNNING
        if not wf._tasks:
            wf.status = WorkflowStatus.COMPLETED
            return {}
        if self.store is not None:
            store = self.store
            loaded = await trio.to_thread.run_sync(store.load, wf.name, limiter=self.store_limiter)
            self.stored = {n: r for n, r in loaded.items() if r.status == "completed"}
        self.thread_limiter = trio.CapacityLimiter(self.executor.thread_limit)
        self.events = bus is not None
        app, slot = self.graph()
        slot.run = self
        sid = session_id or f"workflow:{wf.name}"
        try:
            async with AppRunner(
                app,
                event_bus=bus,
                concurrency_limit=self.executor.concurrency_limit,
                autosave=False,
                lifecycle_events=lifecycle_events,
            ) as runner:
                await runner.create_session(sid)
                await runner.run_until_complete(sid)
        except BaseException:
            wf.status = WorkflowStatus.FAILED
            raise
        finally:
            slot.run = None
            if self.store is not None:
                await trio.to_thread.run_sync(self.store.close, limiter=self.store_limiter)
        if self.failures:
            wf.status = WorkflowStatus.FAILED
            order = {
                t.name: i
                for i, t in enumerate(t for layer in wf.get_execution_plan() for t in layer)
            }
            failed = sorted(self.failures, key=order.__getitem__)
            raise WorkflowExecutionError(wf.name, failed[0], failed) from self.failures[failed[0]]
        wf.status = WorkflowStatus.COMPLETED
        return dict(self.results)

    def graph(self) -> tuple[App, _RunSlot]:
        """The workflow's compiled graph and the slot its node bodies read their run from: the
        one of the last run when no task was added since and no other run holds it, else a new
        one (compiled and validated in time linear in the workflow's size)."""
        wf = self.workflow
        cached = wf._compiled
        if cached is not None and cached[1].run is None:
            return cached
        slot = _RunSlot()
        compiled = (self.compile(slot), slot)
        if cached is None:
            wf._compiled = compiled
        return compiled

    def compile(self, slot: _RunSlot) -> App:

        wf = self.workflow
        builder = GraphBuilder()
        for name in sorted(wf._tasks, key=lambda n: (wf._layer[n], n)):
            builder.add_node(name, _node(slot, wf._tasks[name]))
        for name, deps in wf._deps.items():
            if not deps:
                builder.add_edge(START, name)
            else:
                builder.add_edge(list(deps), name)
            if not wf._dependents[name]:
                builder.add_edge(name, END)
        if START in wf._tasks or END in wf._tasks:
            return builder.compile()  # raises ReservedNodeName
        # add_task kept the workflow a DAG of unique names whose dependencies exist, so every task
        # is reachable from START and reaches END: the graph checks would find nothing.
        return builder._compile_checked_by_caller()

    async def _execute(self, task: Task, ctx: NodeContext) -> NodePartial:
        name = task.name
        key = STATUS_KEY_PREFIX + name
        record = self.stored.get(name)
        if record is not None:
            # Completed in an earlier run: its stored result stands in for running it again.
            task.reset()
            task.status = TaskStatus.COMPLETED
            task.result = self.results[name] = record.result
            task.attempts = record.attempts
            task.started_at = _parse_time(record.started_at)
            task.completed_at = _parse_time(record.completed_at)
            if self.events:
                await ctx.emit(
                    "task.skipped",
                    f"task {name!r} completed in an earlier run; its stored result is used",
                    task=name, workflow=self.workflow.name, status="completed",
                )  # fmt: skip
            return _status_partial(key, "completed")
        if self.failed_step is not None and ctx.step > self.failed_step:
            # The run stops after the step in which a task failed: nothing later starts.
            return NodePartial(frontier=Replace([]))
        kwargs = _dependency_arguments(task, self.results, self.workflow._deps[name])

        async def notify(t: Task, status: TaskStatus, attempt: int) -> None:
            if status is TaskStatus.FAILED:
                await ctx.emit(
                    "task.failed",
                    f"task {t.name!r} failed: {t.error}",
                    task=t.name, workflow=self.workflow.name, status=status.value,
                    attempt=attempt, error=t.error,
                )  # fmt: skip
                return
            await ctx.emit(
                f"task.{status.value}",
                f"task {t.name!r} {status.value}",
                task=t.name, workflow=self.workflow.name, status=status.value, attempt=attempt,
            )  # fmt: skip

        outcome = await run_attempts(
            task,
            kwargs,
            sync_mode=self.executor.sync_mode,
            limiter=self.thread_limiter,
            notify=notify if self.events else None,
        )
        error = outcome.error
        if error is None:
            try:
                await self._save(task)
            except Exception as exc:
                # A result the store cannot hold fails the task: a resumed run could not use it.
                task.exception = exc
                task.error = str(exc)
                task._set_status(TaskStatus.FAILED)
                if self.events:
                    await notify(task, TaskStatus.FAILED, task.attempts)
                error = exc
            else:
                self.results[name] = outcome.value
                return _status_partial(key, "completed")
        self.failures[name] = error
        if self.failed_step is None or ctx.step < self.failed_step:
            self.failed_step = ctx.step
        await self._save(task)
        return attrs.evolve(_status_partial(key, "failed"), frontier=Replace([]))

    async def _save(self, task: Task) -> None:
        if self.store is None:
            return

        record = TaskRecord(
            task_name=task.name,
            status=task.status.value,
            attempts=task.attempts,
            result=task.result if task.status is TaskStatus.COMPLETED else None,
            error=task.error,
            started_at=_format_time(task.started_at),
            completed_at=_format_time(task.completed_at),
        )
        await trio.to_thread.run_sync(
            self.store.save, self.workflow.name, record, limiter=self.store_limiter
        )


@attrs.define(eq=False)
class _RunSlot:
    """The run a compiled workflow graph is serving (``None`` between runs)."""

    run: _WorkflowRun | None = None


def _node(slot: _RunSlot, task: Task) -> Callable[[StateSnapshot, NodeContext], Any]:
    async def body(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        run = slot.run
        assert run is not None, "a workflow graph ran outside its run"
        return await run._execute(task, ctx)

    body.__qualname__ = f"task:{task.name}"
    return body


def _status_partial(key: str, status: str) -> NodePartial:
    """The partial recording a task's final status under ``key``. An ASCII key and status need no
    checking, so its ``extra`` is built frozen and the node actor takes it as is."""
    if key.isascii():
        return NodePartial(extra=_trusted({key: status}))
    return NodePartial(extra={key: status})


def _dependency_arguments(
    task: Task, results: dict[str, Any], deps: tuple[str, ...]
) -> dict[str, Any]:
    """The keyword arguments ``task`` gets from its direct dependencies ``deps`` (see
    :func:`injected_arguments`), read from the run's ``results`` without copying them."""
    params = parameters(task.fn)
    if params is None:
        return {d: results[d] for d in deps if d in results}
    return {name: results[name] for name, _ in params if name in results and name in deps}


def _format_time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
