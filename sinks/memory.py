"""An in-memory sink: keeps events in a list, for tests and small tools."""

from __future__ import annotations

from collections import deque

from ..runtime.events.types import Event

__all__ = ["MemorySink"]


class MemorySink:
    """Keeps every event it receives, in order.

    Args:
        name: The sink's name in health reports.
        max_events: Keep only the newest ``max_events`` (``None`` keeps all, which grows without
            bound on a long-lived bus).
    """

    inline = True
    """``handle`` runs on the Trio thread: it never blocks (see :class:`~treadle.sinks.Sink`)."""

    def __init__(self, *, name: str = "memory", max_events: int | None = None) -> None:
        if max_events is not None and max_events < 1:
            raise ValueError(f"max_events must be at least 1 or None, not {max_events}")
        self.name = name
        self._events: list[Event] | deque[Event] = (
            [] if max_events is None else deque(maxlen=max_events)
        )

    def handle(self, event: Event) -> None:
        self._events.append(event)

    def snapshot(self) -> list[Event]:
        """A copy of the events received so far, oldest first."""
        return list(self._events)

    def clear(self) -> None:
        """Forget every event received so far."""
        self._events.clear()

    def __len__(self) -> int:
        return len(self._events)

    def __repr__(self) -> str:
        return f"MemorySink(name={self.name!r}, events={len(self._events)})"
