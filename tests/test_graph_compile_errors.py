"""Every GraphCompileError variant, its exact message and the order the checks run in."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from treadle.runtime.errors import (
    CycleDetected,
    DuplicateEdge,
    DuplicateNode,
    EdgeFromEnd,
    EdgeToStart,
    GraphCompileError,
    MissingEntry,
    NoPathToEnd,
    ReservedNodeName,
    UnknownNode,
    UnreachableNodes,
)
from treadle.runtime.graph.builder import END, START, GraphBuilder, InvalidJoin


async def node(snapshot: Any, ctx: Any) -> None:
    return None


def route(snapshot: Any) -> str:
    return END


def chain(*names: str) -> GraphBuilder:
    """START -> names[0] -> ... -> names[-1] -> END, every name registered."""
    builder = GraphBuilder()
    for name in names:
        builder.add_node(name, node)
    path = [START, *names, END]
    for src, dst in itertools.pairwise(path):
        builder.add_edge(src, dst)
    return builder


def compile_error(builder: GraphBuilder) -> GraphCompileError:
    with pytest.raises(GraphCompileError) as info:
        builder.compile()
    return info.value


@pytest.mark.parametrize(
    ("name", "shown"), [("", "''"), (START, repr(START)), (END, repr(END)), (7, "'7'")]
)
def test_reserved_node_name(name: Any, shown: str) -> None:
    err = compile_error(chain("a").add_node(name, node))
    assert type(err) is ReservedNodeName
    assert str(err) == (
        f"node name {shown} is reserved or invalid: use a non-empty name other than START/END"
    )


def test_duplicate_node() -> None:
    err = compile_error(chain("a", "b").add_node("b", node).add_node("a", node))
    assert type(err) is DuplicateNode
    assert err.name == "b"
    assert str(err) == "node 'b' is added twice: node names must be unique"


def test_duplicate_edge() -> None:
    err = compile_error(chain("a", "b").add_edge("a", "b"))
    assert type(err) is DuplicateEdge
    assert (err.src, err.dst) == ("a", "b")
    assert str(err) == "edge 'a' -> 'b' is added twice"


def test_duplicate_join_edges() -> None:
    base = chain("a", "b", "c")
    err = compile_error(base.add_edge(["a", "b"], "c").add_edge(["b", "a"], "c"))
    assert type(err) is DuplicateEdge
    assert (err.src, err.dst) == ("[b, a]", "c")
    assert str(err) == "edge '[b, a]' -> 'c' is added twice"
    err = compile_error(chain("a", "b", "c").add_edge(["a", "b", "a"], "c"))
    assert str(err) == "edge 'a' -> 'c' is added twice"


@pytest.mark.parametrize(
    ("mutate", "name", "where"),
    [
        (lambda b: b.add_edge("a", "ghost"), "ghost", "edge 'a' -> 'ghost'"),
        (lambda b: b.add_edge("ghost", "a"), "ghost", "edge 'ghost' -> 'a'"),
        (lambda b: b.add_edge(["a", "ghost"], END), "ghost", "join edge [a, ghost] -> '__end__'"),
        (
            lambda b: b.add_edge(["a", START], "ghost"),
            "ghost",
            "join edge [a, __start__] -> 'ghost'",
        ),
        (
            lambda b: b.add_conditional_edges("ghost", route),
            "ghost",
            "add_conditional_edges source",
        ),
        (
            lambda b: b.add_conditional_edges("a", route, ["a", "ghost"]),
            "ghost",
            "path_map of the conditional edge from 'a'",
        ),
        (
            lambda b: b.add_conditional_edges("a", route, {"x": "ghost"}),
            "ghost",
            "path_map of the conditional edge from 'a'",
        ),
    ],
)
def test_unknown_node(mutate: Any, name: str, where: str) -> None:
    err = compile_error(mutate(chain("a")))
    assert type(err) is UnknownNode
    assert err.name == name
    assert str(err) == f"unknown node {name!r} (used in {where}): add it with add_node() first"


def test_edge_from_end() -> None:
    err = compile_error(chain("a").add_edge(END, "a"))
    assert type(err) is EdgeFromEnd
    assert err.dst == "a"
    assert str(err) == "edge END -> 'a' is invalid: END has no outgoing edges"
    err = compile_error(chain("a", "b").add_edge([END, "a"], "b"))
    assert str(err) == "edge END -> 'b' is invalid: END has no outgoing edges"
    err = compile_error(chain("a").add_conditional_edges(END, route, ["a"]))
    assert str(err) == "edge END -> 'a' is invalid: END has no outgoing edges"
    err = compile_error(chain("a").add_conditional_edges(END, route))
    assert str(err) == "edge END -> '<conditional edge>' is invalid: END has no outgoing edges"


def test_edge_to_start() -> None:
    err = compile_error(chain("a").add_edge("a", START))
    assert type(err) is EdgeToStart
    assert err.src == "a"
    assert str(err) == "edge 'a' -> START is invalid: START has no incoming edges"
    err = compile_error(chain("a").add_conditional_edges("a", route, [START]))
    assert str(err) == "edge 'a' -> START is invalid: START has no incoming edges"
    err = compile_error(chain("a", "b").add_edge(["a", "b"], START))
    assert str(err) == "edge '[a, b]' -> START is invalid: START has no incoming edges"


def test_start_in_a_join_is_invalid() -> None:
    err = compile_error(chain("a", "b").add_edge([START, "a"], "b"))
    assert type(err) is InvalidJoin
    assert err.sources == (START, "a")
    assert err.target == "b"
    assert str(err) == (
        "join [__start__, a] -> 'b' is invalid: START cannot be a join source; "
        "add_edge(START, ...) to the other sources instead"
    )


def test_missing_entry() -> None:
    for builder in (GraphBuilder(), GraphBuilder().add_node("a", node).add_edge("a", END)):
        err = compile_error(builder)
        assert type(err) is MissingEntry
        assert str(err) == (
            "the graph has no entry: add an edge from START (add_edge(START, 'node'))"
        )


def test_conditional_entry_is_an_entry() -> None:
    builder = GraphBuilder().add_node("a", node).add_edge("a", END)
    builder.add_conditional_edges(START, route, ["a", END])
    assert builder.compile().graph.conditional_by_source[START][0].path_map == ("a", END)


@pytest.mark.parametrize(
    ("edges", "path"),
    [
        ([("a", "a")], ("a", "a")),
        ([("b", "a")], ("a", "b", "a")),
        ([("c", "b")], ("b", "c", "b")),
        ([("c", "a")], ("a", "b", "c", "a")),
    ],
)
def test_cycle_detected(edges: list[tuple[str, str]], path: tuple[str, ...]) -> None:
    builder = chain("a", "b", "c")
    for src, dst in edges:
        builder.add_edge(src, dst)
    err = compile_error(builder)
    assert type(err) is CycleDetected
    assert err.path == path
    assert str(err) == (
        "unconditional edges form a cycle: "
        + " -> ".join(path)
        + "; loop through a conditional edge or a frontier command instead"
    )


def test_cycle_through_a_join_edge() -> None:
    err = compile_error(chain("a", "b", "c").add_edge(["c", "b"], "a"))
    assert type(err) is CycleDetected
    assert err.path == ("a", "b", "c", "a")


def test_loop_through_a_conditional_edge_is_fine() -> None:
    builder = chain("a", "b").add_conditional_edges("b", route, ["a", END])
    assert list(builder.compile().graph.nodes) == ["a", "b"]


def test_unreachable_nodes_sorted() -> None:
    builder = chain("a").add_node("z", node).add_node("m", node)
    builder.add_edge("z", END).add_edge("m", "z")
    err = compile_error(builder)
    assert type(err) is UnreachableNodes
    assert err.names == ("m", "z")
    assert str(err) == (
        "nodes not reachable from START: m, z; add edges to them or declare them in a path_map"
    )


def test_no_path_to_end_sorted() -> None:
    builder = GraphBuilder().add_node("b", node).add_node("a", node)
    builder.add_edge(START, "b").add_edge("b", "a")
    err = compile_error(builder)
    assert type(err) is NoPathToEnd
    assert err.names == ("a", "b")
    assert str(err) == (
        "nodes with no path to END: a, b; add an edge towards END or declare it in a path_map"
    )


def test_reachability_uses_declared_path_map_targets() -> None:
    builder = chain("a").add_node("b", node).add_edge("b", END)
    assert type(compile_error(builder)) is UnreachableNodes
    builder.add_conditional_edges("a", route, ["b"])
    assert list(builder.compile().graph.nodes) == ["a", "b"]


def test_conditional_from_start_reaches_its_targets() -> None:
    builder = GraphBuilder().add_node("a", node).add_node("b", node)
    builder.add_edge("a", END).add_conditional_edges(START, route, {"x": "a", "y": "b"})
    assert type(compile_error(builder)) is NoPathToEnd
    builder.add_edge("b", END)
    builder.compile()


def test_path_to_end_through_a_join_and_a_path_map() -> None:
    builder = chain("a").add_node("b", node).add_node("c", node)
    builder.add_edge("a", "b").add_edge(["a", "b"], "c")
    err = compile_error(builder)
    assert type(err) is NoPathToEnd
    assert err.names == ("b", "c")
    builder.add_conditional_edges("c", route, [END])
    builder.compile()


def test_reachability_skipped_when_a_conditional_edge_has_no_path_map() -> None:
    builder = chain("a").add_node("island", node)
    builder.add_conditional_edges("a", route)
    builder.compile()
    builder.add_conditional_edges("a", route, ["a"])  # one undeclared router is enough to skip
    builder.compile()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        # names before duplicates before unknown nodes before START/END misuse...
        (lambda b: b.add_node("a", node).add_node("", node), ReservedNodeName),
        (lambda b: b.add_node("a", node).add_edge("x", "y"), DuplicateNode),
        (lambda b: b.add_edge("x", "y").add_edge("x", "y"), DuplicateEdge),
        (lambda b: b.add_edge(END, "x").add_edge("a", "a"), UnknownNode),
        (lambda b: b.add_edge("a", START).add_edge("a", "a"), EdgeToStart),
        # ...before cycles before reachability before path to END.
        (lambda b: b.add_edge("a", "a").add_node("island", node), CycleDetected),
        (
            lambda b: b.add_node("island", node).add_node("sink", node).add_edge("a", "sink"),
            UnreachableNodes,
        ),
    ],
)
def test_check_order(mutate: Any, expected: type[GraphCompileError]) -> None:
    err = compile_error(mutate(chain("a")))
    assert type(err) is expected, err


def test_missing_entry_comes_before_cycles() -> None:
    builder = GraphBuilder().add_node("a", node).add_edge("a", "a")
    assert type(compile_error(builder)) is MissingEntry


def test_messages_are_one_sentence() -> None:
    err = compile_error(chain("a").add_edge("a", "ghost"))
    assert re.fullmatch(r"[^\n]+", str(err))
