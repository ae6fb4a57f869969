"""Every public error treadle raises; all derive from :class:`TreadleError`.

Errors carry structured fields (the node, session, step, URL…) so callers can branch on data, and a
message that is one sentence naming the thing and what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..actors.errors import ActorGone as ActorGone
from ..actors.errors import TreadleError as TreadleError

if TYPE_CHECKING:
    from .execution.session import PauseReason

# -- graph compilation ---------------------------------------------------------------------------


class GraphCompileError(TreadleError):
    """The graph definition is invalid; raised by :meth:`GraphBuilder.compile`."""


class MissingEntry(GraphCompileError):
    def __init__(self) -> None:
        super().__init__("the graph has no entry: add an edge from START (add_edge(START, 'node'))")


class UnknownNode(GraphCompileError):
    def __init__(self, name: str, *, where: str = "") -> None:
        self.name = name
        suffix = f" (used in {where})" if where else ""
        super().__init__(f"unknown node {name!r}{suffix}: add it with add_node() first")


class DuplicateNode(GraphCompileError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"node {name!r} is added twice: node names must be unique")


class ReservedNodeName(GraphCompileError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"node name {name!r} is reserved or invalid: use a non-empty name other than START/END"
        )


class DuplicateEdge(GraphCompileError):
    def __init__(self, src: str, dst: str) -> None:
        self.src = src
        self.dst = dst
        super().__init__(f"edge {src!r} -> {dst!r} is added twice")


class EdgeFromEnd(GraphCompileError):
    def __init__(self, dst: str) -> None:
        self.dst = dst
        super().__init__(f"edge END -> {dst!r} is invalid: END has no outgoing edges")


class EdgeToStart(GraphCompileError):
    def __init__(self, src: str) -> None:
        self.src = src
        super().__init__(f"edge {src!r} -> START is invalid: START has no incoming edges")


class CycleDetected(GraphCompileError):
    def __init__(self, path: Sequence[str]) -> None:
        self.path = tuple(path)
        super().__init__(
            "unconditional edges form a cycle: "
            + " -> ".join(self.path)
            + "; loop through a conditional edge or a frontier command instead"
        )


class UnreachableNodes(GraphCompileError):
    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        super().__init__(
            f"nodes not reachable from START: {', '.join(self.names)}; add edges to them or "
            "declare them in a path_map"
        )


class NoPathToEnd(GraphCompileError):
    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        super().__init__(
            f"nodes with no path to END: {', '.join(self.names)}; add an edge towards END or "
            "declare it in a path_map"
        )


# -- running ---------------------------------------------------------------------------------------


class NodeRunError(TreadleError):
    """A node failed (after its retries, or on timeout); the step was discarded."""

    def __init__(self, node: str, step: int, cause: BaseException) -> None:
        self.node = node
        self.step = step
        self.cause = cause
        super().__init__(f"node {node!r} failed at step {step}: {type(cause).__name__}: {cause}")


class InvalidNodeOutput(TreadleError, TypeError):
    """A node returned something that cannot be stored: a wrong type, or a value that is not JSON.

    Raised inside the node actor, so it fails that node like any exception (its ``RetryPolicy``
    applies) and reaches the caller as the ``cause`` of :class:`NodeRunError`.

    Attributes:
        node: The node that returned it.
        key: Where: the ``extra`` key, ``"messages[i]"``, ``"errors[i]"``, ``"frontier"``, or
            ``None`` when the return value itself has the wrong type.
        reason: What is wrong with it.
    """

    def __init__(self, node: str, key: str | None, reason: str) -> None:
        self.node = node
        self.key = key
        self.reason = reason
        where = "" if key is None else f" (key {key!r})"
        super().__init__(f"node {node!r} returned invalid output{where}: {reason}")


class NodeTimeoutError(TreadleError, TimeoutError):
    """One attempt of a node exceeded its ``timeout``."""

    def __init__(self, node: str, timeout: float) -> None:
        self.node = node
        self.timeout = timeout
        super().__init__(f"node {node!r} timed out after {timeout:g} s")


class SessionNotFound(TreadleError):
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"session {session_id!r} not found: create it with create_session() first")


class SessionExists(TreadleError):
    """A session id is already taken (stored, or open on this runner); nothing was overwritten."""

    def __init__(self, session_id: str, *, where: str = "open on this runner") -> None:
        self.session_id = session_id
        super().__init__(
            f"session {session_id!r} already exists ({where}): choose another session id"
        )


class GraphMismatch(TreadleError):
    """A stored session was run by a graph with another definition than the runner's."""

    def __init__(self, session_id: str, stored: str, current: str) -> None:
        self.session_id = session_id
        self.stored = stored
        self.current = current
        super().__init__(
            f"session {session_id!r} was stored by another graph (definition hash "
            f"{stored[:12]}…, this app's is {current[:12]}…): resume it with the graph that ran "
            "it, or pass create_session(..., allow_graph_change=True)"
        )


