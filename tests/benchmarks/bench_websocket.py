"""WebSocket sink throughput over loopback: events/s to one client, 100 clients each receiving every
event of a 10,000-event run, and what clients cost the runtime's own events/s.

Run: ``python tests/benchmarks/bench_websocket.py [--events 10000] [--clients 100]``

The server (the runner, its bus and the ``WebSocketSink``) runs in this process; the clients run in
up to ``--client-procs`` separate processes (``--client``), real trio-websocket connections over
127.0.0.1, so server and clients share the machine's two cores. One node emits ``--events`` events as fast as it can.
- *delivery*: from the first event published to the last client receiving ``STREAM_END``;
  events/s = events x clients / that time.
- *runtime*: how long ``run_until_complete`` took (the node's emit loop plus the bus), as events/s,
  with 0, 1 and ``--clients`` clients attached.
Every client's queue holds the whole run (``queue_size=events``), so none drops while it reads;
each client checks it got every seq once, in order.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import _treadle_path  # noqa: F401  (puts the checkout on sys.path)
import trio

from treadle import END, START, AppRunner, EventBus, GraphBuilder, VersionedState, WebSocketSink
from treadle.runtime.remote import open_websocket


def emitter(count: int) -> Any:
    async def emit(snapshot: object, ctx: Any) -> None:
        for i in range(count):
            await ctx.emit("bench", "tick", i=i)

    return (
        GraphBuilder()
        .add_node("emit", emit)
        .add_edge(START, "emit")
        .add_edge("emit", END)
        .compile()
    )


# -- clients (a separate process) -------------------------------------------------------------------


async def clients_main(url: str, clients: int) -> None:
    """Connect ``clients`` clients, say so, read until each sees STREAM_END; print a JSON report."""
    results: list[tuple[int, bool, float]] = []

    async def one(ready: trio.Event, connected: list[int]) -> None:
        async with open_websocket(url, message_queue_size=256) as ws:
            connected.append(1)
            if len(connected) == clients:
                ready.set()
            expected_seq = 0
            in_order = True
            while True:
                frame = json.loads(await ws.get_message())
                if frame.get("type") != "node" and frame.get("type") != "diagnostic":
                    in_order = False  # a dropped notice
                    continue
                in_order = in_order and frame["seq"] == expected_seq
                expected_seq += 1
                if frame["scope"] == "__treadle_stream_end__":
                    results.append((expected_seq, in_order, time.time()))
                    return

    ready = trio.Event()
    connected: list[int] = []
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(one, ready, connected)
        await ready.wait()
        print("connected", flush=True)
    print(json.dumps({"frames": [r[0] for r in results], "in_order": all(r[1] for r in results),
                      "last": max(r[2] for r in results)}), flush=True)  # fmt: skip


# -- the server --------------------------------------------------------------------------------------


async def serve_once(events: int, clients: int, procs: int) -> dict[str, Any]:
    # Queues hold the whole run and a client may lag a long time on a busy machine: nothing is
    # dropped or cut off while the clients read.
    sink = WebSocketSink(
        queue_size=max(events + 1, 1024), max_clients=max(clients, 1), stuck_timeout=600
    )
    async with AppRunner(emitter(events), event_bus=EventBus([sink]), checkpointer=None) as runner:
        children = []
        for index in range(min(procs, clients)):
            share = clients // procs + (1 if index < clients % procs else 0)
            command = [sys.executable, __file__, "--client", sink.url("s"), "--clients", str(share)]
            child = await trio.to_thread.run_sync(
                lambda command=command: subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            )
            assert child.stdout is not None
            line = await trio.to_thread.run_sync(child.stdout.readline)
            assert line.strip() == "connected", line
            children.append((child, share))
        await runner.create_session("s", VersionedState())
        began_wall = time.time()
        began = time.perf_counter()
        await runner.run_until_complete("s")
        runtime = time.perf_counter() - began
        report: dict[str, Any] = {"runtime_s": runtime}
        if children:
            frames: list[int] = []
            in_order = True
            last = 0.0
            for child, _ in children:
                assert child.stdout is not None
                out = await trio.to_thread.run_sync(child.stdout.read)
                await trio.to_thread.run_sync(child.wait)
                got = json.loads(out.strip().splitlines()[-1])
                frames.extend(got["frames"])
                in_order = in_order and got["in_order"]
                last = max(last, got["last"])
            report["delivery_s"] = last - began_wall
            report["all_frames"] = len(frames) == clients and all(f == events + 1 for f in frames)
            report["in_order"] = in_order
        report["dropped"] = sink.statistics().dropped
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client-procs", type=int, default=4, help="processes the clients use")
    parser.add_argument("--client", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        trio.run(clients_main, args.client, args.clients)
        return
    n = args.events
    with open("/proc/loadavg") as load:
        print(f"events={n}, rounds={args.rounds}; load averages: {load.read().split()[:3]}")
    for clients in (0, 1, args.clients):
        rows = [trio.run(serve_once, n, clients, args.client_procs) for _ in range(args.rounds)]
        line = (
            f"  {clients:3d} clients: runtime {spread(n, [r['runtime_s'] for r in rows])} events/s"
        )
        if clients:
            ok = all(r["all_frames"] and r["in_order"] and r["dropped"] == 0 for r in rows)
            line += (
                f"; delivered {spread(n * clients, [r['delivery_s'] for r in rows])} events/s "
                f"to the clients; every client got all {n + 1} frames in order, none dropped: {ok}"
            )
        print(line, flush=True)


def spread(count: int, seconds: list[float]) -> str:
    """``count`` per second over each of ``seconds``, as min / median / max."""
    rates = sorted(count / s for s in seconds)
    return f"{rates[0]:,.0f} / {rates[len(rates) // 2]:,.0f} / {rates[-1]:,.0f}"


if __name__ == "__main__":
    main()
