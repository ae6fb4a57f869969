"""The shared events probe (``probe_d_events.py``) with CPU time beside wall time.

Run: ``python tests/benchmarks/bench_probe_d.py PROBE [--events 1000000] [--nodes 1] [--rounds 3]``
with a Python that has ``langgraph==1.2.22``, where PROBE is the path of ``probe_d_events.py``.

Each round runs, each in a subprocess of its own and in rotated order, the probe's treadle run with
the bus's default buffers (``default``) and with buffers that hold every event (``big``), and its
LangGraph run. Each row gives the probe's own figure (events/s from run start until both consumers
hold every event), the events per second of CPU time the process spent in that run, what the live
stream received, and the load average when it started; min/median/max per configuration last.

On a machine shared with other work the wall figure measures the other work too; CPU time counts
only what this process did, so the ratio of the CPU figures compares the two libraries' costs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any


def one(probe: str, lib: str, cap: str, events: int, nodes: int) -> dict[str, Any]:
    if lib == "treadle":
        import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
    spec = importlib.util.spec_from_file_location("probe_d_events", probe)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    began = time.process_time()
    if lib == "treadle":
        row: dict[str, Any] = module.treadle(events, cap, nodes)
    else:
        row = module.langgraph(events, cap, nodes)
    cpu = time.process_time() - began
    row["events_per_cpu_s"] = events / cpu
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("probe")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("LIB", "CAP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        lib, cap = args.one
        print(json.dumps(one(args.probe, lib, cap, args.events, args.nodes)))
        return
    configs = [("treadle", "default"), ("langgraph", "-"), ("treadle", "big")]
    rows: dict[str, list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        order = configs[round_ % len(configs) :] + configs[: round_ % len(configs)]
        for lib, cap in order:
            load = os.getloadavg()[0]
            command = [sys.executable, __file__, args.probe, "--one", lib, cap]
            command += ["--events", str(args.events), "--nodes", str(args.nodes)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            name = f"{lib} {cap}" if lib == "treadle" else lib
            rows.setdefault(name, []).append(row)
            print(
                f"{name:16s} {row['events_per_s']:10,.0f} events/s "
                f"{row['events_per_cpu_s']:10,.0f} events/cpu-s  "
                f"stream received {row['stream_received']:,}  load {load:.1f}",
                flush=True,
            )
    for name, got in rows.items():
        wall = [r["events_per_s"] for r in got]
        cpu = [r["events_per_cpu_s"] for r in got]
        print(
            f"{name:16s} wall min/median/max {min(wall):,.0f} / {statistics.median(wall):,.0f} / "
            f"{max(wall):,.0f}; per cpu-s {min(cpu):,.0f} / {statistics.median(cpu):,.0f} / "
            f"{max(cpu):,.0f}"
        )


if __name__ == "__main__":
    main()
