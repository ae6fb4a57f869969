"""The graph hash: independent of insertion order, sensitive to every change of definition."""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from treadle.runtime.graph.builder import END, START, GraphBuilder, RetryPolicy


async def node(snapshot: Any, ctx: Any) -> None:
    return None


def sync_node(snapshot: Any, ctx: Any) -> None:
    return None


def route(snapshot: Any) -> str:
    return END


def other_route(snapshot: Any) -> str:
    return "b"


class LabelledReducer:
    """A stand-in custom reducer: only ``definition_label`` matters to the hash."""

    def __init__(self, label: str) -> None:
        self.definition_label = label

    def apply(self, current: Any, update: Any) -> Any:
        return update


Op = Callable[[GraphBuilder], object]

# The definition below, one builder call per entry; any order of these calls is the same graph.
BASE_OPS: list[Op] = [
    lambda b: b.add_node("a", node),
    lambda b: b.add_node("b", sync_node, thread=True, timeout=5.0),
    lambda b: b.add_node("c", node, retry=RetryPolicy(max_attempts=3)),
    lambda b: b.add_node("d", node),
    lambda b: b.add_edge(START, "a"),
    lambda b: b.add_edge("a", "b"),
    lambda b: b.add_edge("a", "c"),
    lambda b: b.add_edge(["b", "c"], "d"),
    lambda b: b.add_edge("d", END),
    lambda b: b.add_conditional_edges("a", route, ["d", END]),
]


def build(ops: list[Op]) -> GraphBuilder:
    builder = GraphBuilder()
    for op in ops:
        op(builder)
    return builder


def graph_hash(builder: GraphBuilder) -> str:
    return builder.compile().graph.graph_metadata().graph_hash


def base_hash() -> str:
    return graph_hash(build(BASE_OPS))


def test_hash_is_sha256_hex_and_stable() -> None:
    first = base_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert base_hash() == first


@settings(max_examples=60, deadline=None)
@given(st.permutations(BASE_OPS))
def test_hash_is_independent_of_insertion_order(ops: list[Op]) -> None:
    assert graph_hash(build(ops)) == base_hash()


def test_join_source_order_and_path_map_order_do_not_matter() -> None:
    swapped = [*BASE_OPS[:7], lambda b: b.add_edge(["c", "b"], "d"), *BASE_OPS[8:9]]
    swapped.append(lambda b: b.add_conditional_edges("a", route, [END, "d"]))
    assert graph_hash(build(swapped)) == base_hash()


def test_router_identity_is_not_hashed() -> None:
    ops = [*BASE_OPS[:-1], lambda b: b.add_conditional_edges("a", other_route, ["d", END])]
    assert graph_hash(build(ops)) == base_hash()


CHANGES: dict[str, list[Op]] = {
    "extra node": [lambda b: b.add_node("e", node).add_edge("a", "e").add_edge("e", END)],
    "extra edge": [lambda b: b.add_edge("b", END)],
    "extra join": [lambda b: b.add_edge(["a", "d"], END)],
    "extra conditional": [lambda b: b.add_conditional_edges("b", route, [END])],
    "undeclared conditional": [lambda b: b.add_conditional_edges("a", route)],
    "repeated conditional": [lambda b: b.add_conditional_edges("a", route, ["d", END])],
    "reducer label": [lambda b: b.with_reducer("extra", LabelledReducer("custom-merge"))],
}

REPLACEMENTS: dict[str, tuple[int, Op]] = {
    "node renamed": (3, lambda b: b.add_node("d2", node).add_edge("d2", END)),
    "node kind": (0, lambda b: b.add_node("a", sync_node)),
    "node thread": (1, lambda b: b.add_node("b", sync_node, timeout=5.0)),
    "node timeout": (1, lambda b: b.add_node("b", sync_node, thread=True, timeout=6.0)),
    "node retry": (2, lambda b: b.add_node("c", node, retry=RetryPolicy(max_attempts=4))),
    "retry_on": (
        2,
        lambda b: b.add_node("c", node, retry=RetryPolicy(max_attempts=3, retry_on=OSError)),
    ),
    "edge source": (6, lambda b: b.add_edge("b", "c")),
    "join target": (7, lambda b: b.add_edge(["b", "c"], END).add_edge("a", "d")),
    "conditional target": (9, lambda b: b.add_conditional_edges("a", route, ["d"])),
    "conditional source": (9, lambda b: b.add_conditional_edges("b", route, ["d", END])),
    "conditional mapping": (9, lambda b: b.add_conditional_edges("a", route, {"x": "d"})),
}


def test_every_definition_change_changes_the_hash() -> None:
    seen = {base_hash(): "base"}
    variants: dict[str, list[Op]] = {name: [*BASE_OPS, *ops] for name, ops in CHANGES.items()}
    for name, (index, op) in REPLACEMENTS.items():
        ops = list(BASE_OPS)
        ops[index] = op
        variants[name] = ops
    for name, ops in variants.items():
        if name == "node renamed":
            # d's edges must follow the rename.
            ops[7] = lambda b: b.add_edge(["b", "c"], "d2")
            ops[8] = lambda b: None
            ops[9] = lambda b: b.add_conditional_edges("a", route, ["d2", END])
        h = graph_hash(build(ops))
        assert h not in seen, f"{name} hashes like {seen.get(h)}"
        seen[h] = name


def test_reducer_labels_enter_the_hash_by_label_only() -> None:
    one = [*BASE_OPS, lambda b: b.with_reducer("extra", LabelledReducer("x"))]
    same_label = [*BASE_OPS, lambda b: b.with_reducer("extra", LabelledReducer("x"))]
    assert graph_hash(build(one)) == graph_hash(build(same_label))


def odd_names() -> GraphBuilder:
    builder = GraphBuilder().add_edge(START, "é")
    for name in ("é", '"q"', "名", "a b", "\\"):
        builder.add_node(name, node)
    builder.add_edge("é", '"q"').add_edge("é", "名").add_edge(['"q"', "名"], "a b")
    return builder.add_edge("a b", "\\").add_edge("\\", END)


def test_hashes_of_stored_definitions_never_change() -> None:
    # Stored checkpoints carry the hash of the graph that wrote them, and a runner refuses a
    # session whose hash differs: the text hashed must stay byte for byte what it was.
    assert base_hash() == "71a84ca37e0a02cc32b0cb7899b2f723812fb6221547fae3c7335241976e5d22"
    assert (
        graph_hash(odd_names())
        == "ee22a88a68c61fddeed4a5110bd5acabf25c91ea9e3a5c7bb3c73bea8b3c8693"
    )


def test_hashing_a_wide_graph_leaves_nothing_per_node_for_the_collector() -> None:
    # A graph is hashed inside its first run with a checkpointer, beside thousands of node actors
    # that every full garbage collection visits.
    builder = GraphBuilder().add_node("join", node).add_edge("join", END)
    names = [f"w{i}" for i in range(5000)]
    for name in names:
        builder.add_node(name, node).add_edge(START, name)
    graph = builder.add_edge(names, "join").compile().graph
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        graph.graph_metadata()
    finally:
        gc.callbacks.remove(count)
    assert collections == []
