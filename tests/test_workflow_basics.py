"""Workflow definition: the decorator, add_task checks, the plan, data by parameter name, callbacks,
events and the FlowWeaver-compatible reading methods."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

import treadle
from treadle import (
    EventBus,
    MemorySink,
    SequentialExecutor,
    Task,
    TaskStatus,
    Workflow,
    WorkflowExecutionError,
    WorkflowStatus,
    task,
)


def test_task_decorator_bare_and_called_keeps_functions_callable() -> None:
    @task
    def bare(x: int = 1) -> int:
        return x + 1

    @task(name="renamed", retries=2, timeout=3.0)
    def called(text: str = " x ", upper: bool = False) -> str:
        return text.strip().upper() if upper else text.strip()

    assert bare(2) == 3
    assert called.__flowweaver__["name"] == "renamed"  # type: ignore[attr-defined]
    assert called.__flowweaver__["retries"] == 2  # type: ignore[attr-defined]
    assert called("  hi ") == "hi"
    assert called(" hi ", upper=True) == "HI"
    wf = Workflow("w")
    a = wf.add_task(bare)
    b = wf.add_task(called, depends_on=["bare"])
    assert (a.name, a.retries) == ("bare", 0)
    assert (b.name, b.retries, b.timeout) == ("renamed", 2, 3.0)


def test_missing_argument_is_an_error_at_add_task() -> None:
    @task(name="renamed")
    def needs(text: str) -> str:
        return text

    wf = Workflow("w")
    with pytest.raises(treadle.MissingArgument, match="parameter 'text' of task 'renamed'"):
        wf.add_task(needs)
    assert wf.tasks == []


def test_statuses_have_lowercase_values() -> None:
    assert [s.value for s in TaskStatus] == [
        "pending", "running", "completed", "failed", "skipped", "retrying",
    ]  # fmt: skip
    assert [s.value for s in WorkflowStatus] == ["idle", "running", "completed", "failed"]


def test_add_task_errors_name_the_tasks() -> None:
    wf = Workflow("etl")
    wf.add_task(Task("a", lambda: 1))
    with pytest.raises(treadle.DuplicateTask, match="Task 'a' already exists"):
        wf.add_task(Task("a", lambda: 2))
    with pytest.raises(
        treadle.UnknownDependency, match="Dependency 'zz' of task 'b' does not exist"
    ):
        wf.add_task(Task("b", lambda: 2), depends_on=["zz"])
    with pytest.raises(treadle.DependencyCycle, match="circular dependency: c -> c"):
        wf.add_task(Task("c", lambda: 2), depends_on=["a", "c"])
    # Definition errors are ValueErrors (as in FlowWeaver) and TreadleErrors.
    assert issubclass(treadle.WorkflowDefinitionError, ValueError)
    assert issubclass(treadle.WorkflowDefinitionError, treadle.TreadleError)
    assert [t.name for t in wf.tasks] == ["a"]


def test_execution_plan_is_layered_and_alphabetical() -> None:
    wf = Workflow("plan")
    for name in ("e", "a", "c"):
        wf.add_task(Task(name, lambda: None))
    wf.add_task(Task("d", lambda: None), depends_on=["e", "a"])
    wf.add_task(Task("b", lambda: None), depends_on=["c"])
    wf.add_task(Task("f", lambda: None), depends_on=["d", "c"])
    plan = [[t.name for t in layer] for layer in wf.get_execution_plan()]
    assert plan == [["a", "c", "e"], ["b", "d"], ["f"]]
    assert Workflow("empty").get_execution_plan() == []


def test_a_100000_task_chain_adds_plans_and_describes_without_recursion() -> None:
    def step(**upstream: object) -> None:
        return None

    wf = Workflow("deep")
    wf.add_task(Task("t0", step))
    for i in range(1, 100_000):
        wf.add_task(Task(f"t{i}", step), depends_on=[f"t{i - 1}"])
    plan = wf.get_execution_plan()
    assert len(plan) == 100_000
    assert plan[-1][0].name == "t99999"
    assert wf.task_graph()[-1].depends_on == ("t99998",)


def test_results_arrive_by_parameter_name_from_direct_dependencies_only() -> None:
    seen: dict[str, object] = {}

    @task
    def a() -> int:
        return 1

    @task
    def b(a: int) -> int:
        return a + 10

    @task
    def c(b: int, a: str = "default", other: int = 7) -> int:
        # `a` is not a direct dependency of c: it keeps its default.
        seen["c"] = (b, a, other)
        return b

    @task
    def d(c: int, **kwargs: object) -> None:
        seen["d"] = (c, kwargs)

    @task
    def e(**kwargs: object) -> None:
        seen["e"] = kwargs

    wf = Workflow("data")
    wf.add_task(a)
    wf.add_task(b, depends_on=["a"])
    wf.add_task(c, depends_on=["b"])
    wf.add_task(d, depends_on=["c", "b"])
    wf.add_task(e, depends_on=["b", "a"])
    results = wf.run()
    assert seen == {"c": (11, "default", 7), "d": (11, {"b": 11}), "e": {"b": 11, "a": 1}}
    assert results == {"a": 1, "b": 11, "c": 11, "d": None, "e": None}
    assert wf.get_task_result("c") == 11
    assert wf.get_task_status("c") is TaskStatus.COMPLETED
    assert wf.get_task_status("nope") is None
    with pytest.raises(KeyError):
        wf.get_task_result("nope")
    assert list(wf.get_all_tasks()) == ["a", "b", "c", "d", "e"]
    assert wf.get_dependencies("d") == ["c", "b"]
    assert wf.status is WorkflowStatus.COMPLETED


def test_stats_count_statuses() -> None:
    wf = Workflow("stats")
    assert wf.stats()["total_time_seconds"] == 0.0
    wf.add_task(Task("ok", lambda: 1))
    wf.add_task(Task("bad", lambda: 1 / 0))
    wf.add_task(Task("after", lambda: 2), depends_on=["bad"])
    with pytest.raises(WorkflowExecutionError):
        wf.run()
    stats = wf.get_workflow_stats()
    assert {k: stats[k] for k in ("total_tasks", "completed", "failed", "pending", "running")} == {
        "total_tasks": 3, "completed": 1, "failed": 1, "pending": 1, "running": 0,
    }  # fmt: skip
    assert stats["total_time_seconds"] >= 0.0
    assert stats["status"] == "failed"


def test_callbacks_see_each_status_change_and_retry() -> None:
    calls: list[object] = []
    attempts = iter([ValueError("one"), ValueError("two"), None])

    def flaky() -> int:
        error = next(attempts)
        if error is not None:
            raise error
        return 100

    t = Task(
        "flaky",
        flaky,
        retries=3,
        on_status_change=lambda n, s: calls.append((n, s.value)),
        on_retry=lambda n, a: calls.append(("retry", n, a)),
        callbacks=[lambda tk: calls.append(("done", tk.name, tk.status.value, tk.result))],
    )
    assert t.execute() == 100
    assert calls == [
        ("flaky", "running"),
        ("retry", "flaky", 1),
        ("flaky", "retrying"),
        ("retry", "flaky", 2),
        ("flaky", "retrying"),
        ("flaky", "completed"),
        ("done", "flaky", "completed", 100),
    ]
    assert (t.status, t.attempts, t.result) == (TaskStatus.COMPLETED, 3, 100)
    assert t.duration is not None
    assert t.duration >= 0


def test_a_raising_callback_is_logged_and_never_reruns_or_fails_the_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []

    def boom(*args: object) -> None:
        raise RuntimeError("callback boom")

    def body() -> str:
        runs.append(1)
        return "ok"

    wf = Workflow("cb")
    wf.add_task(Task("t", body, retries=2, on_status_change=boom, on_retry=boom, callbacks=[boom]))
    with caplog.at_level(logging.ERROR, logger="treadle.workflow"):
        assert wf.run() == {"t": "ok"}
    assert runs == [1]
    assert wf.get_task_status("t") is TaskStatus.COMPLETED
    assert (
        sum("callback boom" in r.getMessage() or r.exc_info is not None for r in caplog.records)
        >= 3
    )


def test_task_execute_records_failure_without_raising() -> None:
    t = Task("bad", lambda: 1 / 0, 2)
    assert t.execute() is None
    assert t.status is TaskStatus.FAILED
    assert t.attempts == 3
    assert t.error == "division by zero"
    assert isinstance(t.exception, treadle.TaskExecutionError)
    # FlowWeaver's direct call with a context dict: matched parameters and **kwargs.
    probe = Task("probe", lambda up=None, **kw: (up, kw))
    assert probe.execute({"up": 1, "other": 2}) == (1, {"other": 2})


async def test_run_async_inside_trio_publishes_each_status_change_as_an_event() -> None:
    with trio.fail_after(10):
        memory = MemorySink()
        wf = Workflow("events")
        wf.add_task(Task("a", lambda: 1))
        wf.add_task(Task("b", lambda a: a + 1, retries=1), depends_on=["a"])
        results = await wf.run_async(SequentialExecutor(), event_bus=EventBus([memory]))
        assert results == {"a": 1, "b": 2}
        task_events = [
            (e.metadata["task"], e.scope) for e in memory.snapshot() if e.scope.startswith("task.")
        ]
        assert task_events == [
            ("a", "task.running"),
            ("a", "task.completed"),
            ("b", "task.running"),
            ("b", "task.completed"),
        ]
        node_ids = {e.node_id for e in memory.snapshot() if e.scope.startswith("task.")}  # type: ignore[union-attr]
        assert node_ids == {"a", "b"}


@pytest.mark.parametrize("name", ["__start__", "__end__"])
def test_a_task_named_like_start_or_end_fails_the_run(name: str) -> None:
    wf = Workflow("reserved")
    wf.add_task(Task(name, lambda: 1))
    with pytest.raises(treadle.ReservedNodeName):
        wf.run()


def test_a_workflow_run_again_runs_the_tasks_added_since() -> None:
    calls: list[str] = []

    def step(name: str, value: int) -> Task:
        def body(**_: object) -> int:
            calls.append(name)
            return value

        return Task(name, body)

    wf = Workflow("again")
    wf.add_task(step("a", 1))
    assert wf.run() == {"a": 1}
    assert wf.run() == {"a": 1}
    wf.add_task(step("b", 2), depends_on=["a"])
    assert wf.run() == {"a": 1, "b": 2}
    assert calls == ["a", "a", "a", "b"]


async def test_overlapping_runs_of_one_workflow_each_get_all_their_results(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(**_: object) -> int:
        await trio.sleep(1)
        return 1

    wf = Workflow("overlap")
    wf.add_task(Task("a", slow))
    wf.add_task(Task("b", slow), depends_on=["a"])
    results: list[dict[str, object]] = []

    async def run(session_id: str) -> None:
        results.append(await wf.run_async("async", session_id=session_id))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "first")
            await trio.sleep(0.5)
            nursery.start_soon(run, "second")
    assert results == [{"a": 1, "b": 1}, {"a": 1, "b": 1}]


def test_task_graph_reads_tasks_dependencies_and_statuses() -> None:
    wf = Workflow("view")
    wf.add_task(Task("a", lambda: 1))
    wf.add_task(Task("b", lambda: 1 / 0), depends_on=["a"])
    wf.add_task(Task("c", lambda: 3), depends_on=["b"])
    with pytest.raises(WorkflowExecutionError) as info:
        wf.run()
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, treadle.TreadleError)
    assert info.value.failed_task == "b"
    assert isinstance(info.value.__cause__, treadle.TaskExecutionError)
    assert isinstance(info.value.__cause__.__cause__, ZeroDivisionError)
    view = [(v.name, v.depends_on, v.status.value) for v in wf.task_graph()]
    assert view == [("a", (), "completed"), ("b", ("a",), "failed"), ("c", ("b",), "pending")]


def test_flowweaver_mermaid_calls_accept_a_workflow(tmp_path: Path) -> None:
    wf = Workflow("drawn")
    wf.add_task(Task("extract", lambda: 1))
    wf.add_task(Task("load", lambda extract: extract), depends_on=["extract"])
    wf.run()
    text = treadle.export_mermaid(wf, orientation="LR")
    assert text.splitlines()[0] == "flowchart LR"
    assert "completed" in text
    saved = treadle.save_mermaid(wf, tmp_path / "d.md", orientation="LR")
    assert "extract" in Path(saved).read_text()
    page = treadle.view_mermaid(wf, orientation="LR", open_browser=False, path=tmp_path / "d.html")
    assert Path(page).exists()
