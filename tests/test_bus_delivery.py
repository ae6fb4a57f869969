"""EventBus without a runner: stamping, fan-out, drops, sentinels, subscribers, shutdown."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from treadle.actors.supervisor import RestartPolicy
from treadle.runtime.events.bus import EventBus
from treadle.runtime.events.types import (
    DiagnosticEvent,
    Event,
    NodeEvent,
    invocation_end,
    is_sentinel,
    stream_end,
)
from treadle.sinks import ChannelSink, JsonLinesSink, MemorySink


def node(i: int, session: str | None = None) -> NodeEvent:
    return NodeEvent("n", 1, "tick", str(i), timestamp=0.0, session_id=session)


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task alive in this trio run."""
    found: set[trio.lowlevel.Task] = set()
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None or task in found:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return found


@asynccontextmanager
async def running(bus: EventBus) -> AsyncIterator[EventBus]:
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        try:
            yield bus
        finally:
            await bus.aclose()


class FlakySink:
    """Raises on every second event it is handed, and remembers every one of them.

    ``inline``: handled on the Trio thread, as these tests run under the autojump clock, which a
    worker thread would let jump (the threads themselves are tested in test_sink_threads.py).
    """

    name = "flaky"
    inline = True

    def __init__(self) -> None:
        self.seen: list[Event] = []

    def handle(self, event: Event) -> None:
        self.seen.append(event)
        if len(self.seen) % 2 == 0:
            raise RuntimeError(f"cannot take {event.message}")


