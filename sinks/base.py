"""The :class:`Sink` protocol every event sink implements, and :class:`SinkError`."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, runtime_checkable

from ..actors.errors import TreadleError
from ..runtime.events import Event

__all__ = ["Sink", "SinkError", "sink_name"]


@runtime_checkable
class Sink(Protocol):
    """Where the event bus delivers events; each sink is run by its own supervised actor.

    ``handle`` is called once per event, in publication order, by that actor only. It may be a
    plain method (it then runs on the Trio thread, so keep it quick: a slow blocking sink should
    be async and use ``trio.to_thread``) or return an awaitable. If it raises, the event is counted
    as an error and skipped, and the sink is restarted after a backoff; events published meanwhile
    wait in its buffer.

    A sink may also define ``open()`` and ``close()`` (plain or async): ``open`` is called once
    before the first event, ``close`` once when the bus closes or the sink is detached.
    """

    @property
    def name(self) -> str:
        """How health reports and diagnostics name this sink."""
        ...

    def handle(self, event: Event) -> Awaitable[None] | None:
        """Deliver one event."""
        ...


def sink_name(sink: object) -> str:
    """The sink's ``name``, or its class name when it has none."""
    name = getattr(sink, "name", None)
    return name if isinstance(name, str) and name else type(sink).__name__


class SinkError(TreadleError):
    """A sink could not deliver an event (its target went away); the bus restarts the sink."""

    def __init__(self, sink: str, message: str) -> None:
        self.sink = sink
        super().__init__(f"sink {sink!r}: {message}")
