"""The WebSocket sink over real loopback sockets, with a real trio-websocket client (SPEC 6.1)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from treadle import END, START, AppRunner, EventBus, GraphBuilder, MemorySink, VersionedState
from treadle.actors.supervisor import RestartPolicy
from treadle.runtime.remote.connection import open_websocket
from treadle.sinks import websocket as websocket_module
from treadle.sinks.websocket import WebSocketError, WebSocketSink

pytestmark = pytest.mark.watchdog(60)


def talker(count: int, *, pause_every: int = 0, pause: float = 0.0, size: int = 0) -> Any:
    """One node emitting ``count`` events (sleeping ``pause`` after every ``pause_every``), each
    padded with ``size`` bytes."""
    pad = "x" * size

    async def talk(snapshot: Any, ctx: Any) -> None:
        for i in range(count):
            await ctx.emit("talk", f"line {i}{pad}", i=i)
            if pause_every and (i + 1) % pause_every == 0:
                await trio.sleep(pause)

    return (
        GraphBuilder()
        .add_node("talk", talk)
        .add_edge(START, "talk")
        .add_edge("talk", END)
        .compile()
    )


def expected(memory: MemorySink, session_id: str) -> list[Any]:
    """What a client of the session should see: the MemorySink's events as JSON values."""
    return [json.loads(e.to_json_string()) for e in memory.snapshot() if e.session_id == session_id]


async def read_all(connection: WebSocketConnection) -> tuple[list[Any], int | None]:
    """Every frame until the server closes, and the close code."""
    frames: list[Any] = []
    while True:
        try:
            frames.append(json.loads(await connection.get_message()))
        except ConnectionClosed as closed:
            return frames, closed.reason.code if closed.reason else None


@asynccontextmanager
async def serving(
    app: Any, sink: WebSocketSink, **options: Any
) -> AsyncIterator[tuple[AppRunner, MemorySink]]:
    memory = MemorySink()
    async with AppRunner(app, event_bus=EventBus([memory, sink]), **options) as runner:
        yield runner, memory


async def run_session(runner: AppRunner, session_id: str) -> None:
    await runner.create_session(session_id, VersionedState())
    await runner.run_until_complete(session_id)


# -- frames, paths, close codes -------------------------------------------------------------------


async def test_a_session_streams_the_memory_sink_events_then_closes_1000() -> None:
    with trio.fail_after(20):
        sink = WebSocketSink()
        got: list[Any] = []
        async with (
            serving(talker(200), sink) as (runner, memory),
            open_websocket(sink.url("s1")) as ws,
            trio.open_nursery() as nursery,
        ):

            async def reader() -> None:
                got.append(await read_all(ws))

            nursery.start_soon(reader)
            await run_session(runner, "s1")
        frames, code = got[0]
        assert frames == expected(memory, "s1")
        assert [f["seq"] for f in frames] == list(range(len(frames)))
        assert frames[-1]["scope"] == "__treadle_stream_end__"
        assert code == 1000
        assert sink.statistics().dropped == 0


