"""Per-node cost of treadle supersteps against a bare Trio echo baseline, side by side in one run.

Run: ``python tests/benchmarks/bench_core.py [--n 100] [--reps 30] [--rounds 3]``

Workloads (async no-op nodes, in-memory checkpoints, default runner options unless noted):
- chain: START -> n0 -> n1 -> ... -> n99 -> END; every node is a whole superstep.
- fanout: START -> dispatch -> 100 workers -> join -> END (102 node executions, 3 supersteps),
  with ``concurrency_limit`` = 100 so every worker of the wide step runs at once.
- baseline: one task sends one message to each of N long-lived echo tasks over memory channels and
  awaits N replies (µs per echo).
Each workload is timed as a fresh session on an open runner ("session") and as ``App.invoke``, which
also starts and stops the runner and starts every node actor ("invoke"); "+lc" rows run the
session with ``lifecycle_events=True`` (the other rows have them off, their default). Every run is paired with a
baseline round measured just before it (the machine's speed drifts within seconds); the reported
ratio is the median of the per-pair ratios. Rounds alternate the order of the workloads.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

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
    async with _Echo.open(n) as echo:
        return [await echo.round() for _ in range(reps + 3)][3:]


class _Echo:
    """N long-lived echo tasks; ``round()`` sends each one message and awaits N replies."""

    def __init__(self, n: int, nursery: trio.Nursery) -> None:
        self.n = n
        self.replies_send, self.replies = trio.open_memory_channel[int](n)
        self.inboxes: list[trio.MemorySendChannel[int]] = []
        for _ in range(n):
            send, recv = trio.open_memory_channel[int](1)
            self.inboxes.append(send)
            nursery.start_soon(self._echo, recv)

    async def _echo(self, recv: trio.MemoryReceiveChannel[int]) -> None:
        async for msg in recv:
            await self.replies_send.send(msg)

    @classmethod
    @asynccontextmanager
    async def open(cls, n: int) -> AsyncIterator[_Echo]:
        async with trio.open_nursery() as nursery:
            yield cls(n, nursery)
            nursery.cancel_scope.cancel()

    async def round(self) -> float:
        start = time.perf_counter()
        for i, inbox in enumerate(self.inboxes):
            await inbox.send(i)
        for _ in range(self.n):
            await self.replies.receive()
        return (time.perf_counter() - start) / self.n * 1e6


async def paired(
    n: int, reps: int, run_once: Callable[[], Awaitable[float]]
) -> tuple[list[float], list[float]]:
    """Alternate one baseline round and one workload run, rep by rep.

    This machine's speed drifts by tens of percent within seconds, so each workload run is set
    against a baseline round measured just before it; the ratio is what the targets bound.
    """
    base: list[float] = []
    work: list[float] = []
    async with _Echo.open(n) as echo:
        for rep in range(reps + 3):
            b = await echo.round()
            w = await run_once()
            if rep >= 3:
                base.append(b)
                work.append(w)
    return base, work


async def per_node_session(app, nodes: int, reps: int, **options) -> list[float]:  # type: ignore[no-untyped-def]
    times: list[float] = []
    async with AppRunner(app, **options) as runner:
        for rep in range(reps + 3):
            times.append(await _one_session(runner, f"s{rep}", nodes))
    return times[3:]


async def _one_session(runner: AppRunner, sid: str, nodes: int) -> float:
    start = time.perf_counter()
    await runner.create_session(sid, VersionedState())
    await runner.run_until_complete(sid)
    return (time.perf_counter() - start) / nodes * 1e6


async def per_node_invoke(app, nodes: int, reps: int, **options) -> list[float]:  # type: ignore[no-untyped-def]
    times: list[float] = []
    for _ in range(reps + 3):
        times.append(await _one_invoke(app, nodes, **options))
    return times[3:]


async def _one_invoke(app, nodes: int, **options) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    await app.invoke(VersionedState(), **options)
    return (time.perf_counter() - start) / nodes * 1e6


async def session_ratios(app, nodes: int, n: int, reps: int, **options):  # type: ignore[no-untyped-def]
    async with AppRunner(app, **options) as runner:
        counter = iter(range(10**9))
        return await paired(n, reps, lambda: _one_session(runner, f"s{next(counter)}", nodes))


async def invoke_ratios(app, nodes: int, n: int, reps: int, **options):  # type: ignore[no-untyped-def]
    return await paired(n, reps, lambda: _one_invoke(app, nodes, **options))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n, reps = args.n, args.reps
    chain, fan = chain_app(n), fanout_app(n)
    workloads: dict[str, Callable[[], Awaitable[tuple[list[float], list[float]]]]] = {
        "chain: session": lambda: session_ratios(chain, n, n, reps),
        "chain: invoke": lambda: invoke_ratios(chain, n, n, reps),
        "fanout: session": lambda: session_ratios(fan, n + 2, n, reps, concurrency_limit=n),
        "fanout: invoke": lambda: invoke_ratios(fan, n + 2, n, reps, concurrency_limit=n),
        # Lifecycle events on (a bus with no sinks): what they cost when asked for.
        "chain: session+lc": lambda: session_ratios(chain, n, n, reps, lifecycle_events=True),
        "fanout: session+lc": lambda: session_ratios(
            fan, n + 2, n, reps, concurrency_limit=n, lifecycle_events=True
        ),
    }
    results: dict[str, tuple[list[float], list[float], list[float]]] = {
        name: ([], [], []) for name in workloads
    }
    names = list(workloads)
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            gc.collect()
            base, work = trio.run(workloads[name])
            results[name][0].extend(base)
            results[name][1].extend(work)
            results[name][2].extend(w / b for b, w in zip(base, work, strict=True))
    print(
        f"n={n} reps={reps} rounds={args.rounds}; each run paired with a bare trio echo round "
        "measured just before it; medians over all pairs"
    )
    print(f"  {'workload':18s} {'µs/node':>9s} {'echo µs':>9s} {'ratio':>7s}   ratio p25-p75")
    for name in names:
        base, work, ratios = results[name]
        q = statistics.quantiles(ratios, n=4)
        print(
            f"  {name:18s} {statistics.median(work):9.1f} {statistics.median(base):9.1f} "
            f"{statistics.median(ratios):6.2f}x   {q[0]:.2f}-{q[2]:.2f}"
        )


if __name__ == "__main__":
    main()
