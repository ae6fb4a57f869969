"""Resume after a failure: the first run fails at ``transform``; the fixed second run, on the same
JSON state store, runs only ``transform`` and ``load`` and gives them the stored upstream results
(falsy ones included). Writes ``resume_state.json`` in the working directory.
"""

from __future__ import annotations

from pathlib import Path

from treadle import (
    JSONStateStore,
    TaskExecutionError,
    ThreadedExecutor,
    Workflow,
    WorkflowExecutionError,
    task,
)

ran: list[str] = []


def build(broken: bool) -> Workflow:
    @task
    def fetch_orders() -> list[dict[str, int]]:
        ran.append("fetch_orders")
        return [{"id": 1, "qty": 2}, {"id": 2, "qty": 5}]

    @task
    def fetch_refunds() -> int:
        ran.append("fetch_refunds")
        return 0  # a falsy result: stored and injected as 0, not lost

    @task(retries=1)
    def transform(fetch_orders: list[dict[str, int]], fetch_refunds: int) -> int:
        ran.append("transform")
        if broken:
            raise ValueError("unit price table is missing")
        return sum(o["qty"] for o in fetch_orders) - fetch_refunds

    @task
    def load(transform: int) -> str:
        ran.append("load")
        return f"loaded {transform} units"

    workflow = Workflow("orders")
    workflow.add_task(fetch_orders)
    workflow.add_task(fetch_refunds)
    workflow.add_task(transform, depends_on=["fetch_orders", "fetch_refunds"])
    workflow.add_task(load, depends_on=["transform"])
    return workflow


def main() -> None:
    Path("resume_state.json").unlink(missing_ok=True)
    store = JSONStateStore("resume_state.json")
    first = build(broken=True)
    try:
        ThreadedExecutor(max_workers=2, state_store=store).execute(first)
    except WorkflowExecutionError as exc:
        cause = exc.__cause__  # the failed task's TaskExecutionError
        if isinstance(cause, TaskExecutionError):
            print(f"first run failed at {exc.failed_task!r}: {cause.cause}")
    print(f"first run ran: {sorted(ran)}")
    print(f"statuses: {[(t.name, t.status.value) for t in first.tasks]}")

    ran.clear()
    second = build(broken=False)
    ThreadedExecutor(max_workers=2, state_store=store).execute(second)
    print(f"second run ran: {ran}")
    print(f"result: {second.get_task_result('load')}")


if __name__ == "__main__":
    main()