@pytest.mark.parametrize("batched", [True, False])
async def test_a_backlog_arrives_whole_in_batches_or_one_frame_at_a_time(
    batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that reads only after the run gets its backlog in batches (one write for many
    frames, through trio-websocket 0.12's connection); a connection without those parts gets
    the same frames one ``send_message`` at a time."""
    asked: list[bool] = []
    can_batch = websocket_module._can_batch

    def spy(connection: WebSocketConnection) -> bool:
        asked.append(can_batch(connection) if batched else False)
        return asked[-1]

    monkeypatch.setattr(websocket_module, "_can_batch", spy)
    with trio.fail_after(20):
        sink = WebSocketSink(queue_size=1000)
        async with (
            serving(talker(600), sink) as (runner, memory),
            open_websocket(sink.url("s")) as ws,
        ):
            await run_session(runner, "s")
            frames, code = await read_all(ws)
    assert frames == expected(memory, "s")
    assert code == 1000
    # The installed trio-websocket has what a batch needs (else it silently gets slower).
    assert asked
    assert all(asked) if batched else not any(asked)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
def test_a_frame_encoded_once_reads_back_in_a_wsproto_client(size: int) -> None:
    """The frames the server encodes once per event (for every client) are what wsproto's client
    expects of a server text frame, at every length boundary, with multi-byte text too."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="localhost", target="/events")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    text = ("é" * size)[: max(size - size // 3, 0)] + "x" * (size // 3)
    assert len(text.encode()) >= size * 2 // 3
    wire = websocket_module._text_frame(text)
    assert wire == server.send(TextMessage(data=text))
    client.receive_data(wire + wire)
    received = [event for event in client.events() if isinstance(event, TextMessage)]
    assert [event.data for event in received] == [text, text]
    assert all(event.message_finished for event in received)


async def test_events_path_carries_concurrent_sessions() -> None:
    with trio.fail_after(20):
        sink = WebSocketSink()
        frames: list[Any] = []
        async with (
            serving(talker(300, pause_every=25, pause=0.001), sink) as (runner, memory),
            open_websocket(sink.url()) as ws,
        ):

            async def reader() -> None:
                while True:
                    frames.append(json.loads(await ws.get_message()))
                    ends = [f for f in frames if f["scope"] == "__treadle_stream_end__"]
                    if len(ends) == 3:
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                for sid in ("a", "b", "c"):
                    nursery.start_soon(run_session, runner, sid)
        sessions = [f["session_id"] for f in frames]
        # Interleaved, yet each session's frames are exactly its events, in seq order.
        assert sessions != sorted(sessions)
        for sid in ("a", "b", "c"):
            assert [f for f in frames if f["session_id"] == sid] == expected(memory, sid)


async def test_unknown_paths_bad_from_seq_and_a_full_server_are_refused() -> None:
    with trio.fail_after(20):
        sink = WebSocketSink(max_clients=1)
        async with serving(talker(1), sink):
            base = f"ws://127.0.0.1:{sink.port}"
            for path, status in (
                ("/nope", 404),
                ("/sessions/x/events/more", 404),
                ("/sessions/x/events?from_seq=-1", 400),
                ("/sessions/x/events?from_seq=abc", 400),
                ("/events?from_seq=3", 400),
            ):
                with pytest.raises(ConnectionRejected) as rejected:
                    async with open_websocket(base + path):
                        pass
                assert rejected.value.status_code == status, path
            async with open_websocket(sink.url()):
                with pytest.raises(ConnectionRejected) as full:
                    async with open_websocket(sink.url()):
                        pass
                assert full.value.status_code == 503
            assert sink.statistics().rejected == 6


async def test_ping_is_answered_with_pong() -> None:
    with trio.fail_after(20):
        sink = WebSocketSink()
        async with serving(talker(1), sink), open_websocket(sink.url()) as ws:
            for _ in range(3):
                await ws.send_message('{"op": "ping"}')
                assert json.loads(await ws.get_message()) == {"type": "pong"}


def test_port_before_start_and_a_busy_port_are_clear_errors() -> None:
    sink = WebSocketSink()
    with pytest.raises(WebSocketError, match="not serving yet"):
        _ = sink.port
    with pytest.raises(ValueError, match="queue_size"):
        WebSocketSink(queue_size=0)

    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = WebSocketSink(port=taken.getsockname()[1])
            bus = EventBus([busy], restart_policy=RestartPolicy(max_restarts=0))
            async with AppRunner(talker(1), event_bus=bus):
                with pytest.raises(WebSocketError, match=r"not serving: OSError.*in use"):
                    _ = busy.port

    trio.run(main)


# -- auth ------------------------------------------------------------------------------------------


async def test_a_token_is_required_by_header_or_query() -> None:
    with trio.fail_after(20):
        sink = WebSocketSink(token="s3cret")
        async with serving(talker(1), sink):
            url = sink.url()
            for attempt in (
                {},
                {"extra_headers": [(b"Authorization", b"Bearer wrong")]},
                {"extra_headers": [(b"Authorization", b"Basic s3cret")]},
                {"url": url + "?token=wrong"},
                {"url": url + "?token="},
            ):
                options = dict(attempt)
                target = options.pop("url", url)
                with pytest.raises(ConnectionRejected) as rejected:
                    async with open_websocket(target, **options):
                        pass
                assert rejected.value.status_code == 401
            async with open_websocket(url, extra_headers=[(b"Authorization", b"Bearer s3cret")]):
                pass
            async with open_websocket(url + "?token=s3cret"):
                pass
            # Auth comes before routing: an unknown path without a token is 401, not 404.
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket(f"ws://127.0.0.1:{sink.port}/nope"):
                    pass
            assert rejected.value.status_code == 401


# -- from_seq replay -------------------------------------------------------------------------------

EVENTS = 120


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    from_seq=st.integers(0, EVENTS + 3),
    cuts=st.lists(st.integers(1, 40), max_size=4),
    connect_after=st.integers(0, 3),
)
def test_from_seq_replays_then_goes_live_without_gap_or_duplicate(
    from_seq: int, cuts: list[int], connect_after: int
) -> None:
    """A client asks for ``from_seq`` while the run is under way, hangs up after each drawn number
    of frames and comes back with ``from_seq=last+1``: it sees every event from ``from_seq`` on,
    once, in order, then a 1000 close."""

    async def main() -> None:
        with trio.fail_after(30):
            sink = WebSocketSink()
            async with serving(talker(EVENTS, pause_every=10, pause=0.002), sink) as (
                runner,
                memory,
            ):
                seen: list[Any] = []
                codes: list[int | None] = []

                async def client() -> None:
                    # Start part-way into the run (the replay then seams onto live events).
                    await trio.sleep(0.005 * connect_after)
                    next_seq = from_seq
                    for cut in [*cuts, None]:
                        async with open_websocket(sink.url("s") + f"?from_seq={next_seq}") as ws:
                            if cut is None:
                                frames, code = await read_all(ws)
                                seen.extend(frames)
                                codes.append(code)
                                return
                            for _ in range(cut):
                                try:
                                    frame = json.loads(await ws.get_message())
                                except ConnectionClosed:
                                    codes.append(1000)
                                    return
                                seen.append(frame)
                                next_seq = frame["seq"] + 1

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run_session, runner, "s")
                    nursery.start_soon(client)
            want = [e for e in expected(memory, "s") if e["seq"] >= from_seq]
            assert seen == want
            assert codes[-1] == 1000 or want == []

    trio.run(main)


# -- hostile input ---------------------------------------------------------------------------------

_HANDSHAKE = (
    b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)

hostile_actions = st.one_of(
    st.tuples(st.just("bytes"), st.binary(min_size=1, max_size=300)),
    st.tuples(st.just("binary"), st.binary(max_size=100)),
    st.tuples(st.just("text"), st.text(max_size=100).filter(lambda t: not _is_object(t))),
    st.tuples(st.just("op"), st.text(max_size=20).filter(lambda op: op != "ping")),
    st.tuples(st.just("oversize"), st.integers(5000, 20_000)),
    st.tuples(st.just("half_handshake"), st.integers(1, len(_HANDSHAKE) - 1)),
    st.tuples(st.just("mid_frame"), st.integers(1, 5)),
)


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


async def _raw(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def _expect_close(ws: WebSocketConnection) -> int | None:
    with trio.fail_after(5):
        while True:
            try:
                await ws.get_message()
            except ConnectionClosed as closed:
                return closed.reason.code if closed.reason else None


async def _hostile(sink: WebSocketSink, action: tuple[str, Any]) -> None:
    kind, value = action
    port = sink.port
    if kind == "bytes":
        stream = await _raw(port)
        await stream.send_all(value)
        await stream.aclose()
    elif kind == "half_handshake":
        stream = await _raw(port)
        await stream.send_all(_HANDSHAKE[:value])
        await stream.aclose()
    elif kind == "mid_frame":
        stream = await _raw(port)
        await stream.send_all(_HANDSHAKE)
        await stream.receive_some(4096)
        # A masked text frame header promising 100 bytes, then only a few of them.
        await stream.send_all(bytes([0x81, 0x80 | 100, 1, 2, 3, 4]) + b"x" * value)
        await stream.aclose()
    else:
        async with open_websocket(sink.url()) as ws:
            if kind == "binary" or kind == "text":
                await ws.send_message(value)
                want = 1003
            elif kind == "op":
                await ws.send_message(json.dumps({"op": value}))
                want = 1008
            else:
                await ws.send_message('{"op": "ping", "pad": "' + "x" * value + '"}')
                want = 1009
            code = await _expect_close(ws)
            assert code == want, (action, code)
            reason = ws.closed.reason if ws.closed else None
            assert reason, "a close for bad input carries a reason"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=st.lists(hostile_actions, min_size=1, max_size=4))