async def test_publish_stamps_session_and_per_session_seq(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(5):
        memory = MemorySink()
        async with running(EventBus([memory])) as bus:
            a0 = await bus.publish("a", node(0))
            b0 = await bus.publish("b", node(1))
            a1 = bus.publish_nowait("a", node(2))
            own = await bus.publish("a", node(3, session="c"))  # its own session id wins
            none0 = await bus.publish(None, DiagnosticEvent("run", "x"))
        assert [(e.session_id, e.seq) for e in (a0, b0, a1, own, none0)] == [
            ("a", 0),
            ("b", 0),
            ("a", 1),
            ("c", 0),
            (None, 0),
        ]
        assert memory.snapshot() == [a0, b0, a1, own, none0]
        assert node(0).seq is None  # the original is untouched: events are immutable


async def test_publishing_without_consumers_or_after_close_never_fails(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(5):
        bus = EventBus()
        assert (await bus.publish("s", node(0))).seq == 0  # not even running yet
        async with running(bus):
            assert (await bus.publish("s", node(1))).seq == 1
        stream = bus.subscribe()
        assert (await bus.publish("s", node(2))).seq == 2
        with pytest.raises(trio.EndOfChannel):
            await stream.receive()
        assert bus.statistics().published == 3
        assert trio.current_time() == 0


async def test_a_failing_sink_never_disturbs_the_others(autojump_clock: trio.abc.Clock) -> None:
    """10,000 events: memory and JSON Lines get all in order; the flaky sink's counts are exact."""
    with trio.fail_after(60):
        memory, flaky, out = MemorySink(), FlakySink(), io.StringIO()
        jsonl = JsonLinesSink(out, inline=True)
        policy = RestartPolicy(max_restarts=10**6, within=1.0, initial_backoff=0, max_backoff=0)
        bus = EventBus([flaky, memory, jsonl], capacity=10_001, restart_policy=policy)
        async with running(bus):
            published = [await bus.publish("s", node(i)) for i in range(10_000)]
            assert trio.current_time() == 0  # publishing never waited
        assert memory.snapshot() == published
        lines = out.getvalue().splitlines()
        assert [Event.from_json(line) for line in lines] == published
        assert flaky.seen == published  # each failing event was skipped, nothing else
        health = {h.sink: h for h in bus.sink_health()}
        assert health["flaky"].error_count == 5_000
        assert health["flaky"].restarts == 5_000
        assert health["flaky"].dropped == 0
        assert health["flaky"].last_error == "RuntimeError: cannot take 9999"
        assert health["flaky"].state == "stopped"
        for name in ("memory", "jsonl"):
            assert (health[name].error_count, health[name].restarts, health[name].dropped) == (
                0,
                0,
                0,
            )


async def test_default_policy_detaches_a_sink_after_five_restarts(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(60):
        memory, flaky = MemorySink(), FlakySink()
        bus = EventBus([flaky, memory], clock=trio.current_time)
        async with running(bus):
            published = [await bus.publish("s", node(i)) for i in range(10_000)]
            await trio.sleep(10)
            [flaky_health, memory_health] = bus.sink_health()
            assert flaky_health.state == "failed"
            after = await bus.publish("s", node(10_000))
        assert memory.snapshot() == [*published, after]
        assert flaky_health.error_count == 6
        assert flaky_health.restarts == 5
        # Crashes at 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s (backoff 0.1 s doubling).
        assert flaky_health.last_error_at == 0.1 + 0.2 + 0.4 + 0.8 + 1.6
        # Every event was either handed to the flaky sink or dropped: nothing vanished.
        assert len(flaky.seen) + flaky_health.dropped == len(published)
        # What it was handed came in publication order (drops only leave gaps).
        seqs = [e.seq for e in flaky.seen if e.seq is not None]
        assert seqs == sorted(set(seqs))
        assert len(seqs) == len(flaky.seen)
        assert after not in flaky.seen  # detached: nothing more reaches it
        assert memory_health.error_count == memory_health.dropped == 0


async def test_backoff_happens_at_exact_virtual_times(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(60):
        calls: list[float] = []

        class Broken:
            name = "broken"
            inline = True  # calls trio.current_time()

            def handle(self, event: Event) -> None:
                calls.append(trio.current_time())
                raise ValueError("no")

        bus = EventBus([Broken()], clock=trio.current_time)
        diagnostics = bus.diagnostics()
        async with running(bus):
            for i in range(10):
                await bus.publish("s", node(i))
            await trio.sleep(20)
        expected = [0.0]
        for backoff in (0.1, 0.2, 0.4, 0.8, 1.6):
            expected.append(expected[-1] + backoff)
        assert calls == expected
        [health] = bus.sink_health()
        assert (health.state, health.error_count, health.restarts) == ("failed", 6, 5)
        assert health.dropped == 4  # the 4 events still buffered when it was detached
        assert health.last_error == "ValueError: no"
        reports = [d async for d in diagnostics]
        assert [(d.sink, d.error, d.when, d.occurrence) for d in reports] == [
            ("broken", "ValueError: no", when, n) for n, when in enumerate(expected, start=1)
        ]


async def test_emit_to_events_reports_failures_to_the_other_consumers(
    autojump_clock: trio.abc.Clock,
) -> None:
    from treadle.runtime.events.bus import DiagnosticsConfig

    with trio.fail_after(30):
        memory, flaky = MemorySink(), FlakySink()
        bus = EventBus(
            [flaky, memory],
            diagnostics=DiagnosticsConfig(emit_to_events=True),
            restart_policy=RestartPolicy(max_restarts=100, initial_backoff=0),
        )
        async with running(bus):
            for i in range(6):
                await bus.publish("s", node(i))
            # Failures while closing reach health and diagnostics(), not the main stream.
            await trio.sleep(1)
        errors = [e for e in memory.snapshot() if e.scope == "sink.error"]
        assert [e.message for e in errors] == [
            "flaky: RuntimeError: cannot take 1",
            "flaky: RuntimeError: cannot take 3",
            "flaky: RuntimeError: cannot take 5",
        ]
        assert [e.metadata["occurrence"] for e in errors] == [1, 2, 3]
        assert all(isinstance(e, DiagnosticEvent) and e.session_id is None for e in errors)
        assert not any(e.scope == "sink.error" for e in flaky.seen)


async def test_diagnostics_disabled_keeps_health_but_streams_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    from treadle.runtime.events.bus import DiagnosticsConfig

    with trio.fail_after(30):
        bus = EventBus([FlakySink()], diagnostics=DiagnosticsConfig(enabled=False))
        diagnostics = bus.diagnostics()
        async with running(bus):
            for i in range(4):
                await bus.publish("s", node(i))
        assert [d async for d in diagnostics] == []
        assert bus.sink_health()[0].error_count == 2


async def test_a_never_reading_subscriber_drops_exactly_and_keeps_stream_end(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(5):
        memory = MemorySink()
        async with running(EventBus([memory], capacity=8)) as bus:
            stuck = bus.subscribe(session_id="s")
            everything = bus.subscribe(capacity=4)
            published = [await bus.publish("s", node(i)) for i in range(100)]
            end = await bus.publish("s", stream_end("s", 1))
            # Another session's traffic after the end: the global stream keeps the sentinel.
            for i in range(10):
                await bus.publish("t", node(i))
            assert stuck.dropped == 101 - 8
            got = [e async for e in stuck]
            assert got == [*published[-7:], end]
            assert everything.dropped == 111 - 4
            assert everything.receive_nowait() == end
        assert memory.snapshot()[:101] == [*published, end]
        assert bus.sink_health()[0].dropped == 0


async def test_session_subscriber_sees_only_its_session_and_ends_after_stream_end(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(5):
        async with running(EventBus()) as bus:
            stream = bus.subscribe(session_id="a")
            await bus.publish("b", node(0))
            a0 = await bus.publish("a", node(1))
            inv = await bus.publish("a", invocation_end("a", 1))  # does not end the stream
            await bus.publish("b", stream_end("b", 1))  # neither does another session's end
            a1 = await bus.publish("a", node(2))
            end = await bus.publish("a", stream_end("a", 2))
            await bus.publish("a", node(3))  # after the end: not seen
            assert [e async for e in stream] == [a0, inv, a1, end]
            late = bus.subscribe(session_id="a")
            assert late.statistics().ended is False  # a new run of "a" could still come


async def test_unfiltered_stream_ends_when_the_bus_closes(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(5):
        bus = EventBus()
        received: list[Event] = []

        async def reader(stream: trio.abc.ReceiveChannel[Event]) -> None:
            async for event in stream:
                received.append(event)

        async with trio.open_nursery() as nursery:
            await nursery.start(bus.run)
            nursery.start_soon(reader, bus.subscribe())
            await trio.testing.wait_all_tasks_blocked()
            sent = [await bus.publish("s", node(i)) for i in range(3)]
            await trio.sleep(1)
            await bus.aclose()
        assert received == sent


async def test_stream_api(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(5):
        async with running(EventBus()) as bus:
            stream = bus.subscribe()
            assert await stream.next_timeout(2.5) is None
            assert trio.current_time() == 2.5
            with pytest.raises(trio.WouldBlock):
                stream.receive_nowait()
            sent = await bus.publish("s", node(0))
            assert await stream.next_timeout(1) == sent
            stats = stream.statistics()
            assert (stats.capacity, stats.buffered, stats.dropped, stats.ended) == (
                1024,
                0,
                0,
                False,
            )

            async def second_reader() -> None:
                with pytest.raises(trio.BusyResourceError):
                    await stream.receive()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.receive)
                await trio.testing.wait_all_tasks_blocked()
                await second_reader()
                await bus.publish("s", node(1))
            assert bus.statistics().subscribers == 1
            with stream:
                pass
            assert bus.statistics().subscribers == 0
            await bus.publish("s", node(2))
            with pytest.raises(trio.ClosedResourceError):
                await stream.receive()
            assert stream.statistics().buffered == 0


async def test_aclose_flushes_slow_sinks_within_the_timeout(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(60):
        handled: list[str] = []
        closed: list[float] = []

        class Slow:
            name = "slow"

            async def handle(self, event: Event) -> None:
                await trio.sleep(1)
                handled.append(event.message)

            async def close(self) -> None:
                closed.append(trio.current_time())

        bus = EventBus([Slow()])
        async with trio.open_nursery() as nursery:
            await nursery.start(bus.run)
            for i in range(10):
                await bus.publish("s", node(i))
            await bus.aclose(flush_timeout=4.5)
            await bus.aclose()  # idempotent
        assert handled == ["0", "1", "2", "3"]
        assert closed == [4.5]
        assert bus.sink_health()[0].state == "stopped"


async def test_open_and_close_are_called_once_and_a_failing_open_is_retried(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(10):
        log: list[str] = []

        class Picky:
            name = "picky"
            inline = True  # under the autojump clock
            attempts = 0

            async def open(self) -> None:
                self.attempts += 1
                log.append("open")
                if self.attempts == 1:
                    raise OSError("not yet")

            def handle(self, event: Event) -> None:
                log.append(event.message)

            def close(self) -> None:
                log.append("close")

        bus = EventBus([Picky()])
        async with running(bus):
            await bus.publish("s", node(0))
            await bus.publish("s", node(1))
        assert log == ["open", "open", "0", "1", "close"]
        [health] = bus.sink_health()
        assert (health.error_count, health.restarts, health.last_error) == (
            1,
            1,
            "OSError: not yet",
        )


async def test_cancelling_the_bus_closes_sinks_and_leaves_no_task(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(10):
        closed: list[str] = []

        class Closing(MemorySink):
            def close(self) -> None:
                closed.append(self.name)

        bus = EventBus([Closing(name="a"), Closing(name="b")])
        stream = bus.subscribe()
        before = all_tasks()
        async with trio.open_nursery() as nursery:
            await nursery.start(bus.run)
            await bus.publish("s", node(0))
            nursery.cancel_scope.cancel()
        assert sorted(closed) == ["a", "b"]
        assert [h.state for h in bus.sink_health()] == ["stopped", "stopped"]
        assert all_tasks() == before
        await bus.aclose()
        assert [e.message async for e in stream] == ["0"]


async def test_channel_sink_forwards_and_reports_a_closed_receiver(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(10):
        send, receive = trio.open_memory_channel[Event](1)
        bus = EventBus([ChannelSink(send)], restart_policy=RestartPolicy(max_restarts=0))
        async with running(bus):
            first = await bus.publish("s", node(0))
            second = await bus.publish("s", node(1))  # the channel is full: the sink waits
            assert await receive.receive() == first
            assert await receive.receive() == second
            await receive.aclose()
            await bus.publish("s", node(2))
            await trio.sleep(1)
            [health] = bus.sink_health()
        assert health.state == "failed"
        assert health.last_error is not None
        assert "receiver is closed" in health.last_error


async def test_jsonl_sink_writes_a_path(tmp_path: object) -> None:
    # Real file I/O, so no autojump clock here.
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    path = tmp_path / "events.jsonl"
    path.write_text("old content\n")
    with trio.fail_after(10):
        async with running(EventBus([JsonLinesSink(path)])) as bus:
            sent = [await bus.publish("s", node(i)) for i in range(3)]
    lines = path.read_text().splitlines()
    assert [Event.from_json(json.loads(line)) for line in lines] == sent


async def test_blocking_iter_from_a_worker_thread() -> None:
    # A real thread: no autojump clock here.
    with trio.fail_after(10):
        async with running(EventBus()) as bus:
            stream = bus.subscribe(session_id="s")
            result: list[Event] = []

            def consume() -> None:
                result.extend(stream.blocking_iter())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, consume)
                sent = [await bus.publish("s", node(i)) for i in range(50)]
                sent.append(await bus.publish("s", stream_end("s", 1)))
            assert result == sent
            assert is_sentinel(result[-1])


async def test_add_sink_while_running_and_after_close(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(5):
        early, late = MemorySink(name="early"), MemorySink(name="late")
        bus = EventBus([early])
        async with running(bus):
            # A session with a subscriber of its own: its events still reach the late sink.
            stream = bus.subscribe(session_id="s")
            first = await bus.publish("s", node(0))
            await bus.add_sink(late)
            second = await bus.publish("s", node(1))
        assert early.snapshot() == [first, second]
        assert late.snapshot() == [second]
        assert [stream.receive_nowait(), stream.receive_nowait()] == [first, second]
        assert [h.sink for h in bus.sink_health()] == ["early", "late"]
        assert bus.sinks == (early, late)
        with pytest.raises(trio.ClosedResourceError, match="closed"):
            await bus.add_sink(MemorySink())


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        EventBus(capacity=0)
    from treadle.runtime.events.bus import DiagnosticsConfig

    with pytest.raises(ValueError, match="buffer_capacity must be at least 1"):
        DiagnosticsConfig(buffer_capacity=0)
    with pytest.raises(TypeError, match="is not a sink"):
        EventBus([object()])  # type: ignore[list-item]  # proving the check
