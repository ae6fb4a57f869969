"""A sink that serves events to WebSocket clients (trio-websocket), live and resumable."""

from __future__ import annotations

import functools
import hmac
import json
import logging
import math
import re
import socket
from collections import deque
from collections.abc import Iterable
from typing import Final, TypeAlias
from urllib.parse import parse_qs, quote, unquote, urlsplit

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)
from wsproto.connection import ConnectionState

from ..actors.errors import TreadleError
from ..runtime.events.types import STREAM_END_SCOPE, Event, is_sentinel

__all__ = ["WebSocketError", "WebSocketSink", "WebSocketStatistics"]

log = logging.getLogger("treadle.websocket")

# (session_id, seq, JSON text, ends the session's stream, the text frame on the wire): one
# encoded event, shared by every client and the replay buffer.
_Frame: TypeAlias = tuple[str | None, int, str, bool, bytes]

_SESSION_PATH: Final = re.compile(r"/sessions/([^/]+)/events")
_PONG: Final = '{"type":"pong"}'
# How long a closing handshake may take before the connection is simply dropped.
_CLOSE_GRACE: Final = 2.0
# How long a connection cancelled with the server may take to say goodbye.
_QUICK_CLOSE: Final = 0.1
# At most this many frames, or about this many bytes, go out in one socket write.
_BATCH_FRAMES: Final = 256
_BATCH_BYTES: Final = 65_536
# What a trio-websocket connection must have for a batch to go out in one write (_send_wire).
_BATCH_PARTS: Final = ("_wsproto", "_stream_lock", "_stream", "_abort_web_socket")
# Sessions whose events are kept for replay at most (the oldest session's are forgotten first).
_MAX_REPLAY_SESSIONS: Final = 1024

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_UNSUPPORTED: Final = 1003
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009


class WebSocketError(TreadleError):
    """The WebSocket server is not serving (its address could not be bound)."""


@attrs.frozen
class WebSocketStatistics:
    """A snapshot of the server.

    Attributes:
        clients: Connected clients now.
        accepted: Handshakes accepted so far.
        rejected: Handshakes refused (401, 404, 400, 503).
        dropped: Events dropped for slow clients, over all clients so far.
        closed_by_server: Connections the server closed for bad input or a stuck client.
        errors: Connections that ended with an unexpected error (a broken peer); each ended
            only that connection.
    """

    clients: int
    accepted: int
    rejected: int
    dropped: int
    closed_by_server: int
    errors: int


@attrs.define(eq=False)
class _Client:
    """One connected client: what it still has to receive, and how it is doing."""

    session_id: str | None  # None: /events, every session
    capacity: int
    # Replayed frames (from_seq) go first; they are bounded by the replay buffer, not capacity.
    replay: deque[_Frame]
    # Live frames below this seq were replayed or are older than the client asked for.
    min_seq: int = 0
    queue: deque[_Frame] = attrs.Factory(deque)
    dropped: dict[str | None, int] = attrs.Factory(dict)
    dropped_total: int = 0
    wake: trio.Event = attrs.Factory(trio.Event)
    # Why the server ends this connection (code, reason); set by the reader, the stuck watch or
    # shutdown, acted on by the writer between two frames.
    verdict: tuple[int, str] | None = None
    closing: bool = False  # the server shuts down: finish the queue, then close 1001
    gone: bool = False  # the peer closed or broke the connection
    # When the send under way started (None between sends): how a stuck client is found.
    sending_since: float | None = None
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)

    def put(self, frame: _Frame) -> int:
        """Queue a live frame, dropping the oldest non-final one when full; returns drops."""
        if self.session_id is not None and frame[1] < self.min_seq:
            if frame[3]:
                # The run ended before the event the client asked to start from.
                self.finish(CLOSE_NORMAL, "the session's stream ended before from_seq")
            return 0
        queue = self.queue
        lost = 0
        if len(queue) >= self.capacity:
            lost = self._evict()
        queue.append(frame)
        self.wake.set()
        return lost

    def _evict(self) -> int:
        queue = self.queue
        for index, frame in enumerate(queue):
            if not frame[3]:
                del queue[index]
                self.dropped[frame[0]] = self.dropped.get(frame[0], 0) + 1
                self.dropped_total += 1
                return 1
        return 0  # only stream ends are queued: they are never dropped

    def abandon(self) -> int:
        """Count every frame still to be sent as dropped; returns how many."""
        frames = [*self.replay, *self.queue]
        self.replay.clear()
        self.queue.clear()
        for frame in frames:
            self.dropped[frame[0]] = self.dropped.get(frame[0], 0) + 1
        self.dropped_total += len(frames)
        return len(frames)

    def finish(self, code: int, reason: str) -> None:
        if self.verdict is None:
            self.verdict = (code, reason)
        self.wake.set()


