"""Compile-time checks of a graph definition, each pass iterative and O(V+E).

Node lists in errors (unreachable, no path to END) are sorted by name, so they do not depend on the
order the graph was built in; a reported cycle follows edge insertion order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence

from ..errors import (
    CycleDetected,
    DuplicateEdge,
    DuplicateNode,
    EdgeFromEnd,
    EdgeToStart,
    MissingEntry,
    NoPathToEnd,
    ReservedNodeName,
    UnknownNode,
    UnreachableNodes,
)
from .builder import END, START, ConditionalEdge, InvalidJoin, JoinEdge, NodeSpec, _join_label


def validate_graph(
    nodes: Sequence[NodeSpec],
    edges: Sequence[tuple[str, str]],
    joins: Sequence[JoinEdge],
    conditionals: Sequence[ConditionalEdge],
) -> None:
    """Raise the first problem found, checking in a fixed order (see ``GraphBuilder.compile``).

    Raises:
        GraphCompileError: a subclass naming the node or edge to fix.
    """
    names = _check_names(nodes)
    _check_duplicate_edges(edges, joins)
    _check_known(names, edges, joins, conditionals)
    _check_start_end(edges, joins, conditionals)
    if not any(src == START for src, _ in edges) and not any(
        c.source == START for c in conditionals
    ):
        raise MissingEntry()
    unconditional = _adjacency(names, _unconditional_pairs(edges, joins))
    _check_acyclic(names, unconditional)
    if all(c.path_map is not None for c in conditionals):
        declared = [(c.source, t) for c in conditionals for t in c.path_map or ()]
        pairs = [*_unconditional_pairs(edges, joins), *declared]
        _check_reachability(names, pairs)


def _check_names(nodes: Sequence[NodeSpec]) -> list[str]:
    for spec in nodes:
        raw: object = spec.name
        if not isinstance(raw, str) or not raw or raw in (START, END):
            raise ReservedNodeName(raw if isinstance(raw, str) else repr(raw))
    seen: set[str] = set()
    for spec in nodes:
        if spec.name in seen:
            raise DuplicateNode(spec.name)
        seen.add(spec.name)
    return [spec.name for spec in nodes]


def _check_duplicate_edges(edges: Sequence[tuple[str, str]], joins: Sequence[JoinEdge]) -> None:
    seen_edges: set[tuple[str, str]] = set()
    for edge in edges:
        if edge in seen_edges:
            raise DuplicateEdge(*edge)
        seen_edges.add(edge)
    seen_joins: set[tuple[frozenset[str], str]] = set()
    for join in joins:
        sources = frozenset(join.sources)
        if len(sources) != len(join.sources):
            twice = next(s for s in join.sources if join.sources.count(s) > 1)
            raise DuplicateEdge(twice, join.target)
        if (sources, join.target) in seen_joins:
            raise DuplicateEdge(_join_label(join.sources), join.target)
        seen_joins.add((sources, join.target))


def _check_known(
    names: Sequence[str],
    edges: Sequence[tuple[str, str]],
    joins: Sequence[JoinEdge],
    conditionals: Sequence[ConditionalEdge],
) -> None:
    known = {START, END, *names}
    for src, dst in edges:
        for name in (src, dst):
            if name not in known:
                raise UnknownNode(name, where=f"edge {src!r} -> {dst!r}")
    for join in joins:
        for name in (*join.sources, join.target):
            if name not in known:
                where = f"join edge {_join_label(join.sources)} -> {join.target!r}"
                raise UnknownNode(name, where=where)
    for cond in conditionals:
        if cond.source not in known:
            raise UnknownNode(cond.source, where="add_conditional_edges source")
        for target in cond.path_map or ():
            if target not in known:
                where = f"path_map of the conditional edge from {cond.source!r}"
                raise UnknownNode(target, where=where)


def _check_start_end(
    edges: Sequence[tuple[str, str]],
    joins: Sequence[JoinEdge],
    conditionals: Sequence[ConditionalEdge],
) -> None:
    for src, dst in edges:
        if src == END:
            raise EdgeFromEnd(dst)
        if dst == START:
            raise EdgeToStart(src)
    for join in joins:
        if END in join.sources:
            raise EdgeFromEnd(join.target)
        if START in join.sources:
            raise InvalidJoin(join.sources, join.target)
        if join.target == START:
            raise EdgeToStart(_join_label(join.sources))
    for cond in conditionals:
        if cond.source == END:
            targets = cond.path_map or ()
            raise EdgeFromEnd(targets[0] if targets else "<conditional edge>")
        if START in (cond.path_map or ()):
            raise EdgeToStart(cond.source)


def _unconditional_pairs(
    edges: Sequence[tuple[str, str]], joins: Sequence[JoinEdge]
) -> Iterator[tuple[str, str]]:
    yield from edges
    for join in joins:
        for src in join.sources:
            yield (src, join.target)


def _adjacency(names: Sequence[str], pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    adjacency: dict[str, list[str]] = {START: [], END: []}
    for name in names:
        adjacency[name] = []
    for src, dst in pairs:
        adjacency[src].append(dst)
    return adjacency


def _check_acyclic(names: Sequence[str], adjacency: dict[str, list[str]]) -> None:
    """Three-colour DFS with an explicit stack; reports the first back edge found as a path."""
    done: set[str] = set()
    for root in (START, *names):
        if root in done:
            continue
        path = [root]
        on_path = {root: 0}  # node -> index in path
        stack = [iter(adjacency[root])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                finished = path.pop()
                del on_path[finished]
                done.add(finished)
            elif nxt in on_path:
                raise CycleDetected([*path[on_path[nxt] :], nxt])
            elif nxt not in done:
                on_path[nxt] = len(path)
                path.append(nxt)
                stack.append(iter(adjacency[nxt]))


def _check_reachability(names: Sequence[str], pairs: Sequence[tuple[str, str]]) -> None:
    forward = _adjacency(names, pairs)
    reached = _bfs(START, forward)
    unreachable = sorted(n for n in names if n not in reached)
    if unreachable:
        raise UnreachableNodes(unreachable)
    backward = _adjacency(names, ((dst, src) for src, dst in pairs))
    reaches_end = _bfs(END, backward)
    stuck = sorted(n for n in names if n not in reaches_end)
    if stuck:
        raise NoPathToEnd(stuck)


def _bfs(root: str, adjacency: dict[str, list[str]]) -> set[str]:
    seen = {root}
    queue = deque([root])
    while queue:
        for nxt in adjacency[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen
