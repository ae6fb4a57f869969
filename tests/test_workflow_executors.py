"""The three executors run the same compiled graph: the operating guide's pipeline, real thread
parallelism, timeouts under every executor, retries and failure semantics."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import trio
import trio.lowlevel

import treadle
from treadle import (
    AsyncExecutor,
    SequentialExecutor,
    Task,
    TaskStatus,
    ThreadedExecutor,
    Workflow,
    WorkflowExecutionError,
    task,
)

EXECUTORS = [
    pytest.param(lambda: SequentialExecutor(), id="sequential"),
    pytest.param(lambda: ThreadedExecutor(max_workers=4), id="threaded"),
    pytest.param(lambda: AsyncExecutor(max_concurrent=4), id="async"),
]


def customer_pipeline() -> Workflow:
    """The operating guide's three-task customer pipeline."""

    @task()
    def extract_customers() -> dict[str, object]:
        return {"count": 1000, "data": []}

    @task()
    def validate_data(extract_customers: dict[str, int] | None = None) -> int:
        assert extract_customers is not None
        return extract_customers["count"]

    @task()
    def load_warehouse(validate_data: int | None = None) -> dict[str, int | None]:
        return {"loaded": validate_data}

    wf = Workflow("customer_data_etl", description="Daily customer data extraction and loading")
    wf.add_task(extract_customers)
    wf.add_task(validate_data, depends_on=["extract_customers"])
    wf.add_task(load_warehouse, depends_on=["validate_data"])
    return wf


@pytest.mark.parametrize("make", EXECUTORS)
def test_operating_guide_pipeline_under_every_executor(make: object) -> None:
    wf = customer_pipeline()
    executor = make()  # type: ignore[operator]
    executor.execute(wf)
    assert wf.get_task_result("load_warehouse") == {"loaded": 1000}
    assert all(t.status is TaskStatus.COMPLETED for t in wf.tasks)
    assert wf.stats()["completed"] == 3


@pytest.mark.parametrize("name", ["sequential", "threaded", "async"])
def test_run_by_executor_name(name: str) -> None:
    wf = customer_pipeline()
    results = wf.run(name, max_workers=2, max_concurrent=2)  # type: ignore[arg-type]
    assert results["load_warehouse"] == {"loaded": 1000}


def test_four_sync_tasks_meet_at_a_barrier_under_threaded_executor() -> None:
    barrier = threading.Barrier(4, timeout=5)
    threads: set[int] = set()

    def meet() -> str:
        threads.add(threading.get_ident())
        barrier.wait()  # raises BrokenBarrierError after 5 s unless all four run at once
        return "met"

    wf = Workflow("parallel")
    for i in range(4):
        wf.add_task(Task(f"t{i}", meet))
    results = ThreadedExecutor(max_workers=4).execute(wf)
    assert results == {f"t{i}": "met" for i in range(4)}
    assert len(threads) == 4
    assert threading.get_ident() not in threads


@pytest.mark.parametrize("make", EXECUTORS)
def test_a_sync_task_past_its_timeout_fails_at_the_deadline(make: object) -> None:
    def sleepy() -> str:
        time.sleep(5)  # its thread is abandoned at the deadline and finishes on its own
        return "late"

    wf = Workflow("timeouts")
    wf.add_task(Task("sleepy", sleepy, timeout=0.2))
    wf.add_task(Task("after", lambda sleepy: sleepy), depends_on=["sleepy"])
    started = time.monotonic()
    with pytest.raises(WorkflowExecutionError) as info:
        make().execute(wf)  # type: ignore[operator]
    elapsed = time.monotonic() - started
    assert elapsed < 1.0
    assert info.value.failed_task == "sleepy"
    cause = info.value.__cause__
    assert isinstance(cause, treadle.TaskExecutionError)
    assert isinstance(cause.__cause__, treadle.TaskTimeoutError)
    assert isinstance(cause.__cause__, TimeoutError)
    assert wf.get_task_status("sleepy") is TaskStatus.FAILED
    assert "exceeded its timeout of 0.2 s" in (wf.get_task("sleepy").error or "")  # type: ignore[union-attr]
    assert wf.get_task_status("after") is TaskStatus.PENDING


@pytest.mark.parametrize("make", EXECUTORS)
def test_an_async_task_past_its_timeout_is_cancelled_and_retried(make: object) -> None:
    retries: list[int] = []

    async def slow() -> None:
        await trio.sleep(5)

    wf = Workflow("async-timeouts")
    wf.add_task(
        Task("slow", slow, retries=2, timeout=0.05, on_retry=lambda n, a: retries.append(a))
    )
    started = time.monotonic()
    with pytest.raises(WorkflowExecutionError):
        make().execute(wf)  # type: ignore[operator]
    assert time.monotonic() - started < 1.0
    assert retries == [1, 2]
    assert wf.get_task("slow").attempts == 3  # type: ignore[union-attr]


