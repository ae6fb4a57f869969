"""A sync sink runs in its own worker thread: a slow or hung one cannot stall the run (SPEC 6).

These tests use real time and real threads (no autojump clock): the point is what threads do.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import trio

from treadle import END, START, AppRunner, EventBus, GraphBuilder, NodePartial, VersionedState
from treadle.actors.supervisor import RestartPolicy
from treadle.runtime.events.types import DiagnosticEvent, Event
from treadle.sinks import MemorySink


def chatty_app(steps: int) -> Any:
    """One node emitting one event per step, for ``steps`` steps, with no sleeps."""

    async def talk(snapshot: Any, ctx: Any) -> NodePartial:
        await ctx.emit("talk", "hello")
        return NodePartial(extra={"n": snapshot.extra.get("n", 0) + 1})

    return (
        GraphBuilder()
        .add_node("talk", talk)
        .add_edge(START, "talk")
        .add_conditional_edges("talk", lambda s: "talk" if s.extra["n"] < steps else END)
        .compile()
    )


class SlowSink:
    name = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.handled = 0
        self.threads: set[int] = set()
        self.active = 0
        self.most_active = 0
        self.lock = threading.Lock()

    def handle(self, event: Event) -> None:
        self.threads.add(threading.get_ident())
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
        self.handled += 1


class HungSink:
    """Its handle blocks until ``gate`` is set; its close returns at once."""

    name = "hung"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0
        self.closed = False

    def handle(self, event: Event) -> None:
        self.calls += 1
        self.gate.wait(timeout=30)

    def close(self) -> None:
        self.closed = True


async def test_a_slow_sync_sink_neither_runs_on_the_trio_thread_nor_slows_the_run() -> None:
    slow = SlowSink(0.02)
    memory = MemorySink()
    app = chatty_app(300)
    bus = EventBus([slow, memory], capacity=4096, close_timeout=0.5)
    async with AppRunner(app, event_bus=bus) as runner:
        await runner.create_session("s", VersionedState())
        await runner.run_until_complete("s")
        handled_when_done = slow.handled
        slow.seconds = 0  # let the backlog drain at exit
    # Handled inline, the sink would have taken 6 s and kept pace with the run; in its thread it
    # is still far behind when the run ends.
    assert handled_when_done < 150
    assert threading.get_ident() not in slow.threads
    assert slow.most_active == 1  # one worker thread per sink at a time
    assert len([e for e in memory.snapshot() if e.scope == "talk"]) == 300  # inline sink: all


async def test_a_hung_sink_does_not_hang_the_run_and_is_failed_at_its_handle_timeout() -> None:
    hung = HungSink()
    policy = RestartPolicy(max_restarts=0)
    bus = EventBus([hung], handle_timeout=0.2, close_timeout=0.2, restart_policy=policy)
    try:
        with trio.fail_after(10):
            async with AppRunner(chatty_app(50), event_bus=bus) as runner:
                await runner.create_session("s", VersionedState())
                final = await runner.run_until_complete("s")
                start = trio.current_time()
                while bus.sink_health()[0].state != "failed":
                    await trio.sleep(0.01)
                failed_after = trio.current_time() - start
    finally:
        hung.gate.set()
    assert final.extra["n"] == 50
    [health] = bus.sink_health()
    assert health.state == "failed"
    # The hung handle, then close, which waits for it (a sink is never called from two threads).
    assert health.error_count == 2
    assert "close did not return within 0.2 s" in (health.last_error or "")
    assert failed_after < 1.0
    assert hung.calls == 1


async def test_events_a_hung_sink_never_handled_are_counted_as_dropped() -> None:
    hung = HungSink()
    bus = EventBus([hung], capacity=2048, close_timeout=0.2)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(bus.run)
                for i in range(1000):
                    bus.publish_nowait("s", DiagnosticEvent("tick", str(i)))
                await trio.sleep(0.1)  # the sink takes the batch and hangs on its first event
                start = trio.current_time()
                await bus.aclose(flush_timeout=0.2)
                closed_in = trio.current_time() - start
    finally:
        hung.gate.set()
    [health] = bus.sink_health()
    assert health.state == "stopped"
    assert health.dropped == 1000
    # close() waits for the hung handle (a sink is never called from two threads at once), so
    # it too runs out of time and is reported.
    assert health.error_count == 1
    assert "close did not return within 0.2 s" in (health.last_error or "")
    assert closed_in < 1.5


async def test_a_handle_that_overruns_is_skipped_and_the_sink_goes_on() -> None:
    class Sometimes:
        name = "sometimes"
        handle_timeout = 0.2

        def __init__(self) -> None:
            self.seen: list[str] = []

        def handle(self, event: Event) -> None:
            if event.message == "slow":
                time.sleep(0.6)
            self.seen.append(event.message)

    sink = Sometimes()
    policy = RestartPolicy(initial_backoff=0.01)
    bus = EventBus([sink], restart_policy=policy)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(bus.run)
            for message in ("a", "slow", "b", "c"):
                bus.publish_nowait("s", DiagnosticEvent("m", message))
            while "c" not in sink.seen:
                await trio.sleep(0.01)
            await bus.aclose()
    [health] = bus.sink_health()
    assert (health.error_count, health.restarts) == (1, 1)
    assert "did not return within 0.2 s" in (health.last_error or "")
    # The restarted sink waits for its thread, which the overrunning call holds until it returns:
    # a sink is never called from two threads at once.
    assert sink.seen == ["a", "slow", "b", "c"]
