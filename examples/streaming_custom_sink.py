"""A custom sink that fails and is restarted, and one that fails for good and is detached.

A sink is any object with a ``name`` and a ``handle(event)`` method (plain or async), optionally
``open()`` and ``close()``. When ``handle`` raises, that event is skipped and counted, and the sink
is restarted after a backoff (0.1 s, doubling); after 5 restarts within 10 s it is marked failed
and detached. The run and the other sinks never notice. Timed on trio's virtual clock, so the
backoffs take no real time. Run it with ``python examples/streaming_custom_sink.py``.
"""

from __future__ import annotations

import trio
import trio.testing

from treadle import (
    END,
    START,
    DiagnosticsConfig,
    Event,
    EventBus,
    GraphBuilder,
    MemorySink,
    NodeContext,
    SinkDiagnostic,
    StateSnapshot,
    VersionedState,
)


class Webhook:
    """Pretends to POST each event somewhere; the connection drops twice, then holds."""

    name = "webhook"

    def __init__(self) -> None:
        self.drops_left = 2
        self.delivered = 0

    async def open(self) -> None:
        print("webhook: connected")

    async def handle(self, event: Event) -> None:
        await trio.sleep(0.01)  # a real sink would await its HTTP client here
        if self.drops_left:
            self.drops_left -= 1
            raise ConnectionError("connection reset by peer")
        self.delivered += 1

    async def close(self) -> None:
        print(f"webhook: closed after {self.delivered} deliveries")


class Broken:
    """Fails on every event: it is restarted five times, then detached."""

    name = "broken"

    async def handle(self, event: Event) -> None:
        raise ValueError(f"cannot encode {event.scope!r}")


async def ticker(snapshot: StateSnapshot, ctx: NodeContext) -> None:
    for i in range(10):
        await ctx.emit("tick", f"tick {i}")
        await trio.sleep(0.5)


app = (
    GraphBuilder()
    .add_node("ticker", ticker)
    .add_edge(START, "ticker")
    .add_edge("ticker", END)
    .compile()
)


async def collect(stream: trio.abc.ReceiveChannel[SinkDiagnostic], into: list[str]) -> None:
    async for diagnostic in stream:
        into.append(f"#{diagnostic.occurrence} {diagnostic.sink}: {diagnostic.error}")


async def main() -> None:
    memory = MemorySink()
    # emit_to_events: each failure is also a "sink.error" event for the other sinks.
    bus = EventBus(
        [memory, Webhook(), Broken()],
        diagnostics=DiagnosticsConfig(emit_to_events=True),
        clock=trio.current_time,  # failure times on the virtual clock, in seconds from 0
    )
    reports: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, bus.diagnostics(), reports)
        final = await app.invoke(VersionedState(), session_id="demo", event_bus=bus)
    print("run completed:", final is not None)
    print("diagnostics:")
    for line in reports:
        print("  " + line)
    for health in bus.sink_health():
        when = "-" if health.last_error_at is None else f"{health.last_error_at:.2f} s"
        print(
            f"{health.sink}: {health.state}, errors={health.error_count}, "
            f"restarts={health.restarts}, last error at {when}"
        )
    ticks = [e for e in memory.snapshot() if e.scope == "tick"]
    errors = [e.message for e in memory.snapshot() if e.scope == "sink.error"]
    print(f"memory: all {len(ticks)} ticks, and {len(errors)} sink.error events, first:")
    print("  " + errors[0])


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
