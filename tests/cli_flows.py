"""Graphs the command-line tests name as ``MODULE:ATTR`` (the tests put this directory on
``PYTHONPATH``)."""

from __future__ import annotations

from typing import Any

from apps import counter_app

from treadle import END, START, GraphBuilder, NodePartial


async def boom(snapshot: Any, ctx: Any) -> NodePartial:
    raise RuntimeError("the model said no")


def counter_builder_fn() -> GraphBuilder:
    async def tick(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial(extra={"n": snapshot.extra.get("n", 0) + 1})

    return GraphBuilder().add_node("tick", tick).add_edge(START, "tick").add_edge("tick", END)


def build_counter() -> Any:
    """A factory: ``treadle run`` calls it and runs what it returns."""
    return counter_app(limit=3, pause=0)


counter = counter_app(limit=3, pause=0)
counter_builder = counter_builder_fn()
slow = counter_app(limit=40, pause=0.05)
failing = (
    GraphBuilder().add_node("boom", boom).add_edge(START, "boom").add_edge("boom", END).compile()
)
not_a_graph = 42
