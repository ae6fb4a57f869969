"""A wide fan-out into a join: START -> dispatch -> W no-op workers -> join -> END.

Run: ``python tests/benchmarks/bench_wide.py [W ...]`` (default 2500 5000 10000). For each W it
prints, on a fresh runner without checkpoints (``concurrency_limit=W``): the first run (which
starts W node actors), a second run (which reuses them) and the time to close the runner, in
seconds, with the load average, and how many full (generation 2) garbage collections each of the
three set off: each visits every live object, the parked node actors' too. Doubling W should at
most double each time.

With ``--rounds N`` each measurement runs in a fresh process instead, the widths one after another
in each round, in an order rotated from round to round, so that the machine's drift over the run
falls on every width alike; it then prints min / median / max per width and, for each doubling,
the ratio of the medians and the per-round ratios (two measurements taken close together):
``python tests/benchmarks/bench_wide.py 5000 10000 --rounds 9``.

``--memory`` runs with the default in-memory checkpointer (autosave on) instead, as the wide
probe's second configuration does: every step is stored, and the first run hashes the graph.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import subprocess
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


async def measure(width: int, memory: bool = False) -> None:
    app = build(width)
    row: dict[str, Any] = {"w": width, "load1": round(os.getloadavg()[0], 1)}
    store: dict[str, Any] = {} if memory else {"autosave": False}
    full = [0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full[0] += 1

    gc.callbacks.append(count)
    try:
        async with AppRunner(app, concurrency_limit=width, **store) as runner:
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


PHASES = ("first_s", "second_s", "close_s")


def rounds(widths: list[int], count: int, memory: bool = False) -> None:
    """``count`` rounds of every width, each measurement in a fresh process; then the summary."""
    rows: dict[int, list[dict[str, Any]]] = {width: [] for width in widths}
    for round_no in range(count):
        shift = round_no % len(widths)
        for width in widths[shift:] + widths[:shift]:
            done = subprocess.run(
                [sys.executable, __file__, str(width), *(["--memory"] if memory else [])],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["round"] = round_no
            rows[width].append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{count} rounds, seconds, min / median / max")
    for width in widths:
        cells = []
        for phase in PHASES:
            values = sorted(row[phase] for row in rows[width])
            median = statistics.median(values)
            cells.append(f"{phase[:-2]} {values[0]:.3f} / {median:.3f} / {values[-1]:.3f}")
        loads = [row["load1"] for row in rows[width]]
        print(f"W={width}: " + ", ".join(cells) + f" (load {min(loads)}-{max(loads)})")
    for small, big in itertools.pairwise(widths):
        for phase in PHASES:
            medians = [statistics.median(row[phase] for row in rows[w]) for w in (small, big)]
            paired = sorted(
                b[phase] / a[phase] for a, b in zip(rows[small], rows[big], strict=True)
            )
            print(
                f"{phase[:-2]} {small} -> {big}: medians {medians[1] / medians[0]:.2f}x, "
                f"per round {paired[0]:.2f} / {statistics.median(paired):.2f} / {paired[-1]:.2f}x"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("widths", nargs="*", type=int, default=[2500, 5000, 10000])
    parser.add_argument("--rounds", type=int, default=None, help="fresh processes, interleaved")
    parser.add_argument(
        "--memory", action="store_true", help="the in-memory checkpointer instead of none"
    )
    args = parser.parse_args()
    if args.rounds is None:
        for width in args.widths:
            trio.run(measure, width, args.memory)
    else:
        rounds(args.widths, args.rounds, args.memory)
