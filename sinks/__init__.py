"""Event sinks: where the event bus delivers what a run says."""

from .base import Sink, SinkError, sink_name
from .channel import ChannelSink
from .jsonl import JsonLinesSink
from .memory import MemorySink
from .stdout import StdOutSink, format_event
from .websocket import WebSocketError, WebSocketSink, WebSocketStatistics

__all__ = [
    "ChannelSink",
    "JsonLinesSink",
    "MemorySink",
    "Sink",
    "SinkError",
    "StdOutSink",
    "WebSocketError",
    "WebSocketSink",
    "WebSocketStatistics",
    "format_event",
    "sink_name",
]