def test_hostile_input_closes_only_that_connection(actions: list[tuple[str, Any]]) -> None:
    async def main() -> None:
        with trio.fail_after(40):
            sink = WebSocketSink(handshake_timeout=1.0)
            async with serving(talker(50, pause_every=10, pause=0.005), sink) as (runner, memory):
                async with open_websocket(sink.url("good")) as good:
                    got: list[Any] = []

                    async def healthy() -> None:
                        got.append(await read_all(good))

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(healthy)
                        nursery.start_soon(run_session, runner, "good")
                        for action in actions:
                            await _hostile(sink, action)
                # The server still serves: a new client is accepted and pinged.
                async with open_websocket(sink.url()) as again:
                    await again.send_message('{"op":"ping"}')
                    assert json.loads(await again.get_message()) == {"type": "pong"}
                health = {h.sink: h for h in runner.bus.sink_health()}["websocket"]
                assert (health.state, health.error_count, health.restarts) == ("running", 0, 0)
            assert got[0] == (expected(memory, "good"), 1000)

    trio.run(main)


# -- slow clients ----------------------------------------------------------------------------------


async def _stalled_client(nursery: trio.Nursery, port: int, path: str) -> WebSocketConnection:
    """A real trio-websocket client with a small socket receive buffer that reads nothing until
    asked to (its library queue holds one message, then it stops reading the socket)."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    return stream, await wrap_client_stream(nursery, stream, "127.0.0.1", path)


async def _timed_run(stalled: bool, events: int) -> tuple[float, dict[str, Any]]:
    """Run one session of ``events`` events with a healthy client and maybe a stalled one, which
    reads again only once the server has judged it stuck (before it would be cut off)."""
    sink = WebSocketSink(queue_size=200, stuck_timeout=0.5)
    result: dict[str, Any] = {}
    # Paced so that a healthy client keeps up even on a busy machine.
    app = talker(events, pause_every=5, pause=0.005)
    async with serving(app, sink) as (runner, memory), trio.open_nursery() as nursery:
        if stalled:
            stream, stuck = await _stalled_client(nursery, sink.port, "/sessions/s/events")

            async def read_when_judged() -> None:
                while sink.statistics().closed_by_server == 0:
                    await trio.sleep(0.01)
                result["stuck"] = await read_all(stuck)
                await trio.aclose_forcefully(stream)

            nursery.start_soon(read_when_judged)
        got: list[Any] = []
        async with (
            open_websocket(sink.url("s"), message_queue_size=64) as healthy,
            trio.open_nursery() as reading,
        ):

            async def read_healthy() -> None:
                got.append(await read_all(healthy))

            reading.start_soon(read_healthy)
            began = trio.current_time()
            await run_session(runner, "s")
            took = trio.current_time() - began
        result.update(healthy=got[0], memory=expected(memory, "s"))
    result["statistics"] = sink.statistics()
    return took, result


async def test_a_client_that_never_reads_is_told_its_losses_and_closed() -> None:
    with trio.fail_after(60):
        events = 1500
        without, _ = await _timed_run(False, events)
        took, result = await _timed_run(True, events)
    healthy_frames, healthy_code = result["healthy"]
    assert healthy_frames == result["memory"]
    assert healthy_code == 1000
    frames, code = result["stuck"]
    assert code == 1008
    notices = [f for f in frames if f.get("type") == "dropped"]
    events_seen = [f for f in frames if f.get("type") != "dropped"]
    assert notices
    assert notices[-1]["session_id"] == "s"
    lost = sum(n["count"] for n in notices)
    # It received the start of the stream, then was told how many of the following events it
    # lost up to its close (those published after the close are not its concern).
    assert [f["seq"] for f in events_seen] == list(range(len(events_seen)))
    assert lost > 0
    assert len(events_seen) + lost < len(result["memory"])
    assert result["statistics"].dropped == lost
    # The run did not wait for it (generous bound: the machine is shared).
    assert took < without * 2 + 0.5, (took, without)
