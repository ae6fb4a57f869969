"""A wide fan-out into a join: START -> dispatch -> W no-op workers -> join -> END.

Run: ``python tests/benchmarks/bench_wide.py [W ...]`` (default 2500 5000 10000). For each W it
prints, on a fresh runner without checkpoints (``concurrency_limit=W``): the first run (which
starts W node actors), a second run (which reuses them) and the time to close the runner, in
seconds, with the load average, and how many full (generation 2) garbage collections each of the
three set off: each visits every live object, the parked node actors' too. Doubling W should at
most double each time.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any

import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
import trio

from treadle import END, START, AppRunner, GraphBuilder, VersionedState


async def noop(snapshot: Any, ctx: Any) -> None:
    return None


def build(width: int) -> Any:
    builder = GraphBuilder().add_node("dispatch", noop).add_node("join", noop)
    builder.add_edge(START, "dispatch")
    names = [f"w{i}" for i in range(width)]
    for name in names:
        builder.add_node(name, noop).add_edge("dispatch", name)
    return builder.add_edge(names, "join").add_edge("join", END).compile()


async def measure(width: int) -> None:
    app = build(width)
    row: dict[str, Any] = {"w": width, "load1": round(os.getloadavg()[0], 1)}
    full = [0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full[0] += 1

    gc.callbacks.append(count)
    try:
        async with AppRunner(app, autosave=False, concurrency_limit=width) as runner:
            for label in ("first", "second"):
                started, full[0] = time.perf_counter(), 0
                await runner.create_session(label, VersionedState())
                await runner.run_until_complete(label)
                row[f"{label}_s"] = round(time.perf_counter() - started, 3)
                row[f"{label}_full_gc"] = full[0]
            closing, full[0] = time.perf_counter(), 0
        row["close_s"] = round(time.perf_counter() - closing, 3)
        row["close_full_gc"] = full[0]
    finally:
        gc.callbacks.remove(count)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    for width in [int(arg) for arg in sys.argv[1:]] or [2500, 5000, 10000]:
        trio.run(measure, width)
