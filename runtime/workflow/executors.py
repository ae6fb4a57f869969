"""Executors: how a workflow's sync tasks run (inline, in threads) and how many tasks run at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .stores import StateStore
    from .task import SyncMode
    from .workflow import ExecutorName, Workflow


class Executor:
    """Base of the three executors. Every executor runs the same compiled graph; it only chooses
    how plain ``def`` tasks are called and the run's concurrency.

    ``state_store`` (``storage`` is accepted as FlowWeaver 0.2.2's name) makes runs resumable.
    """

    sync_mode: SyncMode = "inline"

    def __init__(self, *, state_store: StateStore | None = None, **kwargs: Any) -> None:
        storage = kwargs.pop("storage", None)
        if kwargs:
            raise TypeError(
                f"{type(self).__name__} got unexpected arguments: {', '.join(sorted(kwargs))}"
            )
        self.state_store = state_store if state_store is not None else storage

    @property
    def concurrency_limit(self) -> int:
        return 1

    @property
    def thread_limit(self) -> int:
        return 1

    def execute(self, workflow: Workflow) -> dict[str, Any]:
        """Run ``workflow`` to the end from plain code; see :meth:`Workflow.run`."""
        return workflow.run(self, state_store=self.state_store)

    async def execute_async(self, workflow: Workflow) -> dict[str, Any]:
        """Run ``workflow`` inside Trio; see :meth:`Workflow.run_async`."""
        return await workflow.run_async(self, state_store=self.state_store)


class SequentialExecutor(Executor):
    """One task at a time; plain ``def`` tasks run on the Trio thread (in a worker thread only when
    they have a ``timeout``, so the deadline can be enforced)."""

    def __repr__(self) -> str:
        return "SequentialExecutor()"


class ThreadedExecutor(Executor):
    """Up to ``max_workers`` tasks at once; plain ``def`` tasks run in worker threads, ``async``
    tasks natively on Trio."""

    sync_mode: SyncMode = "thread"

    def __init__(self, max_workers: int = 4, **kwargs: Any) -> None:
        _check_positive("max_workers", max_workers)
        super().__init__(**kwargs)
        self.max_workers = max_workers

    def __repr__(self) -> str:
        return f"ThreadedExecutor(max_workers={self.max_workers})"

    @property
    def concurrency_limit(self) -> int:
        return self.max_workers

    @property
    def thread_limit(self) -> int:
        return self.max_workers


class AsyncExecutor(Executor):
    """Up to ``max_concurrent`` tasks at once; ``async`` tasks run natively on Trio, plain ``def``
    tasks in worker threads so they never block the others."""

    sync_mode: SyncMode = "thread"

    def __init__(self, max_concurrent: int = 50, **kwargs: Any) -> None:
        _check_positive("max_concurrent", max_concurrent)
        kwargs.pop("use_uvloop", None)  # FlowWeaver's asyncio option; meaningless on Trio
        super().__init__(**kwargs)
        self.max_concurrent = max_concurrent

    def __repr__(self) -> str:
        return f"AsyncExecutor(max_concurrent={self.max_concurrent})"

    @property
    def concurrency_limit(self) -> int:
        return self.max_concurrent

    @property
    def thread_limit(self) -> int:
        return self.max_concurrent


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int greater than 0, got {value!r}")


def resolve_executor(
    executor: ExecutorName | Executor,
    *,
    max_workers: int | None = None,
    max_concurrent: int | None = None,
) -> Executor:
    """An executor instance for ``executor`` (a name or an instance)."""
    if isinstance(executor, Executor):
        return executor
    if executor == "sequential":
        return SequentialExecutor()
    if executor == "threaded":
        return ThreadedExecutor(max_workers if max_workers is not None else 4)
    if executor == "async":
        return AsyncExecutor(max_concurrent if max_concurrent is not None else 50)
    raise ValueError(
        f"executor must be 'sequential', 'threaded', 'async' or an Executor, not {executor!r}"
    )


__all__ = [
    "AsyncExecutor",
    "Executor",
    "SequentialExecutor",
    "ThreadedExecutor",
    "resolve_executor",
]
