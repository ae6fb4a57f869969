"""Per-node cost of treadle supersteps against a bare Trio echo baseline, side by side in one run.

Run: ``python tests/benchmarks/bench_core.py [--n 100] [--reps 30] [--rounds 3]``

Workloads (async no-op nodes, in-memory checkpoints, default runner options unless noted):
- chain: START -> n0 -> n1 -> ... -> n99 -> END; every node is a whole superstep.
- fanout: START -> dispatch -> 100 workers -> join -> END (102 node executions, 3 supersteps),
  with ``concurrency_limit`` = 100 so every worker of the wide step runs at once.
- baseline: one task sends one message to each of N long-lived echo tasks over memory channels and
  awaits N replies (µs per echo).
Each workload is timed as a fresh session on an open runner ("session") and as ``App.invoke``, which
also starts and stops the runner ("invoke"). Medians over reps; rounds alternate the order.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Awaitable, Callable

import trio

from treadle import END, START, AppRunner, GraphBuilder, NodePartial, VersionedState


async def noop(snapshot: object, ctx: object) -> NodePartial | None:
    return None


def chain_app(n: int):  # type: ignore[no-untyped-def]
    builder = GraphBuilder()
    for i in range(n):
        builder.add_node(f"n{i}", noop)
        builder.add_edge(START if i == 0 else f"n{i - 1}", f"n{i}")
    builder.add_edge(f"n{n - 1}", END)
    return builder.compile()


def fanout_app(width: int):  # type: ignore[no-untyped-def]
    builder = GraphBuilder().add_node("dispatch", noop).add_node("join", noop)
    builder.add_edge(START, "dispatch")
    workers = [f"w{i}" for i in range(width)]
    for worker in workers:
        builder.add_node(worker, noop).add_edge("dispatch", worker)
    builder.add_edge(workers, "join").add_edge("join", END)
    return builder.compile()


async def echo_baseline(n: int, reps: int) -> list[float]:
    """µs per echo: one task, N echo tasks, one message each way."""
    times: list[float] = []
    async with trio.open_nursery() as nursery:
        reply_send, reply_recv = trio.open_memory_channel[int](n)
        inboxes = []
        for _ in range(n):
            send, recv = trio.open_memory_channel[int](1)
            inboxes.append(send)

            async def echo(recv: trio.MemoryReceiveChannel[int] = recv) -> None:
                async for msg in recv:
                    await reply_send.send(msg)

            nursery.start_soon(echo)
        for _ in range(reps + 3):
            start = time.perf_counter()
            for i, inbox in enumerate(inboxes):
                await inbox.send(i)
            for _ in range(n):
                await reply_recv.receive()
            times.append((time.perf_counter() - start) / n * 1e6)
        nursery.cancel_scope.cancel()
    return times[3:]


async def per_node_session(app, nodes: int, reps: int, **options) -> list[float]:  # type: ignore[no-untyped-def]
    times: list[float] = []
    async with AppRunner(app, **options) as runner:
        for rep in range(reps + 3):
            sid = f"s{rep}"
            start = time.perf_counter()
            await runner.create_session(sid, VersionedState())
            await runner.run_until_complete(sid)
            times.append((time.perf_counter() - start) / nodes * 1e6)
    return times[3:]


async def per_node_invoke(app, nodes: int, reps: int, **options) -> list[float]:  # type: ignore[no-untyped-def]
    times: list[float] = []
    for _ in range(reps + 3):
        start = time.perf_counter()
        await app.invoke(VersionedState(), **options)
        times.append((time.perf_counter() - start) / nodes * 1e6)
    return times[3:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n, reps = args.n, args.reps
    chain, fan = chain_app(n), fanout_app(n)
    workloads: dict[str, Callable[[], Awaitable[list[float]]]] = {
        "baseline: bare trio echo": lambda: echo_baseline(n, reps),
        "chain: session": lambda: per_node_session(chain, n, reps),
        "chain: invoke": lambda: per_node_invoke(chain, n, reps),
        "fanout: session": lambda: per_node_session(fan, n + 2, reps, concurrency_limit=n),
        "fanout: invoke": lambda: per_node_invoke(fan, n + 2, reps, concurrency_limit=n),
    }
    medians: dict[str, list[float]] = {name: [] for name in workloads}
    names = list(workloads)
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            gc.collect()
            medians[name].append(statistics.median(trio.run(workloads[name])))
    base = statistics.median(medians["baseline: bare trio echo"])
    print(f"n={n} reps={reps} rounds={args.rounds}; µs per node (median of round medians)")
    for name in names:
        value = statistics.median(medians[name])
        rounds = ", ".join(f"{m:.1f}" for m in medians[name])
        print(f"  {name:28s} {value:8.1f} µs  {value / base:5.2f}x baseline   [{rounds}]")


if __name__ == "__main__":
    main()
