"""Remote event streams: the client side of the WebSocket sink."""

from .client import EventStreamError, RemoteEventStream, open_event_stream
from .connection import open_websocket

__all__ = ["EventStreamError", "RemoteEventStream", "open_event_stream", "open_websocket"]
