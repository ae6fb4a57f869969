"""The client of the WebSocket sink: a remote event stream that resumes where it left off."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
)

from ...actors.errors import TreadleError
from ..events.types import STREAM_END_SCOPE, AnyEvent, event_from_json, is_sentinel
from .connection import open_websocket, single_error

__all__ = ["EventStreamError", "RemoteEventStream", "open_event_stream"]

_SESSION_PATH: Final = re.compile(r"/sessions/([^/]+)/events")
# Server closes that mean the stream is over rather than interrupted (on /events).
_FINAL_CLOSES: Final = frozenset({1000, 1001})
# The client's own fault (it sent something the server refused): retrying cannot help.
_CLIENT_ERRORS: Final = frozenset({1003, 1009})


class EventStreamError(TreadleError):
    """A remote event stream cannot go on: the server refused it or stayed unreachable."""


class RemoteEventStream:
    """Events from a :class:`~treadle.sinks.websocket.WebSocketSink`, in order, each once.

    Iterate it with ``async for``; open it with :func:`open_event_stream`. When the connection
    drops (or the server reports that events were dropped for this client) it reconnects with
    backoff and ``from_seq`` one past the last event it yielded, so nothing is skipped or
    repeated while the server still holds the events. On a session path it ends after the
    session's ``STREAM_END`` (which it yields); on ``/events`` when the server closes normally.

    Attributes:
        reconnects: How many times it connected again after the first time.
        dropped: Events the server reported lost that could not be fetched again (on
            ``/events``, which cannot resume, every reported loss).
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        url: str,
        *,
        token: str | None,
        from_seq: int | None,
        retry_for: float,
        initial_backoff: float,
        max_backoff: float,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise ValueError(f"an event stream URL starts with ws:// or wss://, not {url!r}")
        if from_seq is not None and from_seq < 0:
            raise ValueError(f"from_seq must be >= 0, not {from_seq}")
        match = _SESSION_PATH.fullmatch(parts.path)
        self.url = url
        self.session_id = unquote(match[1]) if match else None
        if from_seq is not None and self.session_id is None:
            raise ValueError("from_seq needs a session URL: ws://host:port/sessions/{id}/events")
        self._nursery = nursery
        self._parts = parts
        self._headers = [] if token is None else [(b"Authorization", f"Bearer {token}".encode())]
        self._next_seq = from_seq
        self._retry_for = retry_for
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._connection: WebSocketConnection | None = None
        self._hang_up_scope: trio.CancelScope | None = None
        self._connected_once = False
        # The from_seq of a reconnect made to fetch dropped events again: a second loss report
        # before any progress means the server no longer has them.
        self._recovering: int | None = None
        self._done = False
        self.reconnects = 0
        self.dropped = 0

    def __aiter__(self) -> RemoteEventStream:
        return self

    async def __anext__(self) -> AnyEvent:
        while not self._done:
            connection = self._connection
            if connection is None:
                connection = await self._connect()
            try:
                text = await connection.get_message()
            except ConnectionClosed as closed:
                await self._hang_up()
                code = closed.reason.code if closed.reason is not None else None
                if code in _CLIENT_ERRORS:
                    raise EventStreamError(
                        f"the event server at {self.url} closed the stream ({code}: "
                        f"{closed.reason.reason if closed.reason else ''})"
                    ) from None
                if self.session_id is None and code in _FINAL_CLOSES:
                    self._done = True
                continue
            frame = json.loads(text)
            kind = frame.get("type")
            if kind == "pong":
                continue
            if kind == "dropped":
                await self._lost(connection, int(frame.get("count", 0)))
                continue
            event = event_from_json(frame)
            if self.session_id is not None and event.seq is not None:
                if self._next_seq is not None and event.seq < self._next_seq:
                    continue  # already yielded (a replay may overlap what was seen)
                self._next_seq = event.seq + 1
                self._recovering = None
                if event.scope == STREAM_END_SCOPE and is_sentinel(event):
                    self._done = True
                    await self._hang_up()
            return event
        raise StopAsyncIteration

    async def _lost(self, connection: WebSocketConnection, count: int) -> None:
        if self.session_id is None or self._next_seq is None or self._recovering == self._next_seq:
            self.dropped += count  # nothing to resume from, or already tried: accept the loss
            return
        # Fetch them again from the server's replay buffer.
        self._recovering = self._next_seq
        await self._hang_up()

    async def _connect(self) -> WebSocketConnection:
        deadline = trio.current_time() + self._retry_for
        delay = self._initial_backoff
        while True:
            connection: WebSocketConnection
            try:
                connection, scope = await self._nursery.start(self._hold, self._target())
            except ConnectionRejected as rejected:
                if rejected.status_code != 503:
                    body = (rejected.body or b"").decode(errors="replace")
                    raise EventStreamError(
                        f"the event server refused {self.url}: HTTP {rejected.status_code} {body}"
                    ) from None
                why = "HTTP 503"
            except (HandshakeError, OSError, trio.TooSlowError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            else:
                if self._connected_once:
                    self.reconnects += 1
                self._connected_once = True
                self._connection, self._hang_up_scope = connection, scope
                return connection
            if trio.current_time() + delay > deadline:
                raise EventStreamError(
                    f"cannot reach the event server at {self.url} for {self._retry_for:g} s "
                    f"({why}); check that the run is serving events there"
                )
            await trio.sleep(delay)
            delay = min(delay * 2, self._max_backoff)

    async def _hold(
        self,
        target: str,
        *,
        task_status: trio.TaskStatus[tuple[WebSocketConnection, trio.CancelScope]],
    ) -> None:
        """Keep one connection open (in the stream's nursery) until it is hung up."""
        started = False
        with trio.CancelScope() as scope:
            try:
                async with open_websocket(
                    target, extra_headers=list(self._headers), message_queue_size=16
                ) as connection:
                    task_status.started((connection, scope))
                    started = True
                    await trio.sleep_forever()
            except Exception:
                if not started:
                    raise
                # The connection broke; its reader sees it closed and reconnects.

    def _target(self) -> str:
        query = [(k, v) for k, v in parse_qsl(self._parts.query) if k != "from_seq"]
        if self._next_seq is not None:
            query.append(("from_seq", str(self._next_seq)))
        return urlunsplit(self._parts._replace(query=urlencode(query)))

    async def _hang_up(self) -> None:
        scope, self._hang_up_scope = self._hang_up_scope, None
        self._connection = None
        if scope is not None:
            scope.cancel()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Close the connection; iteration ends."""
        self._done = True
        await self._hang_up()


@asynccontextmanager
async def open_event_stream(
    url: str,
    token: str | None = None,
    from_seq: int | None = None,
    *,
    retry_for: float = 30.0,
    initial_backoff: float = 0.05,
    max_backoff: float = 2.0,
) -> AsyncIterator[RemoteEventStream]:
    """Stream events from a WebSocket event server (``treadle run --ws``, :class:`WebSocketSink`).

    It connects on entry (retrying as below), so once inside the block the stream sees every
    event the server handles from then on.

    ``async with open_event_stream("ws://127.0.0.1:8765/sessions/s1/events") as events:
    async for event in events: ...`` yields :class:`Event` objects.

    Args:
        url: ``ws://host:port/events`` (every session) or ``ws://host:port/sessions/{id}/events``.
        token: Sent as ``Authorization: Bearer <token>`` when the server requires one.
        from_seq: On a session URL, start with the event of this ``seq`` (replayed if the server
            still holds it); by default the stream starts with the next live event.
        retry_for: How long (seconds) to keep trying to connect before giving up.
        initial_backoff: The first wait between connection attempts; it doubles per attempt.
        max_backoff: The longest wait between connection attempts.

    Raises:
        EventStreamError: The server refused the stream (401, 404, 400) or stayed unreachable
            for ``retry_for`` seconds.
    """
    try:
        async with trio.open_nursery() as nursery:
            stream = RemoteEventStream(
                nursery,
                url,
                token=token,
                from_seq=from_seq,
                retry_for=retry_for,
                initial_backoff=initial_backoff,
                max_backoff=max_backoff,
            )
            try:
                # Connected on entry, so a refused or unreachable server fails the ``async with``.
                await stream._connect()
                yield stream
            finally:
                await stream.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery wraps what the block (or the connection) raised: hand one error over as it is.
        raise single_error(group) from None