@pytest.mark.parametrize("make", EXECUTORS)
def test_failure_stops_downstream_and_records_running_siblings(make: object) -> None:
    started: list[str] = []

    def work(name: str, fail: bool = False, seconds: float = 0.0) -> object:
        def body() -> str:
            started.append(name)
            time.sleep(seconds)
            if fail:
                raise ValueError(f"{name} broke")
            return name

        return body

    wf = Workflow("failure")
    wf.add_task(Task("root", work("root")))
    wf.add_task(Task("bad", work("bad", fail=True), retries=1), depends_on=["root"])
    wf.add_task(Task("slow_sibling", work("slow_sibling", seconds=0.2)), depends_on=["root"])
    wf.add_task(Task("below_bad", work("below_bad")), depends_on=["bad"])
    wf.add_task(Task("below_sibling", work("below_sibling")), depends_on=["slow_sibling"])
    wf.add_task(Task("join", work("join")), depends_on=["bad", "slow_sibling"])
    with pytest.raises(WorkflowExecutionError, match="failed at task 'bad'") as info:
        make().execute(wf)  # type: ignore[operator]
    assert info.value.failed_tasks == ("bad",)
    cause = info.value.__cause__
    assert isinstance(cause, treadle.TaskExecutionError)
    assert cause.task == "bad"
    assert cause.attempts == 2
    assert isinstance(cause.__cause__, ValueError)
    status = {t.name: t.status.value for t in wf.tasks}
    assert status == {
        "root": "completed",
        "bad": "failed",
        "slow_sibling": "completed",  # it was running: it finished and was recorded
        "below_bad": "pending",
        "below_sibling": "pending",  # the run stops after the failing layer
        "join": "pending",
    }
    assert wf.get_task_result("slow_sibling") == "slow_sibling"
    assert sorted(started) == ["bad", "bad", "root", "slow_sibling"]
    assert wf.status is treadle.WorkflowStatus.FAILED


def test_async_tasks_run_concurrently_under_async_executor() -> None:
    async def fetch(i: int) -> int:
        await trio.sleep(0.2)
        return i

    wf = Workflow("io")
    for i in range(5):

        async def fetch_i(i: int = i) -> int:
            return await fetch(i)

        wf.add_task(Task(f"f{i}", fetch_i))
    for i in range(5, 10):
        # A plain function returning a coroutine (FlowWeaver's README style) is awaited too.
        wf.add_task(Task(f"f{i}", lambda i=i: fetch(i)))
    started = time.monotonic()
    results = AsyncExecutor(max_concurrent=10).execute(wf)
    assert time.monotonic() - started < 1.5
    assert results == {f"f{i}": i for i in range(10)}


def test_executor_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        ThreadedExecutor(max_workers=0)
    with pytest.raises(ValueError, match="max_concurrent"):
        AsyncExecutor(max_concurrent=0)
    with pytest.raises(TypeError, match="unexpected"):
        SequentialExecutor(bogus=1)
    with pytest.raises(ValueError, match="executor must be"):
        customer_pipeline().run("fast")  # type: ignore[arg-type]


ASYNCIO_MODULE = """
import asyncio

async def fetch(delay=0.01):
    await asyncio.sleep(delay)
    return asyncio.get_running_loop().__class__.__name__

async def slow():
    await asyncio.sleep(5)
"""


def asyncio_functions() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(ASYNCIO_MODULE, namespace)  # a module that imports asyncio and not trio, as FlowWeaver's
    return namespace


@pytest.mark.parametrize("make", EXECUTORS)
def test_async_tasks_written_for_asyncio_run_on_an_asyncio_loop(make: object) -> None:
    ns = asyncio_functions()
    fetch = Task("fetch", ns["fetch"])
    assert fetch.runs_on_asyncio()
    assert not Task(
        "native", test_async_tasks_run_concurrently_under_async_executor
    ).runs_on_asyncio()
    wf = Workflow("asyncio")
    wf.add_task(fetch)
    wf.add_task(Task("slow", ns["slow"], timeout=0.2), depends_on=["fetch"])
    started = time.monotonic()
    with pytest.raises(WorkflowExecutionError, match="'slow'"):
        make().execute(wf)  # type: ignore[operator]
    assert time.monotonic() - started < 1.0
    assert wf.get_task_result("fetch").endswith("EventLoop")
    assert "exceeded its timeout of 0.2 s" in (wf.get_task("slow").error or "")  # type: ignore[union-attr]


def test_async_backend_can_be_chosen_and_execute_async_awaited_from_asyncio() -> None:
    import asyncio

    async def on_trio() -> str:
        await trio.lowlevel.checkpoint()
        return "trio"

    t = Task("t", on_trio, async_backend="trio")
    assert not t.runs_on_asyncio()
    # FlowWeaver awaits task.execute_async() on an asyncio loop: it runs in the loop's executor.
    assert asyncio.run(t.execute_async()) == "trio"
    assert t.status is TaskStatus.COMPLETED
    with pytest.raises(ValueError, match="async_backend"):
        Task("bad", on_trio, async_backend="curio")  # type: ignore[arg-type]
