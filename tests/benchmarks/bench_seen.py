"""Steps after a wide fan-out: the cost of a step in a session whose nodes ran W wide before.

``START -> dispatch -> W workers -> join -> tick``, and ``tick`` loops ``--loops`` times, one step
each. A session's ``versions_seen`` holds an entry per node that ever ran, so after the fan-out it
holds W + 3; a step that runs ``tick`` alone should cost the same whatever W was. ``tick`` stamps
``time.perf_counter()`` each time it runs; the figure is the median interval between consecutive
stamps after a warm-up of 5, in µs per step, with no checkpointer, the in-memory one, and a SQLite
file (``durability="sync"``). Each measurement runs in a fresh process, the configurations
interleaved in an order rotated from round to round; min / median / max over the rounds.

Run: ``python tests/benchmarks/bench_seen.py [--widths 0,1000,10000] [--loops 200] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
import trio

from treadle import END, START, AppRunner, GraphBuilder, NodePartial, VersionedState

STORES = ("none", "memory", "sqlite")
WARM = 5


def build(width: int, loops: int, stamps: list[float]) -> Any:
    async def noop(snapshot: Any, ctx: Any) -> None:
        return None

    async def tick(snapshot: Any, ctx: Any) -> NodePartial:
        stamps.append(time.perf_counter())
        return NodePartial(extra={"ticks": snapshot.extra.get("ticks", 0) + 1})

    def more(snapshot: Any) -> str:
        return END if snapshot.extra["ticks"] >= loops else "tick"

    builder = GraphBuilder().add_node("dispatch", noop).add_node("join", noop)
    builder.add_node("tick", tick).add_edge(START, "dispatch")
    workers = [f"w{i}" for i in range(width)]
    for name in workers:
        builder.add_node(name, noop).add_edge("dispatch", name)
    builder.add_edge(workers or "dispatch", "join").add_edge("join", "tick")
    return builder.add_conditional_edges("tick", more, path_map=["tick", END]).compile()


async def measure(width: int, loops: int, store: str, folder: str) -> float:
    stamps: list[float] = []
    app = build(width, loops, stamps)
    options: dict[str, Any] = {"concurrency_limit": max(width, 1)}
    if store == "none":
        options["autosave"] = False
    elif store == "sqlite":
        options.update(checkpointer=f"sqlite:///{Path(folder) / 'seen.db'}", durability="sync")
    async with AppRunner(app, **options) as runner:
        await runner.create_session("s", VersionedState())
        await runner.run_until_complete("s")
    intervals = [b - a for a, b in zip(stamps[WARM:], stamps[WARM + 1 :], strict=False)]
    return statistics.median(intervals) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="0,1000,10000")
    parser.add_argument("--loops", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("WIDTH", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        with tempfile.TemporaryDirectory() as folder:
            step_us = trio.run(measure, int(args.one[0]), args.loops, args.one[1], folder)
        print(json.dumps({"step_us": step_us}))
        return
    configs = [(int(w), store) for w in args.widths.split(",") for store in STORES]
    results: dict[tuple[int, str], list[float]] = {config: [] for config in configs}
    loads = []
    for round_no in range(args.rounds):
        shift = round_no % len(configs)
        for width, store in configs[shift:] + configs[:shift]:
            loads.append(os.getloadavg()[0])
            done = subprocess.run(
                [sys.executable, __file__, "--one", str(width), store, "--loops", str(args.loops)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[width, store].append(
                json.loads(done.stdout.strip().splitlines()[-1])["step_us"]
            )
    print(f"{args.rounds} rounds, µs per step of the loop after the fan-out, min / median / max")
    print(f"load (1-min) {min(loads):.1f}-{max(loads):.1f}")
    for (width, store), values in results.items():
        low, mid, high = min(values), statistics.median(values), max(values)
        print(f"W={width:>6} {store:>6}: {low:8.1f} / {mid:8.1f} / {high:8.1f}")


if __name__ == "__main__":
    main()
