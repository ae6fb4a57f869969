"""The :class:`Sink` protocol every event sink implements, and :class:`SinkError`."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, runtime_checkable

from ..actors.errors import TreadleError
from ..runtime.events.sink_calls import sink_name
from ..runtime.events.types import Event

__all__ = ["Sink", "SinkError", "sink_name"]


@runtime_checkable
class Sink(Protocol):
    """Where the event bus delivers events; each sink is run by its own supervised actor.

    ``handle`` is called once per event, in publication order, by that actor only, never from two
    threads at once. A plain method runs in the sink's own worker thread, so it may block; an async
    one runs on the Trio thread. A plain ``handle`` that is quick and must run on the Trio thread
    (it calls Trio) is marked with a class attribute ``inline = True``; it may then return an
    awaitable. If ``handle`` raises, or takes longer than ``handle_timeout`` (an optional attribute;
    default the bus's, 10 s), the event is counted as an error and skipped, and the sink is restarted
    after a backoff; events published meanwhile wait in its buffer.

    A sink may also define ``open()`` and ``close()`` (plain or async): ``open`` is called once
    before the first event, ``close`` once when the bus closes or the sink is detached. A sink that
    serves clients (:class:`~treadle.sinks.websocket.WebSocketSink`) defines ``async def
    serve(*, task_status)``: the sink's actor starts it after ``open`` and runs it beside the
    deliveries (a crash of either restarts both); the bus is running once every server has
    started (or failed to), and such a sink is closed while its server still runs, then the
    server is cancelled.
    """

    @property
    def name(self) -> str:
        """How health reports and diagnostics name this sink."""
        ...

    def handle(self, event: Event) -> Awaitable[None] | None:
        """Deliver one event."""
        ...


class SinkError(TreadleError):
    """A sink could not deliver an event (its target went away); the bus restarts the sink."""

    def __init__(self, sink: str, message: str) -> None:
        self.sink = sink
        super().__init__(f"sink {sink!r}: {message}")
