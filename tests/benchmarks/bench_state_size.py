"""Per-step cost against the size of the state (SPEC 3: a step costs what it writes).

A 1-node loop whose state already holds N messages (or N ``extra`` keys); every step appends one
message (or sets one key). Each run times the steps after a warm-up from the node's own start
stamps (so creating the session and storing the initial state are excluded) and keeps the mean
interval, so work done every so many steps (a checkpoint snapshot) counts (the garbage of
building and storing the state is collected before the run); the table gives
min/median/max of that mean over the runs, in µs per step, and the ratio of the medians at N
against N = 0. Runs of every case are interleaved, round by round.

Run: ``python tests/benchmarks/bench_state_size.py [--n 0,100000] [--ckpt memory,sqlite]
[--shape messages,extra] [--runs 3] [--steps 300]``. The target is a ratio of at most 1.5.

``--compare ROOT,ROOT...`` runs each case in a child process per treadle checkout (a directory
holding treadle's ``__init__.py``), interleaved, to compare versions in one run.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
import trio

# After the path setup:
from treadle import END, START, AppRunner, GraphBuilder, Message, NodePartial, VersionedState
from treadle.runtime.checkpointers import SQLiteCheckpointer

WARM = 10


def loop_app(shape: str, steps: int) -> Any:
    """One node that appends a message or sets a new key, ``steps`` times."""

    async def write(snapshot: Any, ctx: Any) -> NodePartial:
        stamps.append(time.perf_counter())
        count = snapshot.extra["count"] + 1
        if shape == "messages":
            return NodePartial(
                extra={"count": count}, messages=[Message.assistant(f"step {count}")]
            )
        return NodePartial(extra={"count": count, f"new{count}": count})

    def again(snapshot: Any) -> str:
        return "write" if snapshot.extra["count"] < steps else END

    return (
        GraphBuilder()
        .add_node("write", write)
        .add_edge(START, "write")
        .add_conditional_edges("write", again, path_map=["write", END])
        .compile()
    )


stamps: list[float] = []


def initial_state(shape: str, n: int) -> VersionedState:
    if shape == "messages":
        return VersionedState(
            messages=[Message.user(f"message {i}") for i in range(n)], extra={"count": 0}
        )
    return VersionedState(extra={"count": 0, **{f"k{i}": [i, "value"] for i in range(n)}})


def one_run(shape: str, ckpt: str, n: int, steps: int) -> float:
    """The mean µs between consecutive steps of one run, after the warm-up."""
    app = loop_app(shape, steps)
    state = initial_state(shape, n)
    stamps.clear()
    with tempfile.TemporaryDirectory() as folder:
        options: dict[str, Any] = {"durability": "sync"}
        if ckpt == "sqlite":
            options["checkpointer"] = SQLiteCheckpointer(os.path.join(folder, "c.db"))

        async def main() -> None:
            async with AppRunner(app, **options) as runner:
                session = uuid.uuid4().hex
                await runner.create_session(session, state)
                # Building and storing the state made a few hundred thousand objects: collect
                # once now, so the collector's first full pass over them is not timed as a step.
                gc.collect()
                await runner.run_until_complete(session)

        trio.run(main)
    return (stamps[-1] - stamps[WARM]) / (len(stamps) - 1 - WARM) * 1e6


def child_run(root: str, shape: str, ckpt: str, n: int, steps: int) -> float:
    """:func:`one_run` in a child process importing treadle from the checkout ``root``."""
    with tempfile.TemporaryDirectory() as folder:
        os.symlink(os.path.abspath(root), os.path.join(folder, "treadle"))
        env = {**os.environ, "PYTHONPATH": folder}
        args = [sys.executable, __file__, "--child", shape, ckpt, str(n), str(steps)]
        out = subprocess.run(args, env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="0,100000")
    parser.add_argument("--ckpt", default="memory,sqlite")
    parser.add_argument("--shape", default="messages,extra")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--compare", default="", help="treadle checkouts to run side by side")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        shape, ckpt, n, steps = args.child
        print(one_run(shape, ckpt, int(n), int(steps)))
        return
    roots = args.compare.split(",") if args.compare else [""]
    sizes = [int(n) for n in args.n.split(",")]
    cases = [
        (root, shape, ckpt, n)
        for shape in args.shape.split(",")
        for ckpt in args.ckpt.split(",")
        for n in sizes
        for root in roots
    ]
    results: dict[tuple[str, str, str, int], list[float]] = {case: [] for case in cases}
    loads = []
    for run in range(args.runs):
        loads.append(os.getloadavg()[0])
        order = cases if run % 2 == 0 else cases[::-1]
        for root, shape, ckpt, n in order:
            value = (
                child_run(root, shape, ckpt, n, args.steps)
                if root
                else one_run(shape, ckpt, n, args.steps)
            )
            results[root, shape, ckpt, n].append(value)
    print(f"load (1 min) at each round: {', '.join(f'{x:.1f}' for x in loads)}")
    print(f"{'shape':<9} {'store':<7} {'N':>7}  µs/step min / median / max  x N=0  treadle")
    for root, shape, ckpt, n in cases:
        values = results[root, shape, ckpt, n]
        base = statistics.median(results[root, shape, ckpt, sizes[0]])
        ratio = statistics.median(values) / base
        print(
            f"{shape:<9} {ckpt:<7} {n:>7}  {min(values):7.0f} / {statistics.median(values):7.0f}"
            f" / {max(values):7.0f}   {ratio:5.2f}  {root or 'this checkout'}"
        )


if __name__ == "__main__":
    main()
