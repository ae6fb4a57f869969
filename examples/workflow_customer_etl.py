"""The customer ETL pipeline of FlowWeaver's operating guide, on treadle.

Three ``@task`` functions whose upstream results arrive by parameter name, run under each executor,
then with a SQLite state store so a second run re-runs nothing. Writes ``customer_state.db`` in the
working directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from treadle import (
    AsyncExecutor,
    SequentialExecutor,
    SQLiteStateStore,
    TaskStatus,
    ThreadedExecutor,
    Workflow,
    task,
)

logger = logging.getLogger("customer_etl")
executions: list[str] = []


def build_workflow() -> Workflow:
    workflow = Workflow(
        name="customer_data_etl", description="Daily customer data extraction and loading"
    )

    @task()
    def extract_customers() -> dict[str, object]:
        executions.append("extract_customers")
        logger.info("Extracting customer data from CRM...")
        return {"count": 1000, "data": []}

    @task()
    def validate_data(extract_customers: dict[str, int] | None = None) -> int:
        assert extract_customers is not None
        executions.append("validate_data")
        logger.info("Validating %s records...", extract_customers["count"])
        return extract_customers["count"]

    @task()
    def load_warehouse(validate_data: int | None = None) -> dict[str, int | None]:
        executions.append("load_warehouse")
        logger.info("Loading %s records to warehouse...", validate_data)
        return {"loaded": validate_data}

    workflow.add_task(extract_customers)
    workflow.add_task(validate_data, depends_on=["extract_customers"])
    workflow.add_task(load_warehouse, depends_on=["validate_data"])
    return workflow


def main() -> None:
    plan = [[t.name for t in layer] for layer in build_workflow().get_execution_plan()]
    print(f"plan: {plan}")
    for executor in (SequentialExecutor(), ThreadedExecutor(max_workers=4), AsyncExecutor(8)):
        workflow = build_workflow()
        executor.execute(workflow)
        completed = sum(1 for t in workflow.tasks if t.status == TaskStatus.COMPLETED)
        print(
            f"{type(executor).__name__}: {completed} completed, "
            f"loaded {workflow.get_task_result('load_warehouse')}"
        )

    Path("customer_state.db").unlink(missing_ok=True)
    store = SQLiteStateStore("customer_state.db")
    first = build_workflow()
    ThreadedExecutor(max_workers=4, state_store=store).execute(first)
    executions.clear()
    second = build_workflow()
    ThreadedExecutor(max_workers=4, state_store=store).execute(second)
    print(
        f"second run executed {len(executions)} tasks; {second.stats()['completed']} completed "
        f"from the store, loaded {second.get_task_result('load_warehouse')}"
    )


if __name__ == "__main__":
    main()
