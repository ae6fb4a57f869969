"""Ping-pong cost of raw trio memory channels vs BLOCK and DROP_OLDEST mailboxes, in ns per op, and
the cost of one ``ask()`` (a request to an actor and its answer).

Run: ``python tests/benchmarks/bench_mailbox.py [round_trips]``. One op is one send plus the
matching receive; a round trip is two ops (ping and pong). An ``ask()`` is one round trip: the
request through a BLOCK mailbox, the answer through its ``ReplyTo``. Best of 5 repeats, to dodge
noisy neighbours on a shared machine.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
import outcome
import trio

from treadle.actors import ReplyTo, ask, reply
from treadle.actors.mailbox import Overflow, open_mailbox

Pair = tuple[Any, Any]


async def ping_pong(make: Callable[[str], Pair], round_trips: int) -> float:
    ping_tx, ping_rx = make("ping")
    pong_tx, pong_rx = make("pong")

    async def echo() -> None:
        with ping_rx, pong_tx:
            async for msg in ping_rx:
                await pong_tx.send(msg)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        start = time.perf_counter_ns()
        with ping_tx, pong_rx:
            for i in range(round_trips):
                await ping_tx.send(i)
                await pong_rx.receive()
        elapsed = time.perf_counter_ns() - start
    return elapsed / (2 * round_trips)


async def ask_round_trips(round_trips: int) -> float:
    """ns per ``ask()`` of an actor that answers at once."""
    requests_tx, requests_rx = open_mailbox[ReplyTo[int]](1, name="echo")

    async def echo() -> None:
        with requests_rx:
            async for reply_to in requests_rx:
                reply(reply_to, outcome.Value(1))

    def request(reply_to: ReplyTo[int]) -> ReplyTo[int]:
        return reply_to

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        with requests_tx:
            start = time.perf_counter_ns()
            for _ in range(round_trips):
                await ask(requests_tx, request, actor="echo")
            elapsed = time.perf_counter_ns() - start
    return elapsed / round_trips


def main() -> None:
    round_trips = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    contenders: dict[str, Callable[[str], Pair]] = {
        "raw trio channel (cap 1)": lambda name: trio.open_memory_channel[int](1),
        "BLOCK mailbox (cap 1)": lambda name: open_mailbox[int](1, name=name),
        "DROP_OLDEST mailbox (cap 1)": lambda name: open_mailbox[int](
            1, name=name, overflow=Overflow.DROP_OLDEST
        ),
        "raw trio channel (cap 0)": lambda name: trio.open_memory_channel[int](0),
        "BLOCK mailbox (cap 0)": lambda name: open_mailbox[int](0, name=name),
    }
    results: dict[str, float] = {}
    for _repeat in range(5):
        for label, make in contenders.items():
            ns = trio.run(ping_pong, make, round_trips)
            results[label] = min(results.get(label, float("inf")), ns)
        ns = trio.run(ask_round_trips, round_trips)
        results["ask() round trip"] = min(results.get("ask() round trip", float("inf")), ns)
    for label, ns in results.items():
        print(f"{label:<30} {ns:8.0f} ns/op")
    for cap in ("1", "0"):
        raw = results[f"raw trio channel (cap {cap})"]
        block = results[f"BLOCK mailbox (cap {cap})"]
        print(f"BLOCK overhead over raw (cap {cap}): {block - raw:+.0f} ns/op")
    raw1 = results["raw trio channel (cap 1)"]
    print(f"DROP_OLDEST vs raw (cap 1): {results['DROP_OLDEST mailbox (cap 1)'] - raw1:+.0f} ns/op")


if __name__ == "__main__":
    main()
