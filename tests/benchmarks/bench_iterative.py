"""Iterative sessions: ``invoke_next`` round trips per second against a fresh session per input.

Run: ``python tests/benchmarks/bench_iterative.py [--inputs 300] [--rounds 5]``

The graph has two async nodes (``acc`` adds the input to a sum, ``post`` copies it): START -> acc
-> post -> END, two supersteps per input. Two ways to process ``--inputs`` inputs on one open runner:
- iterative: one iterative session, one ``invoke_next`` per input (the session keeps its
  scheduler, node actors and lineage);
- per-input session: for each input, ``create_session`` with a new id and the input in its state,
  then ``run_until_complete``.
Each runs in memory (``memory://``) and on SQLite (a file in a temporary directory, ``durability=
"sync"``: every step's checkpoint is acknowledged before the next step). Rounds interleave the
four variants; the script prints the median and best inputs/s of each and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from treadle import END, START, AppRunner, GraphBuilder, NodePartial, VersionedState


async def acc(snapshot: Any, ctx: Any) -> NodePartial:
    return NodePartial(extra={"sum": snapshot.extra.get("sum", 0) + snapshot.extra.get("x", 0)})


async def post(snapshot: Any, ctx: Any) -> NodePartial:
    return NodePartial(extra={"last": snapshot.extra["sum"]})


def two_node_app() -> Any:
    return (
        GraphBuilder()
        .add_node("acc", acc)
        .add_node("post", post)
        .add_edge(START, "acc")
        .add_edge("acc", "post")
        .add_edge("post", END)
        .compile()
    )


async def iterative(url: str, inputs: int, tag: str) -> float:
    async with AppRunner(two_node_app(), checkpointer=url, durability="sync") as runner:
        await runner.create_iterative_session(tag, VersionedState())
        await runner.invoke_next(tag, NodePartial(extra={"x": 0}))  # warm: node actors started
        start = time.perf_counter()
        for i in range(inputs):
            await runner.invoke_next(tag, NodePartial(extra={"x": i}))
        return inputs / (time.perf_counter() - start)


async def per_input(url: str, inputs: int, tag: str) -> float:
    async with AppRunner(two_node_app(), checkpointer=url, durability="sync") as runner:
        await runner.create_session(f"{tag}-warm", VersionedState(extra={"x": 0}))
        await runner.run_until_complete(f"{tag}-warm")
        start = time.perf_counter()
        for i in range(inputs):
            session = f"{tag}-{i}"
            await runner.create_session(session, VersionedState(extra={"x": i}))
            await runner.run_until_complete(session)
        return inputs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for store in ("memory", "sqlite"):
                for name, fn in (("iterative", iterative), ("per-input session", per_input)):
                    tag = f"r{round_}"
                    url = "memory://" if store == "memory" else f"sqlite:///{Path(tmp) / tag}.db"
                    rate = trio.run(fn, url, args.inputs, tag)
                    results.setdefault(f"{store:6} {name}", []).append(rate)
    print(f"load average (1, 5, 15 min) before: {before}, after: {os.getloadavg()}")
    print(f"{args.inputs} inputs a run, {args.rounds} rounds; inputs/s (median, best)")
    for key, rates in results.items():
        print(f"  {key:26} {statistics.median(rates):9,.0f} {max(rates):9,.0f}")


if __name__ == "__main__":
    main()