class NoStartNodes(TreadleError):
    def __init__(self) -> None:
        super().__init__("the graph has no node to start from: every START route was empty")


class InvalidIterativeEntry(TreadleError):
    def __init__(self, entry: str) -> None:
        self.entry = entry
        super().__init__(
            f"invalid iterative entry {entry!r}: use START or the name of a node in the graph"
        )


class NotIterative(TreadleError):
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(
            f"session {session_id!r} is not an iterative session: open it with "
            "create_iterative_session, or drive it with run_step / run_until_complete"
        )


class IterativeSessionFinished(TreadleError):
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(
            f"iterative session {session_id!r} was finished: call create_iterative_session "
            "again to continue it"
        )


class InvocationPaused(TreadleError):
    """An interrupt paused an invocation; ``continue_invocation`` resumes it."""

    def __init__(self, session_id: str, invocation: int, reason: PauseReason) -> None:
        self.session_id = session_id
        self.invocation = invocation
        self.reason = reason
        where = f" at node {reason.node!r}" if reason.node is not None else ""
        super().__init__(
            f"invocation {invocation} of session {session_id!r} paused ({reason.kind}{where}): "
            "call continue_invocation to resume it"
        )


class RunnerClosed(TreadleError):
    def __init__(self) -> None:
        super().__init__("the runner is closed: use it inside 'async with AppRunner(...)'")


# -- checkpoints -----------------------------------------------------------------------------------


class CheckpointerError(TreadleError):
    """A checkpoint could not be read or written."""


class CheckpointNotFound(CheckpointerError):
    def __init__(self, session_id: str, step: int | None = None) -> None:
        self.session_id = session_id
        self.step = step
        where = f" at step {step}" if step is not None else ""
        super().__init__(f"no checkpoint for session {session_id!r}{where}")


class CheckpointBackendError(CheckpointerError):
    """The storage backend failed (unreachable, locked, full…); ``session_id`` and ``step`` name
    the step that was not stored, when a step's save failed."""

    def __init__(
        self,
        backend: str,
        message: str,
        *,
        session_id: str | None = None,
        step: int | None = None,
    ) -> None:
        self.backend = backend
        self.session_id = session_id
        self.step = step
        super().__init__(f"{backend}: {message}")

    @classmethod
    def step_not_stored(
        cls, backend: str, session_id: str, step: int, cause: BaseException
    ) -> CheckpointBackendError:
        """The error for a step whose checkpoint could not be written: the session stays at the
        step before it, and a retry runs the step again."""
        return cls(
            backend,
            f"step {step} of session {session_id!r} was not stored ({cause}); the session stays "
            f"at step {step - 1}: retry to run step {step} again",
            session_id=session_id,
            step=step,
        )


class ConcurrencyConflict(CheckpointerError):
    def __init__(self, session_id: str, expected_step: int | None, actual_step: int | None) -> None:
        self.session_id = session_id
        self.expected_step = expected_step
        self.actual_step = actual_step
        super().__init__(
            f"session {session_id!r} was written by someone else: expected latest step "
            f"{expected_step}, found {actual_step}"
        )


class SessionLeased(CheckpointerError):
    def __init__(self, session_id: str, holder: str) -> None:
        self.session_id = session_id
        self.holder = holder
        super().__init__(
            f"session {session_id!r} is being run by another process ({holder}); wait for it to "
            "finish or use another session id"
        )


# Namespaced aliases matching the spec's ``CheckpointerError.NotFound`` spelling.
CheckpointerError.NotFound = CheckpointNotFound  # type: ignore[attr-defined]
CheckpointerError.Backend = CheckpointBackendError  # type: ignore[attr-defined]
CheckpointerError.ConcurrencyConflict = ConcurrencyConflict  # type: ignore[attr-defined]


