"""``open_event_stream``: a remote stream that sees each event once, in order, across drops."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from test_websocket_sink import expected, run_session, serving, talker

from treadle import (
    AppRunner,
    EventBus,
    EventStreamError,
    MemorySink,
    open_event_stream,
)
from treadle.runtime.events.types import Event
from treadle.sinks.websocket import WebSocketSink

pytestmark = pytest.mark.watchdog(60)


def as_json(events: list[Event]) -> list[Any]:
    return [json.loads(e.to_json_string()) for e in events]


class CrashingOnce(WebSocketSink):
    """A WebSocket sink that crashes once, after handling the event with seq ``at``: its actor
    (and so its server, dropping every connection) is restarted by the bus's supervisor."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.crashed = False

    def handle(self, event: Event) -> None:
        super().handle(event)
        if event.seq == self.at and not self.crashed:
            self.crashed = True
            raise RuntimeError("the sink broke")


async def test_the_client_sees_every_event_once_across_a_server_restart() -> None:
    with trio.fail_after(30):
        sink = CrashingOnce(at=40)
        async with serving(talker(120, pause_every=10, pause=0.01), sink) as (runner, memory):
            got: list[Event] = []
            async with open_event_stream(sink.url("s")) as events, trio.open_nursery() as nursery:
                nursery.start_soon(run_session, runner, "s")
                async for event in events:
                    got.append(event)
            health = {h.sink: h for h in runner.bus.sink_health()}["websocket"]
        assert health.restarts == 1
        assert events.reconnects >= 1
        assert as_json(got) == expected(memory, "s")
        assert events.dropped == 0


async def test_a_consumer_that_pauses_gets_its_lost_events_back_from_the_replay() -> None:
    with trio.fail_after(30):
        # A small queue: the paused consumer's events are dropped, and it is told so.
        sink = WebSocketSink(queue_size=60, stuck_timeout=5)
        app = talker(600, pause_every=50, pause=0.001, size=1000)  # more than socket buffers hold
        async with serving(app, sink) as (runner, memory):
            got: list[Event] = []
            async with open_event_stream(sink.url("s")) as events:
                await run_session(runner, "s")  # nobody reads meanwhile
                async for event in events:
                    got.append(event)
        assert sink.statistics().dropped > 0
        assert events.reconnects >= 1
        assert as_json(got) == expected(memory, "s")


async def test_from_seq_and_the_end_of_the_stream() -> None:
    with trio.fail_after(30):
        sink = WebSocketSink()
        async with serving(talker(30), sink) as (runner, _):
            await run_session(runner, "s")
            async with open_event_stream(sink.url("s"), from_seq=25) as events:
                seqs = [event.seq async for event in events]
        assert seqs == list(range(25, 31))  # ends with STREAM_END (seq 30), then stops


async def test_the_all_sessions_stream_ends_when_the_server_closes() -> None:
    with trio.fail_after(30):
        sink = WebSocketSink()
        got: list[Event] = []
        async with trio.open_nursery() as nursery:
            memory = MemorySink()
            runner = AppRunner(talker(5), event_bus=EventBus([memory, sink]))
            async with runner:
                ready = trio.Event()

                async def follow() -> None:
                    async with open_event_stream(sink.url()) as events:
                        ready.set()
                        async for event in events:
                            got.append(event)

                nursery.start_soon(follow)
                await ready.wait()
                await run_session(runner, "a")
                await run_session(runner, "b")
            # Leaving the runner closes the server (1001): the stream ends.
        assert as_json(got) == expected(memory, "a") + expected(memory, "b")


async def test_refusals_and_an_unreachable_server_are_clear_errors() -> None:
    with trio.fail_after(30):
        sink = WebSocketSink(token="t0ken")
        async with serving(talker(1), sink):
            with pytest.raises(EventStreamError, match="HTTP 401"):
                async with open_event_stream(sink.url(), token="wrong"):
                    pass
            async with open_event_stream(sink.url(), token="t0ken"):
                pass
            port = sink.port
        with pytest.raises(EventStreamError, match="cannot reach the event server"):
            async with open_event_stream(f"ws://127.0.0.1:{port}/events", retry_for=0.3):
                pass
        with pytest.raises(ValueError, match="from_seq needs a session URL"):
            async with open_event_stream(f"ws://127.0.0.1:{port}/events", from_seq=3):
                pass
