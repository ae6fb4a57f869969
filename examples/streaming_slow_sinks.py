"""Sinks that cannot stall a run, and node output that cannot be stored failing its node.

Run it with ``python examples/streaming_slow_sinks.py`` (about two seconds of real time: the point
is what worker threads do, so there is no virtual clock here).

1. A sync sink that takes 10 ms per event runs in its own worker thread: the run does not wait for
   it, and the events it has not handled yet are delivered while the runner closes.
2. A sync sink that hangs is failed at its ``handle_timeout``; the run is unaffected, and the events
   it never handled are counted in ``dropped``.
3. A node whose output is not JSON (a set) fails like a raising node: ``NodeRunError`` names the
   node and the key, and the run's stream still ends with one ``STREAM_END``.
"""

from __future__ import annotations

import threading
import time

import trio

from treadle import (
    END,
    START,
    STREAM_END_SCOPE,
    AppRunner,
    Event,
    EventBus,
    GraphBuilder,
    MemorySink,
    NodeContext,
    NodePartial,
    NodeRunError,
    RestartPolicy,
    StateSnapshot,
    VersionedState,
)

STEPS = 100


async def talk(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    await ctx.emit("talk", f"step {ctx.step}")
    return NodePartial(extra={"n": snapshot.extra.get("n", 0) + 1})


chatty = (
    GraphBuilder()
    .add_node("talk", talk)
    .add_edge(START, "talk")
    .add_conditional_edges("talk", lambda s: "talk" if s.extra["n"] < STEPS else END)
    .compile()
)


class SlowSink:
    """Writes each event somewhere slow: 10 ms per event, blocking (a plain ``def``)."""

    name = "slow"

    def __init__(self) -> None:
        self.handled = 0

    def handle(self, event: Event) -> None:
        time.sleep(0.01)
        self.handled += 1


class HungSink:
    """Its first call never returns until the example releases it at the end."""

    name = "hung"
    handle_timeout = 0.2  # seconds one handle() may take before it counts as a failure

    def __init__(self) -> None:
        self.release = threading.Event()

    def handle(self, event: Event) -> None:
        self.release.wait(timeout=30)


async def slow_sink() -> None:
    slow = SlowSink()
    async with AppRunner(chatty, event_bus=EventBus([slow])) as runner:
        await runner.create_session("s", VersionedState())
        await runner.run_until_complete("s")
        behind = slow.handled < STEPS
    print(f"run finished before the slow sink caught up: {behind}")
    print(f"slow sink handled {slow.handled} of {STEPS + 1} events by the time the runner closed")


async def hung_sink() -> None:
    hung = HungSink()
    bus = EventBus([hung], close_timeout=0.2, restart_policy=RestartPolicy(max_restarts=0))
    failures = bus.diagnostics()
    try:
        async with AppRunner(chatty, event_bus=bus) as runner:
            await runner.create_session("s", VersionedState())
            final = await runner.run_until_complete("s")
            await failures.receive()  # the hung call, reported at its timeout
    finally:
        hung.release.set()
    [health] = bus.sink_health()
    print(f"run with a hung sink completed {final.extra['n']} steps")
    print(f"hung sink: {health.state}, errors={health.error_count}, dropped={health.dropped}")
    print(f"  {health.last_error}")


async def parse(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    return NodePartial(extra={"tags": {"a", "b"}})  # a set is not JSON: use a sorted list


async def invalid_output() -> None:
    app = GraphBuilder().add_node("parse", parse).add_edge(START, "parse").add_edge("parse", END)
    memory = MemorySink()
    try:
        await app.compile().invoke_with_sinks(VersionedState(), [memory])
    except NodeRunError as error:
        print(f"NodeRunError: node={error.node!r} key={error.cause.key!r}")  # type: ignore[attr-defined]
    [end] = [event for event in memory.snapshot() if event.scope == STREAM_END_SCOPE]
    print(f"stream ended once: status={end.metadata['status']}")


async def main() -> None:
    await slow_sink()
    await hung_sink()
    await invalid_output()


if __name__ == "__main__":
    trio.run(main)
