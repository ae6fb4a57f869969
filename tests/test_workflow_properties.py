"""Random DAGs (up to 200 tasks, random failures and retries) against a sequential reference: which
tasks complete, fail or never start, what each task receives, and that a resumed run runs each
task to completion at most once in total."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import attrs
import hypothesis.strategies as st
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings

from treadle import (
    AsyncExecutor,
    SequentialExecutor,
    SQLiteStateStore,
    Task,
    Workflow,
    WorkflowExecutionError,
)


@attrs.frozen
class Spec:
    name: str
    deps: tuple[str, ...]
    retries: int
    failures: int  # attempts that raise before one succeeds; > retries fails the task
    is_async: bool
    delay: float


@st.composite
def dags(draw: st.DrawFn) -> list[Spec]:
    n = draw(st.integers(1, 200))
    specs: list[Spec] = []
    for i in range(n):
        earlier = [s.name for s in specs]
        deps = draw(st.lists(st.sampled_from(earlier), max_size=4, unique=True)) if earlier else []
        retries = draw(st.integers(0, 2))
        # Mostly healthy tasks; a few flaky ones, some beyond their retries.
        failures = draw(st.sampled_from([0] * 12 + [1, 2, 3]))
        specs.append(
            Spec(
                name=f"t{i:03d}",
                deps=tuple(deps),
                retries=retries,
                failures=failures,
                is_async=draw(st.booleans()),
                delay=draw(st.sampled_from([0.0, 0.001, 0.01, 0.1])),
            )
        )
    return specs


def value_of(spec: Spec, injected: dict[str, Any]) -> int:
    return (int(spec.name[1:]) * 31 + sum(injected.values())) % 1_000_003


def reference(
    specs: list[Spec], *, failing: bool
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Statuses and injected arguments, computed sequentially layer by layer."""
    layer: dict[str, int] = {}
    for s in specs:
        layer[s.name] = 1 + max((layer[d] for d in s.deps), default=-1)
    fails = {s.name for s in specs if failing and s.failures > s.retries}
    stop = min((layer[n] for n in fails), default=None)
    status: dict[str, str] = {}
    values: dict[str, int] = {}
    injected: dict[str, dict[str, Any]] = {}
    for s in sorted(specs, key=lambda s: (layer[s.name], s.name)):
        if stop is not None and layer[s.name] > stop:
            status[s.name] = "pending"
            continue
        if s.name in fails:
            status[s.name] = "failed"
            continue
        args = {d: values[d] for d in s.deps}
        injected[s.name] = args
        values[s.name] = value_of(s, args)
        status[s.name] = "completed"
    return status, injected


def build(specs: list[Spec], *, failing: bool, log: dict[str, Any]) -> Workflow:
    wf = Workflow("random")
    for spec in specs:
        attempts = [0]

        def body(spec: Spec = spec, attempts: list[int] = attempts, **kwargs: Any) -> int:
            attempts[0] += 1
            if failing and attempts[0] <= spec.failures:
                raise ValueError(f"{spec.name} attempt {attempts[0]}")
            log["injected"][spec.name] = dict(kwargs)
            log["completions"][spec.name] = log["completions"].get(spec.name, 0) + 1
            return value_of(spec, kwargs)

        if spec.is_async:

            async def run(spec: Spec = spec, body: Any = body, **kwargs: Any) -> int:
                await trio.sleep(spec.delay)
                return body(**kwargs)  # type: ignore[no-any-return]

            wf.add_task(Task(spec.name, run, retries=spec.retries), depends_on=spec.deps)
        else:
            wf.add_task(Task(spec.name, body, retries=spec.retries), depends_on=spec.deps)
    return wf


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(specs=dags(), concurrency=st.integers(1, 8), data=st.data(), random_state=st.random_module())
def test_random_dags_match_the_sequential_reference(
    specs: list[Spec], concurrency: int, data: st.DataObject, random_state: object
) -> None:
    executor_kind = data.draw(st.sampled_from(["sequential", "async"]))
    if executor_kind == "async":
        # Sync bodies would go to worker threads, which the virtual clock must not race.
        specs = [attrs.evolve(s, is_async=True) for s in specs]
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStateStore(Path(tmp) / "state.db")

        def executor() -> Any:
            if executor_kind == "sequential":
                return SequentialExecutor(state_store=store)
            return AsyncExecutor(max_concurrent=concurrency, state_store=store)

        log: dict[str, Any] = {"injected": {}, "completions": {}}
        expected_status, expected_injected = reference(specs, failing=True)

        async def first() -> None:
            wf = build(specs, failing=True, log=log)
            failed = sorted(n for n, s in expected_status.items() if s == "failed")
            error: WorkflowExecutionError | None = None
            try:
                await executor().execute_async(wf)
            except WorkflowExecutionError as exc:
                error = exc
            assert (error.failed_tasks if error else ()) == tuple(failed)
            assert (error.failed_task if error else None) == (failed[0] if failed else None)
            assert {t.name: t.status.value for t in wf.tasks} == expected_status

        trio.run(first, clock=trio.testing.MockClock(autojump_threshold=0))
        assert log["injected"] == expected_injected
        completed_first = set(log["completions"])

        # The resumed run: nothing fails now; completed tasks are skipped, their results injected.
        log["completions"] = {}
        log["injected"] = {}
        final_status, final_injected = reference(specs, failing=False)

        async def second() -> None:
            wf = build(specs, failing=False, log=log)
            await executor().execute_async(wf)
            assert {t.name: t.status.value for t in wf.tasks} == final_status

        trio.run(second, clock=trio.testing.MockClock(autojump_threshold=0))
        assert completed_first.isdisjoint(log["completions"])
        assert set(log["completions"]) | completed_first == {s.name for s in specs}
        assert all(count == 1 for count in log["completions"].values())
        assert log["injected"] == {n: final_injected[n] for n in log["completions"]}
