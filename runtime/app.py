"""The compiled, runnable graph: :class:`App`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .graph import CompiledGraph


class App:
    """A compiled graph; run it with :class:`AppRunner` or the convenience methods."""

    def __init__(self, graph: CompiledGraph) -> None:
        self.graph = graph
