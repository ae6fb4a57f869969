"""FlowWeaver's async aggregation, on treadle: fifteen ``async`` fetch tasks (five users, three
sources) run concurrently under ``AsyncExecutor``, an aggregate task receives all of them through
``**kwargs``, and callbacks watch statuses and retries. Async tasks run on Trio (``trio.sleep``
where FlowWeaver used ``asyncio.sleep``); the workflow is awaited inside ``trio.run``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import trio

from treadle import AsyncExecutor, Task, TaskStatus, Workflow

SOURCES = {"profile": 0.2, "activity": 0.15, "analytics": 0.1}  # simulated latency, seconds
seen: Counter[str] = Counter()


def on_status_change(task_name: str, status: TaskStatus) -> None:
    seen[status.value] += 1


def on_retry(task_name: str, attempt: int) -> None:
    print(f"retrying {task_name} (attempt {attempt + 1})")


def fetcher(source: str, user_id: int) -> Any:
    attempts = [0]

    async def fetch() -> dict[str, int]:
        await trio.sleep(SOURCES[source])
        attempts[0] += 1
        if source == "activity" and user_id == 3 and attempts[0] == 1:
            raise ConnectionError("activity API timed out")  # a transient failure, retried
        return {f"{source}_score": 10 * user_id + len(source)}

    return fetch


async def aggregate(**results: dict[str, int]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for value in results.values():
        total.update(value)
    return dict(total)


async def compute_analytics(aggregate: dict[str, int]) -> dict[str, float]:
    await trio.sleep(0.05)
    return {key: value / 5 for key, value in sorted(aggregate.items())}


def build() -> Workflow:
    workflow = Workflow("async_aggregation")
    names = []
    for user_id in range(1, 6):
        for source in SOURCES:
            name = f"{source}_{user_id}"
            workflow.add_task(
                Task(
                    name,
                    fetcher(source, user_id),
                    retries=1,
                    timeout=2.0,
                    on_status_change=on_status_change,
                    on_retry=on_retry,
                )
            )
            names.append(name)
    workflow.add_task(Task("aggregate", aggregate, on_status_change=on_status_change), names)
    workflow.add_task(Task("compute_analytics", compute_analytics), depends_on=["aggregate"])
    return workflow


async def main() -> None:
    workflow = build()
    started = trio.current_time()
    await AsyncExecutor(max_concurrent=20).execute_async(workflow)
    elapsed = trio.current_time() - started
    print(f"analytics: {workflow.get_task_result('compute_analytics')}")
    print(f"15 fetches overlapped: {elapsed < 0.9}")
    print(f"status changes: {dict(sorted(seen.items()))}")


if __name__ == "__main__":
    trio.run(main)
