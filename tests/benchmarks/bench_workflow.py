"""Per-task overhead of workflows of no-op tasks: treadle's three executors beside FlowWeaver 0.2.x
and LangGraph's functional API (``@task`` / ``@entrypoint``), on the same two shapes.

Run: ``python tests/benchmarks/bench_workflow.py [--n 1000] [--reps 5] [--other-python PY]``

Shapes (``n`` no-op tasks plus one root):
- fanout: ``root`` -> ``t0`` ... ``t{n-1}`` (every task depends on the root only);
- chain: ``root`` -> ``t0`` -> ``t1`` -> ... -> ``t{n-1}``.
Tasks are plain ``def`` no-ops under sequential and threaded executors and ``async def`` no-ops under
async executors. This module imports ``asyncio`` and not ``trio``, so treadle runs its ``async def``
tasks as it runs FlowWeaver code, each on an asyncio loop in a worker thread; the row
``AsyncExecutor(50), Trio tasks`` runs the same no-ops natively on Trio (``async_backend="trio"``). Times exclude building the workflow and include everything ``run``/``execute``/
``invoke`` does; the figure is the median of ``reps`` runs divided by ``n + 1`` (µs per task).

FlowWeaver and LangGraph are not treadle dependencies: install them into a separate venv (``python -m
venv /tmp/wfbench && /tmp/wfbench/bin/pip install flowweaver==0.2.2 langgraph``) and pass its
interpreter as ``--other-python``; this script then runs itself there with ``--only other`` and
prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

SHAPES = ("fanout", "chain")


def _median_us(run: Callable[[], Any], n: int, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times) / (n + 1) * 1e6


def _deps(shape: str, i: int) -> list[str]:
    if shape == "fanout" or i == 0:
        return ["root"]
    return [f"t{i - 1}"]


Executors = list[tuple[str, Callable[[], Any], Callable[..., Any], dict[str, Any]]]


def _bench_executors(
    system: str, workflow_cls: Any, task_cls: Any, executors: Executors, n: int, reps: int
) -> list[dict[str, Any]]:
    """Time each executor on both shapes; the two libraries share this API."""
    rows = []
    for shape in SHAPES:
        for label, make, fn, options in executors:

            def build(
                shape: str = shape, fn: Callable[..., Any] = fn, options: dict[str, Any] = options
            ) -> Any:
                wf = workflow_cls(f"bench-{shape}")
                wf.add_task(task_cls("root", fn, **options))
                for i in range(n):
                    wf.add_task(task_cls(f"t{i}", fn, **options), depends_on=_deps(shape, i))
                return wf

            it = iter([build() for _ in range(reps)])
            us = _median_us(lambda make=make, it=it: make().execute(next(it)), n, reps)
            rows.append({"system": system, "executor": label, "shape": shape, "us": us})
    return rows


# -- treadle ----------------------------------------------------------------------------------------


def bench_treadle(n: int, reps: int) -> list[dict[str, Any]]:
    import _treadle_path  # noqa: F401  # makes `import treadle` work from a checkout

    from treadle import AsyncExecutor, SequentialExecutor, Task, ThreadedExecutor, Workflow

    def noop(**_: object) -> None:
        return None

    async def anoop(**_: object) -> None:
        return None

    executors: Executors = [
        ("SequentialExecutor()", SequentialExecutor, noop, {}),
        ("ThreadedExecutor(4)", lambda: ThreadedExecutor(max_workers=4), noop, {}),
        ("AsyncExecutor(50)", lambda: AsyncExecutor(max_concurrent=50), anoop, {}),
        (
            "AsyncExecutor(50), Trio tasks",
            lambda: AsyncExecutor(max_concurrent=50),
            anoop,
            {"async_backend": "trio"},
        ),
    ]
    return _bench_executors("treadle", Workflow, Task, executors, n, reps)


# -- FlowWeaver 0.2.x -------------------------------------------------------------------------------


def bench_flowweaver(n: int, reps: int) -> list[dict[str, Any]]:
    import flowweaver
    from flowweaver import AsyncExecutor, SequentialExecutor, Task, ThreadedExecutor, Workflow

    def noop() -> None:
        return None

    async def anoop() -> None:
        return None

    executors: Executors = [
        ("SequentialExecutor()", SequentialExecutor, noop, {}),
        ("ThreadedExecutor(4)", lambda: ThreadedExecutor(max_workers=4), noop, {}),
        ("AsyncExecutor()", AsyncExecutor, anoop, {}),
    ]
    system = f"FlowWeaver {flowweaver.__version__}"
    return _bench_executors(system, Workflow, Task, executors, n, reps)


# -- LangGraph functional API -----------------------------------------------------------------------


def bench_langgraph(n: int, reps: int) -> list[dict[str, Any]]:
    from importlib.metadata import version

    from langgraph.func import entrypoint, task

    @task
    def noop(x: int) -> int:
        return x

    @task
    async def anoop(x: int) -> int:
        return x

    @entrypoint()
    def fanout(x: int) -> int:
        root = noop(x).result()
        futures = [noop(root) for _ in range(n)]
        return sum(f.result() for f in futures)

    @entrypoint()
    def chain(x: int) -> int:
        x = noop(x).result()
        for _ in range(n):
            x = noop(x).result()
        return x

    @entrypoint()
    async def afanout(x: int) -> int:
        root = await anoop(x)
        return sum(await asyncio.gather(*(anoop(root) for _ in range(n))))

    @entrypoint()
    async def achain(x: int) -> int:
        x = await anoop(x)
        for _ in range(n):
            x = await anoop(x)
        return x

    system = f"LangGraph {version('langgraph')}"
    rows = []
    for shape, sync_app, async_app in (("fanout", fanout, afanout), ("chain", chain, achain)):
        us = _median_us(lambda app=sync_app: app.invoke(1), n, reps)
        rows.append(
            {"system": system, "executor": "@entrypoint (sync tasks)", "shape": shape, "us": us}
        )
        us = _median_us(lambda app=async_app: asyncio.run(app.ainvoke(1)), n, reps)
        rows.append(
            {"system": system, "executor": "@entrypoint (async tasks)", "shape": shape, "us": us}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--other-python", default=None, help="interpreter with flowweaver/langgraph"
    )
    parser.add_argument("--only", choices=["treadle", "other"], default=None)
    args = parser.parse_args()
    if args.only == "other":
        rows = []
        for bench in (bench_flowweaver, bench_langgraph):
            try:
                rows += bench(args.n, args.reps)
            except ImportError as exc:
                print(f"skipped {bench.__name__}: {exc}", file=sys.stderr)
        print(json.dumps(rows))
        return
    rows = bench_treadle(args.n, args.reps)
    if args.other_python:
        out = subprocess.run(
            [args.other_python, __file__, "--only", "other", "--n", str(args.n), "--reps",
             str(args.reps)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows += json.loads(out.stdout)
    print(f"{'system':<18} {'executor':<28} {'fanout µs/task':>15} {'chain µs/task':>14}")
    keys = dict.fromkeys((r["system"], r["executor"]) for r in rows)
    for system, executor in keys:
        by_shape = {
            r["shape"]: r["us"] for r in rows if (r["system"], r["executor"]) == (system, executor)
        }
        print(
            f"{system:<18} {executor:<28} {by_shape.get('fanout', float('nan')):>15.1f} "
            f"{by_shape.get('chain', float('nan')):>14.1f}"
        )


if __name__ == "__main__":
    main()