class WebSocketSink:
    """Serves the bus's events to WebSocket clients; an actor under the bus's supervision.

    Paths: ``/events`` streams every session; ``/sessions/{id}/events`` one session, and with
    ``?from_seq=N`` it first replays that session's buffered events from ``seq`` N, then goes on
    live with no gap and no duplicate. Each event is one text frame, its ``to_json_value()``
    JSON. A session's connections are closed with 1000 after its ``STREAM_END``; at shutdown
    the remaining connections get what is queued for them, then 1001.

    With a ``token`` a handshake must carry ``Authorization: Bearer <token>`` or
    ``?token=<token>`` (compared in constant time), else it gets HTTP 401. An unknown path gets
    404, a bad ``from_seq`` 400, a handshake past ``max_clients`` 503.

    Clients may send ``{"op": "ping"}`` (answered ``{"type": "pong"}``). A binary or non-JSON
    frame closes that connection with 1003, an unknown op with 1008, a frame over
    ``max_message_size`` with 1009; the reason says why.

    Backpressure: none towards the run. Each client has a queue of ``queue_size`` events; when
    it is full its oldest event is dropped and counted, and the client is sent
    ``{"type": "dropped", "count": N, "session_id": …}`` before its next event. A client whose
    connection has not taken a frame for ``stuck_timeout`` seconds is told its losses and closed
    with 1008 as soon as it reads again, and cut off if it still does not within another
    ``stuck_timeout``.

    Args:
        host: Address to bind (loopback by default).
        port: Port to bind; 0 picks a free one (see :attr:`port` once the bus runs). A restart
            after a crash binds the same port again.
        token: The shared secret clients must present, or ``None`` for none.
        max_clients: Connected clients at most.
        queue_size: Events queued per client before its oldest are dropped.
        replay_size: Events kept per session for ``from_seq``.
        replay_ttl: Seconds a finished session's events stay replayable after its ``STREAM_END``.
        stuck_timeout: Seconds a client may block a send before it is closed.
        handshake_timeout: Seconds a connection may take to complete its handshake.
        close_timeout: Seconds the clients get at shutdown to receive what is queued for them.
        max_message_size: Largest client frame accepted, in bytes.
        send_buffer: The kernel send buffer of each connection (``SO_SNDBUF``), which bounds
            what a client that stops reading holds in the kernel; ``None`` leaves the system's
            (auto-tuned, up to megabytes per connection).
        name: The sink's name in health reports.
    """

    # handle() is quick and touches Trio objects: it runs on the Trio thread.
    inline = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        max_clients: int = 256,
        queue_size: int = 1024,
        replay_size: int = 10_000,
        replay_ttl: float = 60.0,
        stuck_timeout: float = 10.0,
        handshake_timeout: float = 10.0,
        close_timeout: float = 2.0,
        max_message_size: int = 4096,
        send_buffer: int | None = 65_536,
        name: str = "websocket",
    ) -> None:
        for what, value in (
            ("max_clients", max_clients),
            ("queue_size", queue_size),
            ("replay_size", replay_size),
            ("max_message_size", max_message_size),
            ("send_buffer", 1 if send_buffer is None else send_buffer),
        ):
            if value < 1:
                raise ValueError(f"WebSocketSink {what} must be at least 1, not {value}")
        for what, seconds in (
            ("replay_ttl", replay_ttl),
            ("stuck_timeout", stuck_timeout),
            ("handshake_timeout", handshake_timeout),
            ("close_timeout", close_timeout),
        ):
            if not (seconds > 0 and math.isfinite(seconds)):
                raise ValueError(f"WebSocketSink {what} must be a positive number of seconds")
        if not 0 <= port <= 65535:
            raise ValueError(f"WebSocketSink port must be 0 to 65535, not {port}")
        if token is not None and not token:
            raise ValueError("WebSocketSink token must be a non-empty string or None")
        self.host = host
        self.name = name
        self.max_clients = max_clients
        self.queue_size = queue_size
        self.replay_size = replay_size
        self.replay_ttl = replay_ttl
        self.stuck_timeout = stuck_timeout
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.max_message_size = max_message_size
        self.send_buffer = send_buffer
        self._token = None if token is None else token.encode()
        self._bind_port = port
        self._port: int | None = None
        self._bind_error: str | None = None
        self._replay: dict[str, deque[_Frame]] = {}
        # Finished sessions (insertion order = finishing order) -> when their stream ended.
        self._finished: dict[str, float] = {}
        self._clients: set[_Client] = set()
        self._everything: tuple[_Client, ...] = ()  # clients of /events
        self._by_session: dict[str, tuple[_Client, ...]] = {}
        self._accepting: trio.CancelScope | None = None
        self._no_clients = trio.Event()
        self._no_clients.set()
        self._closing = False
        self._accepted = 0
        self._rejected = 0
        self._dropped = 0
        self._closed_by_server = 0
        self._errors = 0

    # -- address -----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port.

        Raises:
            WebSocketError: The server is not serving yet, or could not bind its address.
        """
        if self._port is None:
            why = f": {self._bind_error}" if self._bind_error else " yet"
            raise WebSocketError(
                f"the WebSocket server on {self.host}:{self._bind_port} is not serving{why}; "
                "start the runner (or bus) first, or choose another port"
            )
        return self._port

    def url(self, session_id: str | None = None) -> str:
        """``ws://host:port/events``, or the path of one session's events."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        path = "/events" if session_id is None else f"/sessions/{_quote(session_id)}/events"
        return f"ws://{host}:{self.port}{path}"

    def statistics(self) -> WebSocketStatistics:
        return WebSocketStatistics(
            clients=len(self._clients),
            accepted=self._accepted,
            rejected=self._rejected,
            dropped=self._dropped,
            closed_by_server=self._closed_by_server,
            errors=self._errors,
        )

    # -- the sink ----------------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Encode ``event`` once, keep it for replay and queue it for every client that wants it.

        Never waits: a full client queue drops its oldest event instead.
        """
        sid = event.session_id
        seq = event.seq if event.seq is not None else -1
        end = event.scope == STREAM_END_SCOPE and is_sentinel(event)
        text = event.to_json_string()
        frame: _Frame = (sid, seq, text, end, _text_frame(text))
        dropped = 0
        for client in self._everything:
            dropped += client.put(frame)
        if sid is not None:
            replay = self._replay.get(sid)
            if replay is None:
                replay = self._replay[sid] = deque(maxlen=self.replay_size)
                if len(self._replay) > _MAX_REPLAY_SESSIONS:
                    oldest = next(iter(self._replay))
                    del self._replay[oldest]
                    self._finished.pop(oldest, None)
            replay.append(frame)
            clients = self._by_session.get(sid)
            if clients is not None:
                for client in clients:
                    dropped += client.put(frame)
            if self._finished:
                self._finished.pop(sid, None)
                self._retire_replays()
            if end:
                self._finished[sid] = trio.current_time()
        self._dropped += dropped

    def _retire_replays(self) -> None:
        horizon = trio.current_time() - self.replay_ttl
        finished = self._finished
        while finished:
            sid, when = next(iter(finished.items()))
            if when > horizon:
                break
            del finished[sid]
            self._replay.pop(sid, None)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The server: bind, then accept connections until cancelled (the bus runs this).

        Cancellation: cancelling it drops every connection at once (each is sent 1001 if that
        can be done within a moment); :meth:`close` is the graceful way.
        Backpressure: none towards the run (see the class docstring).
        Errors: a connection that fails ends alone; only a failure to bind escapes.
        """
        try:
            listeners = await trio.open_tcp_listeners(self._bind_port, host=self.host)
        except OSError as exc:
            self._bind_error = f"{type(exc).__name__}: {exc}"
            raise WebSocketError(
                f"cannot serve WebSocket events on {self.host}:{self._bind_port}: {exc}"
            ) from exc
        self._port = listeners[0].socket.getsockname()[1]
        self._bind_port = self._port  # a restart serves the same address
        self._bind_error = None
        self._closing = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_stuck)
                with trio.CancelScope() as accepting:
                    self._accepting = accepting
                    await nursery.start(
                        functools.partial(
                            trio.serve_listeners,
                            self._handle_stream,
                            listeners,
                            handler_nursery=nursery,
                        )
                    )
                    task_status.started()
                    await trio.sleep_forever()
                await trio.sleep_forever()
        finally:
            self._accepting = None
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def close(self) -> None:
        """Stop accepting, let each client receive what is queued for it (at most
        ``close_timeout`` seconds), then close them with 1001."""
        self._closing = True
        if self._accepting is not None:
            self._accepting.cancel()
        for client in self._clients:
            client.closing = True
            client.wake.set()
        with trio.move_on_after(self.close_timeout):
            await self._no_clients.wait()

    # -- connections -------------------------------------------------------------------------------

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        try:
            if self.send_buffer is not None:
                stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
            async with trio.open_nursery() as nursery:
                request: WebSocketRequest | None = None
                with trio.move_on_after(self.handshake_timeout):
                    request = await wrap_server_stream(
                        nursery,
                        stream,
                        message_queue_size=4,
                        max_message_size=self.max_message_size,
                    )
                if request is not None:
                    await self._serve_request(request)
                nursery.cancel_scope.cancel()
        except Exception as exc:
            # A broken peer or protocol error ends this connection only.
            self._errors += 1
            log.debug("WebSocket connection ended with %r", exc)
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve_request(self, request: WebSocketRequest) -> None:
        refusal = self._check(request)
        if refusal is not None:
            self._rejected += 1
            status, message, headers = refusal
            await request.reject(status, extra_headers=headers, body=message.encode())
            return
        session_id, from_seq = _route(request.path)
        client = self._register(session_id, from_seq)
        connection: WebSocketConnection | None = None
        try:
            with client.scope:
                connection = await request.accept()
                self._accepted += 1
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read, connection, client)
                    verdict = await self._write(connection, client)
                    nursery.cancel_scope.cancel()
                if verdict is not None:
                    with trio.move_on_after(_CLOSE_GRACE):
                        await connection.aclose(*verdict)
        finally:
            self._unregister(client)
            if (
                connection is not None
                and connection.closed is None
                and client.sending_since is None
            ):
                # Cancelled (the server stops or restarts): say so if it can be done at once.
                with trio.CancelScope(shield=True) as scope:
                    scope.relative_deadline = _QUICK_CLOSE
                    await connection.aclose(CLOSE_GOING_AWAY, "the event server stopped")

    def _check(
        self, request: WebSocketRequest
    ) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """Why a handshake is refused (status, body, headers), or None to accept it."""
        if self._token is not None and not _authorised(request, self._token):
            return (
                401,
                "a valid token is required: send 'Authorization: Bearer <token>' or ?token=",
                [(b"WWW-Authenticate", b"Bearer")],
            )
        try:
            _route(request.path)
        except LookupError:
            return 404, "unknown path: use /events or /sessions/{id}/events", []
        except ValueError as exc:
            return 400, str(exc), []
        if self._closing:
            return 503, "the event server is shutting down", []
        if len(self._clients) >= self.max_clients:
            return 503, f"too many clients (at most {self.max_clients}); try again later", []
        return None

    def _register(self, session_id: str | None, from_seq: int | None) -> _Client:
        """Add a client and queue its replay, with no await in between: nothing handled before
        is missed and nothing is queued twice."""
        replay: deque[_Frame] = deque()
        client = _Client(session_id, self.queue_size, replay)
        if session_id is None:
            self._everything = (*self._everything, client)
        else:
            self._by_session[session_id] = (*self._by_session.get(session_id, ()), client)
            if from_seq is not None:
                client.min_seq = from_seq
                kept = self._replay.get(session_id)
                if kept:
                    first = kept[0][1]
                    if from_seq < first:
                        # Asked for events no longer kept: the client is told how many it missed.
                        client.dropped[session_id] = first - from_seq
                        client.dropped_total += first - from_seq
                    replay.extend(frame for frame in kept if frame[1] >= from_seq)
                    if kept[-1][3] and kept[-1][1] < from_seq:
                        client.finish(CLOSE_NORMAL, "the session's stream ended before from_seq")
        self._clients.add(client)
        self._no_clients = trio.Event()
        return client

    def _unregister(self, client: _Client) -> None:
        self._clients.discard(client)
        if client.session_id is None:
            self._everything = tuple(c for c in self._everything if c is not client)
        else:
            rest = tuple(c for c in self._by_session.get(client.session_id, ()) if c is not client)
            if rest:
                self._by_session[client.session_id] = rest
            else:
                self._by_session.pop(client.session_id, None)
        if not self._clients:
            self._no_clients.set()

    async def _read(self, connection: WebSocketConnection, client: _Client) -> None:
        """The client's frames: answer pings; anything else ends the connection."""
        try:
            while True:
                message = await connection.get_message()
                if isinstance(message, bytes):
                    verdict = (
                        CLOSE_UNSUPPORTED,
                        'binary frames are not accepted: send {"op": "ping"}',
                    )
                    break
                try:
                    request = json.loads(message)
                except ValueError:
                    verdict = (
                        CLOSE_UNSUPPORTED,
                        'frames must be JSON objects such as {"op": "ping"}',
                    )
                    break
                if not isinstance(request, dict):
                    verdict = (
                        CLOSE_UNSUPPORTED,
                        'frames must be JSON objects such as {"op": "ping"}',
                    )
                    break
                if request.get("op") != "ping":
                    op = str(request.get("op"))[:40]
                    verdict = (CLOSE_POLICY, f"unknown op {op!r}: the only op is 'ping'")
                    break
                await connection.send_message(_PONG)
        except ConnectionClosed:
            client.gone = True
            client.wake.set()
            return
        self._closed_by_server += 1
        client.finish(*verdict)

    async def _write(
        self, connection: WebSocketConnection, client: _Client
    ) -> tuple[int, str] | None:
        """Send the client its replay, then its live events, until something ends it.

        Returns:
            The close to send, or None when the peer is gone.
        """
        replay, queue = client.replay, client.queue
        try:
            while True:
                if client.gone:
                    return None
                if client.verdict is not None:
                    # What it will now never be sent counts as lost; it is told, then closed.
                    self._dropped += client.abandon()
                    await self._send_dropped(connection, client)
                    return client.verdict
                if client.dropped:
                    await self._send_dropped(connection, client)
                batch = _take(replay if replay else queue, client.session_id is not None)
                if not batch:
                    if client.closing:
                        return CLOSE_GOING_AWAY, "the event server is shutting down"
                    client.wake = trio.Event()
                    await client.wake.wait()
                    continue
                await self._send_frames(connection, client, batch)
                if batch[-1][3] and client.session_id is not None:
                    return CLOSE_NORMAL, "the session's stream ended"
        except ConnectionClosed:
            client.gone = True
            return None

    async def _send(self, connection: WebSocketConnection, client: _Client, text: str) -> None:
        client.sending_since = trio.current_time()
        await connection.send_message(text)
        client.sending_since = None

    async def _send_frames(
        self, connection: WebSocketConnection, client: _Client, batch: list[_Frame]
    ) -> None:
        """Send a batch of events: their frames, encoded once for every client, in one write
        (see :func:`_send_wire`), or one ``send_message`` each where that cannot be done."""
        client.sending_since = trio.current_time()
        if _can_batch(connection):
            await _send_wire(connection, b"".join(frame[4] for frame in batch))
        else:
            for frame in batch:
                await connection.send_message(frame[2])
        client.sending_since = None

    async def _send_dropped(self, connection: WebSocketConnection, client: _Client) -> None:
        counts, client.dropped = client.dropped, {}
        for sid, count in counts.items():
            notice = {"type": "dropped", "count": count, "session_id": sid}
            await self._send(connection, client, json.dumps(notice, separators=(",", ":")))

    async def _watch_stuck(self) -> None:
        """Close clients whose connection has not taken a frame for ``stuck_timeout``."""
        period = self.stuck_timeout / 4
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            for client in self._clients:
                since = client.sending_since
                if since is None or now - since < self.stuck_timeout:
                    continue
                if client.verdict is None:
                    self._closed_by_server += 1
                    client.finish(
                        CLOSE_POLICY,
                        f"too slow: stuck for {self.stuck_timeout:g} s, "
                        f"{client.dropped_total} events dropped",
                    )
                    # Its losses and the close go out once this send completes.
                    client.sending_since = now
                else:
                    # Condemned and still not reading: not even the close can reach it.
                    client.scope.cancel()

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port if self._port is not None else self._bind_port}"
        return f"WebSocketSink({where}, clients={len(self._clients)})"


