"""Lossless streams at scale: N emitters x E events through one run to a live ``EventStream``.

Run: ``python tests/benchmarks/bench_lossless.py [--events 1000000] [--nodes 100] [--rounds 3]``.
Each round runs, in a subprocess of its own and in rotated order:

* ``drop``: the stream with the default ``overflow="drop_oldest"`` (capacity 1,024);
* ``block``: the same stream with ``overflow="block"`` (lossless, the run waits for the reader);
* ``langgraph``: LangGraph's ``astream(stream_mode="custom")`` with ``get_stream_writer()``,
  when ``langgraph`` is importable (run this with a Python that has it installed).

Each row gives events/s (from run start until the consumer read the end), what the consumer
received and lost, and the load average when it started; min/median/max per configuration last.
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


def run_treadle(events: int, nodes: int, overflow: str) -> dict[str, Any]:
    import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
    import trio

    from treadle import END, START, AppRunner, GraphBuilder, VersionedState, is_sentinel

    per = events // nodes

    async def emitter(snapshot: Any, ctx: Any) -> None:
        for _ in range(per):
            await ctx.emit("tok", "x")

    builder = GraphBuilder()
    for i in range(nodes):
        builder.add_node(f"n{i}", emitter).add_edge(START, f"n{i}").add_edge(f"n{i}", END)
    app = builder.compile()
    out: dict[str, Any] = {}

    async def main() -> None:
        async with AppRunner(app, concurrency_limit=nodes) as runner:
            stream = runner.event_stream(session_id="s", overflow=overflow)  # type: ignore[arg-type]
            got = 0

            async def consume() -> None:
                nonlocal got
                async for event in stream:
                    if is_sentinel(event):
                        break
                    got += 1

            await runner.create_session("s", VersionedState())
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await runner.run_until_complete("s")
            out.update(elapsed_s=time.perf_counter() - started, received=got, lost=stream.dropped)

    trio.run(main)
    return out


def run_langgraph(events: int, nodes: int) -> dict[str, Any]:
    import asyncio

    from langgraph.config import get_stream_writer
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    class S(TypedDict):
        x: int

    per = events // nodes

    async def emitter(state: S) -> dict[str, Any]:
        write = get_stream_writer()
        for _ in range(per):
            write("x")
        return {}

    builder = StateGraph(S)
    for i in range(nodes):
        builder.add_node(f"n{i}", emitter)
        builder.add_edge(START, f"n{i}")
        builder.add_edge(f"n{i}", END)
    graph = builder.compile()
    out: dict[str, Any] = {}

    async def main() -> None:
        got = 0
        started = time.perf_counter()
        async for _chunk in graph.astream({"x": 0}, stream_mode="custom"):
            got += 1
        out.update(elapsed_s=time.perf_counter() - started, received=got, lost=events - got)

    asyncio.run(main())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        if args.one == "langgraph":
            row = run_langgraph(args.events, args.nodes)
        else:
            row = run_treadle(args.events, args.nodes, args.one)
        row["events_per_s"] = args.events / row["elapsed_s"]
        print(json.dumps(row))
        return
    configs = ["drop", "block"]
    if importlib.util.find_spec("langgraph") is not None:
        configs.append("langgraph")
    rates: dict[str, list[float]] = {c: [] for c in configs}
    for round_ in range(args.rounds):
        order = configs[round_ % len(configs) :] + configs[: round_ % len(configs)]
        for config in order:
            load = os.getloadavg()[0]
            overflow = {"drop": "drop_oldest", "block": "block"}.get(config, config)
            cmd = [sys.executable, __file__, "--one", overflow, "--events", str(args.events)]
            cmd += ["--nodes", str(args.nodes)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rates[config].append(row["events_per_s"])
            print(json.dumps({"config": config, "round": round_, "load1": load, **row}))
    for config, values in rates.items():
        print(
            f"{config:>9}: events/s min {min(values):,.0f}  median {statistics.median(values):,.0f}"
            f"  max {max(values):,.0f}"
        )


if __name__ == "__main__":
    main()
