"""One call into a storage connection's worker thread and back: ``ConnectionThread.call`` against a
fresh ``trio.to_thread.run_sync`` per call (the same ``CapacityLimiter(1)``), with an empty job.

Run: ``python tests/benchmarks/bench_connection.py [--calls N] [--rounds R] [--cpu N]``. The two are
measured in alternating rounds (the machine's speed drifts); the table shows µs per call, median and
best round. ``--cpu N`` pins the process to one CPU, so that both threads share it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
import trio

# After the path setup:
from treadle.runtime.checkpointers.connection import ConnectionThread


async def measure(calls: int, rounds: int) -> dict[str, list[float]]:
    thread: ConnectionThread[None] = ConnectionThread("treadle-bench", lambda: None, lambda _: None)
    limiter = trio.CapacityLimiter(1)

    def job() -> None:
        return None

    async def fresh_thread(fn: Callable[[], None]) -> None:
        await trio.to_thread.run_sync(fn, limiter=limiter)

    timings: dict[str, list[float]] = {"ConnectionThread.call": [], "trio.to_thread.run_sync": []}
    async with trio.open_nursery() as nursery:
        await nursery.start(thread.run)
        for _ in range(rounds):
            for name, call in (
                ("ConnectionThread.call", thread.call),
                ("trio.to_thread.run_sync", fresh_thread),
            ):
                started = time.perf_counter()
                for _ in range(calls):
                    await call(job)
                timings[name].append((time.perf_counter() - started) / calls * 1e6)
        await thread.aclose()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    timings = trio.run(measure, args.calls, args.rounds)
    pinned = f", pinned to CPU {args.cpu}" if args.cpu is not None else ""
    print(f"{args.calls} empty calls x {args.rounds} rounds{pinned} (µs per call)")
    print(f"{'call':<26} {'median':>8} {'best':>8}")
    for name, values in timings.items():
        print(f"{name:<26} {statistics.median(values):>8.1f} {min(values):>8.1f}")


if __name__ == "__main__":
    main()
