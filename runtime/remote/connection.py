"""One client WebSocket connection (trio-websocket) whose socket is closed however it ends."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import trio
from trio_websocket import ConnectionRejected, WebSocketConnection, wrap_client_stream

__all__ = ["open_websocket", "single_error"]

# How long the closing handshake may take when the block is left.
_CLOSE_TIMEOUT = 1.0


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    message_queue_size: int = 1,
    connect_timeout: float = 10.0,
    receive_buffer_size: int = 65_536,
) -> AsyncIterator[WebSocketConnection]:
    """Connect to ``url`` (``ws://`` or ``wss://``) and yield the connection.

    Like ``trio_websocket.open_websocket_url``, except that this side owns the TCP stream and
    closes it on exit: trio-websocket's client leaves its socket open when the server closes
    first (as servers should), until the garbage collector finds it. It also reads the socket
    ``receive_buffer_size`` bytes at a time (trio-websocket's default is 4 KiB), so a fast
    stream of small frames takes fewer reads.

    Raises:
        ConnectionRejected: The server answered the handshake with an HTTP error.
        trio_websocket.HandshakeError, OSError: The server could not be reached in time.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or parts.hostname is None:
        raise ValueError(f"a WebSocket URL looks like ws://host:port/path, not {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    with trio.fail_after(connect_timeout):
        tcp = await trio.open_tcp_stream(parts.hostname, port)
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
    try:
        if secure:
            stream = trio.SSLStream(
                tcp, ssl.create_default_context(), server_hostname=parts.hostname
            )
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(connect_timeout):
                    connection = await wrap_client_stream(
                        nursery,
                        stream,
                        parts.hostname,
                        resource,
                        extra_headers=extra_headers,
                        message_queue_size=message_queue_size,
                        receive_buffer_size=receive_buffer_size,
                    )
                try:
                    yield connection
                finally:
                    with trio.move_on_after(_CLOSE_TIMEOUT) as closing:
                        closing.shield = True
                        await connection.aclose()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The reader task raises a rejected handshake, and the body's own error comes
            # wrapped by the nursery: hand a single error over as itself.
            rejected = _first(group, ConnectionRejected)
            if rejected is not None:
                raise rejected from None
            raise single_error(group) from None
    finally:
        await trio.aclose_forcefully(stream)


def _first(group: BaseExceptionGroup, kind: type[BaseException]) -> BaseException | None:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            found = _first(error, kind)
            if found is not None:
                return found
        elif isinstance(error, kind):
            return error
    return None


def single_error(group: BaseExceptionGroup) -> BaseException:
    """The one exception a nursery wrapped (the group itself when it holds several)."""
    while len(group.exceptions) == 1:
        inner = group.exceptions[0]
        if not isinstance(inner, BaseExceptionGroup):
            return inner
        group = inner
    return group
