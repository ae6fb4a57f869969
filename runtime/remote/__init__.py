"""Remote event streams: the client side of the WebSocket sink."""

from .connection import open_websocket

__all__ = ["open_websocket"]
