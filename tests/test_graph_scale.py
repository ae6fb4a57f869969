"""Validation is linear and recursion-free on big graphs; random DAGs compile, back edges don't."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treadle.runtime.errors import CycleDetected
from treadle.runtime.graph.builder import END, START, GraphBuilder

N = 10_000


async def node(snapshot: Any, ctx: Any) -> None:
    return None


class CountingName(str):
    """A node name that counts how often it is hashed or compared: the work done per name."""

    hashes = 0
    compares = 0

    def __hash__(self) -> int:
        CountingName.hashes += 1
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        CountingName.compares += 1
        return str.__eq__(self, other)

    __ne__ = str.__ne__


def compile_work(shape: Callable[[list[str]], GraphBuilder], n: int) -> int:
    """Hashes plus comparisons of node names spent compiling ``shape`` over ``n`` counted names."""
    builder = shape([CountingName(f"n{i}") for i in range(n)])
    CountingName.hashes = CountingName.compares = 0
    try:
        builder.compile()
    except CycleDetected:
        pass
    return CountingName.hashes + CountingName.compares


def chain(names: list[str]) -> GraphBuilder:
    builder = GraphBuilder()
    for name in names:
        builder.add_node(name, node)
    for src, dst in zip([START, *names], [*names, END], strict=True):
        builder.add_edge(src, dst)
    return builder


def fan_out(names: list[str]) -> GraphBuilder:
    builder = GraphBuilder()
    for name in names:
        builder.add_node(name, node).add_edge(START, name).add_edge(name, END)
    return builder


def join(names: list[str]) -> GraphBuilder:
    builder = GraphBuilder().add_node("sink", node).add_edge("sink", END)
    for name in names:
        builder.add_node(name, node).add_edge(START, name)
    return builder.add_edge(names, "sink")


def cycle(names: list[str]) -> GraphBuilder:
    builder = GraphBuilder()
    for name in names:
        builder.add_node(name, node)
    builder.add_edge(START, names[0])
    for src, dst in zip(names, [*names[1:], names[0]], strict=True):
        builder.add_edge(src, dst)
    return builder


@pytest.mark.parametrize("shape", [chain, fan_out, join, cycle])
def test_compile_work_grows_linearly_with_the_graph(
    shape: Callable[[list[str]], GraphBuilder],
) -> None:
    # Four times the nodes, at most about four times the work: a pass that looked at every pair of
    # names would cost sixteen times as much.
    small, large = compile_work(shape, N // 4), compile_work(shape, N)
    assert small > 0
    assert large <= 4.5 * small


def test_deep_cycle_is_reported_without_recursion_error() -> None:
    names = [f"n{i}" for i in range(N)]
    with pytest.raises(CycleDetected) as info:
        cycle(names).compile()
    assert info.value.path == (*names, names[0])


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]], list[int]]:
    """A random DAG over nodes 0..n-1 (edges only go from lower to higher index) and a shuffled
    registration order for the nodes."""
    n = draw(st.integers(1, 25))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    order = draw(st.permutations(range(n)))
    return n, draw(st.permutations(edges)), list(order)


def build(n: int, edges: list[tuple[int, int]], order: list[int]) -> GraphBuilder:
    """Every node gets an edge from START and to END, so only the drawn edges can break it."""
    builder = GraphBuilder()
    for i in order:
        builder.add_node(f"v{i}", node).add_edge(START, f"v{i}").add_edge(f"v{i}", END)
    for src, dst in edges:
        builder.add_edge(f"v{src}", f"v{dst}")
    return builder


@settings(max_examples=150, deadline=None)
@given(dags())
def test_random_dags_compile(dag: tuple[int, list[tuple[int, int]], list[int]]) -> None:
    n, edges, order = dag
    graph = build(n, edges, order).compile().graph
    assert list(graph.nodes) == [f"v{i}" for i in order]
    assert graph.graph_metadata().edge_count == 2 * n + len(edges)


@settings(max_examples=150, deadline=None)
@given(dags(), st.data())
def test_one_back_edge_is_always_a_cycle(
    dag: tuple[int, list[tuple[int, int]], list[int]], data: st.DataObject
) -> None:
    n, edges, order = dag
    # A back edge j -> i closes a cycle exactly when j is reachable from i (or i == j).
    reach = {i: {i} for i in range(n)}
    for i in reversed(range(n)):  # successors have higher indices, so they are complete first
        for a, b in edges:
            if a == i:
                reach[i] |= reach[b]
    i, j = data.draw(st.sampled_from([(i, j) for i in range(n) for j in sorted(reach[i])]))
    builder = build(n, edges, order).add_edge(f"v{j}", f"v{i}")
    with pytest.raises(CycleDetected) as info:
        builder.compile()
    path = info.value.path
    all_edges = {(f"v{a}", f"v{b}") for a, b in edges} | {(f"v{j}", f"v{i}")}
    assert len(path) >= 2
    assert path[0] == path[-1]
    assert len(set(path[:-1])) == len(path) - 1  # a simple cycle
    assert all(step in all_edges for step in itertools.pairwise(path))


def test_routing_through_a_wide_join_hashes_each_source_a_bounded_number_of_times() -> None:
    from treadle.runtime.execution.frontier import route
    from treadle.runtime.graph.state import VersionedState

    width = 400
    names = [CountingName(f"w{i}") for i in range(width)]
    builder = GraphBuilder().add_node("join", node).add_edge("join", END)
    for name in names:
        builder.add_node(name, node).add_edge(START, name)
    builder.add_edge(names, "join")
    graph = builder.compile().graph
    snapshot = VersionedState().snapshot()

    CountingName.hashes = 0
    routing = route(graph, names, snapshot, (), {})
    assert routing.frontier == ("join",)
    # Linear: a few hashes per source. Hashing the join's whole sources tuple at every source
    # would cost width * width (160,000) here.
    assert CountingName.hashes <= 10 * width
