"""Event throughput: 100 emitters x N events each, delivered to a MemorySink and an EventStream.

Run: ``python tests/benchmarks/bench_events.py [events_per_node]`` (default 10). It prints:

* bus only: the emitters are plain tasks publishing straight to an :class:`EventBus`;
* graph, end to end: they are the 100 nodes of one step of a real graph (``ctx.emit``) run by
  ``AppRunner``, timed from ``run_until_complete`` until both consumers hold every event;
* graph, event path: the same, minus the time of the same graph emitting nothing (what the events
  themselves cost: creating, stamping, delivering).

events/s = events published / elapsed; best of 5 repeats, since the machine is shared.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
import trio

# After the path setup:
import trio.lowlevel

from treadle.runtime.events.bus import EventBus
from treadle.runtime.events.types import NodeEvent, is_sentinel, stream_end
from treadle.runtime.graph.frozen import FrozenDict
from treadle.sinks.memory import MemorySink

NODES = 100


async def _consume(stream: Any, expected: int, done: trio.Event) -> None:
    count = 0
    async for event in stream:
        count += 1
        if is_sentinel(event):
            break
    assert count == expected, (count, expected)
    done.set()


async def bus_only(per_node: int) -> float:
    """Seconds to publish and deliver NODES * per_node events straight through the bus."""
    memory = MemorySink()
    # Large enough that nothing is dropped: the benchmark measures delivery, not eviction.
    bus = EventBus([memory], capacity=NODES * per_node + 1)
    total = NODES * per_node
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        stream = bus.subscribe(session_id="bench")
        consumed = trio.Event()
        nursery.start_soon(_consume, stream, total + 1, consumed)

        async def node(index: int, done: trio.Event) -> None:
            for seq in range(per_node):
                meta = FrozenDict({"frontier_index": index, "node_seq": seq + 1})
                await bus.publish("bench", NodeEvent(f"n{index}", 1, "bench", "tick", meta))
            done.set()

        start = time.perf_counter()
        finished = [trio.Event() for _ in range(NODES)]
        async with trio.open_nursery() as emitters:
            for index, done in enumerate(finished):
                emitters.start_soon(node, index, done)
        await bus.publish("bench", stream_end("bench", 1))
        await consumed.wait()
        while len(memory) < total + 1:
            await trio.lowlevel.checkpoint()
        elapsed = time.perf_counter() - start
        await bus.aclose()
    return elapsed


async def through_graph(per_node: int) -> float:
    """Seconds for ``invoke``-style run of a 100-node fan-out graph emitting per_node each."""
    from treadle import GraphBuilder
    from treadle.runtime.execution.runner import AppRunner
    from treadle.runtime.graph.builder import END, START
    from treadle.runtime.graph.state import VersionedState

    async def emitter(snapshot: Any, ctx: Any) -> None:
        for _ in range(per_node):
            await ctx.emit("bench", "tick")

    builder = GraphBuilder()
    for index in range(NODES):
        builder.add_node(f"n{index}", emitter)
        builder.add_edge(START, f"n{index}")
        builder.add_edge(f"n{index}", END)
    app = builder.compile()
    memory = MemorySink()
    total = NODES * per_node
    bus = EventBus([memory], capacity=total + 16)
    async with AppRunner(app, event_bus=bus, concurrency_limit=NODES) as runner:
        # A live consumer reading while the run goes on, as a dashboard or forwarder would.
        stream = runner.event_stream(session_id="bench", capacity=total + 16)
        consumed = trio.Event()
        await runner.create_session("bench", VersionedState())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_consume, stream, total + 1, consumed)
            start = time.perf_counter()
            await runner.run_until_complete("bench")
            await consumed.wait()
            while not (len(memory) and is_sentinel(memory.snapshot()[-1])):
                await trio.lowlevel.checkpoint()
            elapsed = time.perf_counter() - start
    nodes = sum(1 for e in memory.snapshot() if isinstance(e, NodeEvent))
    assert nodes == total, (nodes, total)
    return elapsed


async def warm_runner(per_node: int, repeats: int = 5) -> float:
    """Best seconds over ``repeats`` sessions of the same graph on one open runner.

    A long-lived runner (a server handling runs) reuses the node actors of completed sessions, so
    this is the steady state: the run and its events, without the runner's start or node spawns.
    """
    from treadle import GraphBuilder
    from treadle.runtime.execution.runner import AppRunner
    from treadle.runtime.graph.builder import END, START
    from treadle.runtime.graph.state import VersionedState

    async def emitter(snapshot: Any, ctx: Any) -> None:
        for _ in range(per_node):
            await ctx.emit("bench", "tick")

    builder = GraphBuilder()
    for index in range(NODES):
        builder.add_node(f"n{index}", emitter)
        builder.add_edge(START, f"n{index}")
        builder.add_edge(f"n{index}", END)
    app = builder.compile()
    total = NODES * per_node
    memory = MemorySink(max_events=2 * total + 16)
    bus = EventBus([memory], capacity=total + 16)
    best = float("inf")
    async with AppRunner(app, event_bus=bus, concurrency_limit=NODES) as runner:
        for rep in range(repeats + 1):
            sid = f"bench{rep}"
            memory.clear()
            stream = runner.event_stream(session_id=sid, capacity=total + 16)
            consumed = trio.Event()
            await runner.create_session(sid, VersionedState())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_consume, stream, total + 1, consumed)
                start = time.perf_counter()
                await runner.run_until_complete(sid)
                await consumed.wait()
                while not (len(memory) and is_sentinel(memory.snapshot()[-1])):
                    await trio.lowlevel.checkpoint()
                elapsed = time.perf_counter() - start
            nodes = sum(1 for e in memory.snapshot() if isinstance(e, NodeEvent))
            assert nodes == total, (nodes, total)
            if rep:  # the first session starts the node actors
                best = min(best, elapsed)
    return best


def best_seconds(fn: Any, per_node: int, repeats: int = 5) -> float:
    return min(trio.run(fn, per_node) for _ in range(repeats))


def main() -> None:
    per_node = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    total = NODES * per_node
    bus = best_seconds(bus_only, per_node)
    graph = best_seconds(through_graph, per_node)
    empty = best_seconds(through_graph, 0)
    warm = trio.run(warm_runner, per_node)
    calibration = _echo_baseline_us()
    print(f"{NODES} emitters x {per_node} events -> one MemorySink + one EventStream consumer")
    print(f"  bus only:               {total / bus:>10,.0f} events/s")
    print(f"  graph, end to end:      {total / graph:>10,.0f} events/s  ({graph * 1e3:.1f} ms)")
    print(
        f"  graph, event path:      {total / (graph - empty):>10,.0f} events/s  "
        f"(the same graph emitting nothing takes {empty * 1e3:.1f} ms)"
    )
    print(f"  graph, warm runner:     {total / warm:>10,.0f} events/s  ({warm * 1e3:.1f} ms)")
    print(
        f"  calibration: bare trio echo {calibration:.1f} µs per message round trip "
        "(this machine's speed varies; compare runs at the same calibration)"
    )


def _echo_baseline_us() -> float:
    from bench_core import echo_baseline

    return statistics.median(trio.run(echo_baseline, 100, 30))


if __name__ == "__main__":
    main()