# -- state slots -----------------------------------------------------------------------------------


class StateSlotError(TreadleError):
    """A typed state slot could not be read or written."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"state slot {key!r}: {message}")


class StateSlotMissing(StateSlotError):
    def __init__(self, key: str) -> None:
        super().__init__(key, "missing from extra")


class StateSlotSerialize(StateSlotError):
    def __init__(self, key: str, cause: str) -> None:
        super().__init__(key, f"value is not JSON-serialisable ({cause})")


class StateSlotDeserialize(StateSlotError):
    def __init__(self, key: str, cause: str) -> None:
        super().__init__(key, f"stored value cannot be read back ({cause})")


StateSlotError.Missing = StateSlotMissing  # type: ignore[attr-defined]
StateSlotError.Serialize = StateSlotSerialize  # type: ignore[attr-defined]
StateSlotError.Deserialize = StateSlotDeserialize  # type: ignore[attr-defined]


# -- workflow layer --------------------------------------------------------------------------------


class TaskExecutionError(TreadleError):
    """A workflow task failed after its retries (or timed out); the original error is ``cause``
    (and ``__cause__``)."""

    def __init__(self, task: str, cause: BaseException, *, attempts: int = 1) -> None:
        self.task = task
        self.cause = cause
        self.attempts = attempts
        detail = str(cause) or type(cause).__name__
        super().__init__(
            f"task {task!r} failed after {attempts} attempt{'s' if attempts != 1 else ''}: "
            f"{type(cause).__name__}: {detail}"
        )


class TaskTimeoutError(TreadleError, TimeoutError):
    """One attempt of a workflow task ran past its ``timeout``; a sync task's thread is abandoned."""

    def __init__(self, task: str, timeout: float) -> None:
        self.task = task
        self.timeout = timeout
        super().__init__(f"task {task!r} exceeded its timeout of {timeout:g} s")


class WorkflowExecutionError(TreadleError, RuntimeError):
    """A workflow run stopped because a task failed; ``__cause__`` is its :class:`TaskExecutionError`.

    ``failed_task`` is the first failed task in plan order; ``failed_tasks`` lists every task that
    failed in that layer.
    """

    def __init__(
        self, workflow: str, failed_task: str, failed_tasks: Sequence[str] | None = None
    ) -> None:
        self.workflow = workflow
        self.failed_task = failed_task
        self.failed_tasks = tuple(failed_tasks) if failed_tasks is not None else (failed_task,)
        super().__init__(
            f"workflow {workflow!r} failed at task {failed_task!r}; fix the task and run again "
            "(with a state store, completed tasks are not re-run)"
        )


class WorkflowDefinitionError(TreadleError, ValueError):
    """A workflow definition is invalid; raised by ``Workflow.add_task``."""


class DuplicateTask(WorkflowDefinitionError):
    def __init__(self, workflow: str, task: str) -> None:
        self.workflow = workflow
        self.task = task
        super().__init__(
            f"Task {task!r} already exists in workflow {workflow!r}; give the new task another name"
        )


class UnknownDependency(WorkflowDefinitionError):
    def __init__(self, workflow: str, task: str, dependency: str) -> None:
        self.workflow = workflow
        self.task = task
        self.dependency = dependency
        super().__init__(
            f"Dependency {dependency!r} of task {task!r} does not exist in workflow "
            f"{workflow!r}. Add it before adding {task!r}."
        )


class DependencyCycle(WorkflowDefinitionError):
    def __init__(self, workflow: str, path: Sequence[str]) -> None:
        self.workflow = workflow
        self.path = tuple(path)
        super().__init__(
            f"workflow {workflow!r} would contain a circular dependency: "
            f"{' -> '.join(self.path)}; remove one of these dependencies"
        )


class MissingArgument(WorkflowDefinitionError):
    def __init__(self, workflow: str, task: str, parameter: str) -> None:
        self.workflow = workflow
        self.task = task
        self.parameter = parameter
        super().__init__(
            f"parameter {parameter!r} of task {task!r} names no direct dependency and has no "
            f"default; add depends_on=[{parameter!r}] or give it a default"
        )