def _take(source: deque[_Frame], per_session: bool) -> list[_Frame]:
    """The next frames to send in one write: up to ``_BATCH_FRAMES`` or ``_BATCH_BYTES``, ending
    early at a session's stream end (after which a session connection closes)."""
    batch: list[_Frame] = []
    size = 0
    while source and len(batch) < _BATCH_FRAMES and size < _BATCH_BYTES:
        frame = source.popleft()
        batch.append(frame)
        size += len(frame[2])
        if frame[3] and per_session:
            break
    return batch


async def _send_wire(connection: WebSocketConnection, data: bytes) -> None:
    """Write text frames made by :func:`_text_frame` to ``connection`` in one socket write.

    trio-websocket sends one frame per write and encodes it for each connection; on loopback the
    write (and its schedule point) is most of what a frame costs, and with many clients so is
    encoding the same frame for each. This does what ``send_message`` does (refuse a connection
    that is closing, write under its send lock, treat a broken stream as a closed connection)
    once per batch, with frames encoded once per event. It uses trio-websocket 0.12's
    connection, which has no public batch send (the dependency is pinned below 0.13); its
    server connections negotiate no extension, so a text frame is the same bytes for every
    client.
    """
    if connection.closed is not None or connection._wsproto.state is not ConnectionState.OPEN:
        raise ConnectionClosed(connection.closed)
    async with connection._stream_lock:
        try:
            await connection._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await connection._abort_web_socket()
            raise ConnectionClosed(connection.closed) from None


