"""Where the time of one ``sync`` SQLite step goes: the 2-node loop of ``bench_checkpoint.py``, with
timers around each stage of a save.

Run: ``python tests/benchmarks/bench_sync_step.py [--runs N] [--cpu N]``. Prints the loop's rate
(the timers cost a little of it) and, for each stage, the median µs per step:

- *ask → store*: from the scheduler asking the checkpointer actor to the actor starting the save;
- *draft*: encoding the step on the Trio thread (:func:`draft_steps`);
- *to the thread*: from queueing the job to the connection thread starting it;
- *in the thread*: the transaction;
- *back*: from the transaction's end to the actor running again;
- *store → asker*: from the save's end to the scheduler running again;
- *the rest*: everything else in the step (the nodes, the barrier, the routing, building the record).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
import trio
from bench_checkpoint import loop_app, one_run

from treadle.runtime.checkpointers import SQLiteCheckpointer, base, connection

# After the path setup:
from treadle.runtime.checkpointers import actor as checkpointer_actor

STEPS = 1_000
now = time.perf_counter_ns
timings: dict[str, list[int]] = collections.defaultdict(list)
marks: dict[str, int] = {}


def install_timers() -> None:
    actor_save = checkpointer_actor.CheckpointerActor.save
    store_save = base.ThreadedStore.save
    draft = base.draft_steps
    call = connection.ConnectionThread.call

    async def timed_actor_save(self: Any, cp: Any) -> None:
        marks["asked"] = now()
        await actor_save(self, cp)
        timings["store → asker"].append(now() - marks["saved"])

    async def timed_store_save(self: Any, cp: Any) -> None:
        timings["ask → store"].append(now() - marks["asked"])
        await store_save(self, cp)
        marks["saved"] = now()

    def timed_draft(codec: Any, cps: Any) -> Any:
        started = now()
        try:
            return draft(codec, cps)
        finally:
            timings["draft"].append(now() - started)

    async def timed_call(self: Any, fn: Callable[[], Any]) -> Any:
        def job() -> Any:
            marks["thread started"] = now()
            try:
                return fn()
            finally:
                marks["thread done"] = now()

        queued = now()
        try:
            return await call(self, job)
        finally:
            timings["to the thread"].append(marks["thread started"] - queued)
            timings["in the thread"].append(marks["thread done"] - marks["thread started"])
            timings["back"].append(now() - marks["thread done"])

    checkpointer_actor.CheckpointerActor.save = timed_actor_save  # type: ignore[method-assign]
    base.ThreadedStore.save = timed_store_save  # type: ignore[method-assign]
    base.draft_steps = timed_draft
    connection.ConnectionThread.call = timed_call  # type: ignore[method-assign]


async def measure(runs: int) -> list[float]:
    app = loop_app(STEPS)
    rates = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(runs):
            store = SQLiteCheckpointer(Path(folder) / f"{uuid.uuid4().hex}.db")
            rates.append(STEPS / await one_run(app, STEPS, store, "sync"))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    install_timers()
    rates = trio.run(measure, args.runs)
    step_us = 1e6 / statistics.median(rates)
    pinned = f", pinned to CPU {args.cpu}" if args.cpu is not None else ""
    print(f"SQLite sync, {args.runs} runs of {STEPS} steps{pinned}: median {step_us:.0f} µs a step")
    stages = {name: statistics.median(values) / 1000 for name, values in timings.items()}
    order = ["ask → store", "draft", "to the thread", "in the thread", "back", "store → asker"]
    for name in order:
        print(f"  {name:<16} {stages[name]:7.1f} µs")
    print(f"  {'the rest':<16} {step_us - sum(stages[name] for name in order):7.1f} µs")


if __name__ == "__main__":
    main()