def _text_frame(text: str) -> bytes:
    """``text`` as one unmasked, final WebSocket text frame (RFC 6455 5.2), as a server sends."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65_536:
        header = b"\x81\x7e" + size.to_bytes(2, "big")
    else:
        header = b"\x81\x7f" + size.to_bytes(8, "big")
    return header + payload


def _can_batch(connection: WebSocketConnection) -> bool:
    """Whether ``connection`` has the trio-websocket 0.12 parts :func:`_send_wire` writes with."""
    return all(hasattr(connection, part) for part in _BATCH_PARTS)


def _route(target: str) -> tuple[str | None, int | None]:
    """``(session_id or None, from_seq or None)`` of a request target.

    Raises:
        LookupError: An unknown path.
        ValueError: A bad ``from_seq``.
    """
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    if parts.path == "/events":
        session_id = None
    else:
        match = _SESSION_PATH.fullmatch(parts.path)
        if match is None:
            raise LookupError(parts.path)
        session_id = unquote(match[1])
    values = query.get("from_seq")
    if not values:
        return session_id, None
    if session_id is None:
        raise ValueError("from_seq needs a session: use /sessions/{id}/events?from_seq=N")
    text = values[-1]
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"from_seq must be a whole number >= 0, not {text[:20]!r}")
    return session_id, int(text)


def _authorised(request: WebSocketRequest, token: bytes) -> bool:
    offered: list[bytes] = []
    for name, value in request.headers:
        if name.lower() == b"authorization":
            scheme, _, credential = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                offered.append(credential.strip())
    offered.extend(value.encode() for value in _query_tokens(request.path))
    # Every offered token is compared, in constant time, so timing tells nothing.
    ok = False
    for candidate in offered:
        ok |= hmac.compare_digest(candidate, token)
    return ok


def _query_tokens(target: str) -> Iterable[str]:
    return parse_qs(urlsplit(target).query, keep_blank_values=True).get("token", [])


def _quote(session_id: str) -> str:
    return quote(session_id, safe="")
