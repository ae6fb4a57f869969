"""What a picture shows: the nodes, edges, joins and statuses of a graph or workflow, in order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from ..graph.builder import END, START, CompiledGraph, GraphBuilder

STATUSES: Final = ("pending", "running", "completed", "failed", "skipped", "retrying")
"""Status names a node can be drawn with (``TaskStatus`` values; SPEC colours the first four)."""


@attrs.frozen
class Conditional:
    """A dashed edge from ``source``: to a declared ``target``, or (``target=None``) to any node."""

    source: str
    target: str | None
    label: str


@attrs.frozen
class Join:
    """``target`` waits for every one of ``sources``."""

    sources: tuple[str, ...]
    target: str


@attrs.frozen
class Diagram:
    """A graph reduced to what is drawn, every part sorted so the same graph gives the same text.

    Node names exclude START and END; edges may name them.
    """

    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    conditionals: tuple[Conditional, ...]
    joins: tuple[Join, ...]
    statuses: Mapping[str, str]

    @property
    def edge_count(self) -> int:
        """How many lines Mermaid draws (a join is one line per source plus one to its target)."""
        joined = sum(len(j.sources) + 1 for j in self.joins)
        return len(self.edges) + len(self.conditionals) + joined


def describe(source: object, statuses: Mapping[str, object] | None = None) -> Diagram:
    """The :class:`Diagram` of an ``App``, a ``GraphBuilder`` (compiled first) or a ``Workflow``.

    A workflow's tasks are drawn with their current status unless ``statuses`` is given.

    Raises:
        TypeError: ``source`` is none of those.
        ValueError: ``statuses`` names a node the graph lacks, or a status that does not exist.
    """
    if isinstance(source, GraphBuilder):
        source = source.compile()
    graph = getattr(source, "graph", None)
    task_graph = getattr(source, "task_graph", None)
    if isinstance(graph, CompiledGraph):
        diagram = _from_graph(graph)
    elif callable(task_graph):
        tasks = task_graph()
        diagram = _from_tasks(tasks)
        if statuses is None:
            statuses = {task.name: task.status for task in tasks}
    else:
        raise TypeError(
            f"cannot draw a {type(source).__name__}: pass an App, a GraphBuilder or a Workflow"
        )
    return attrs.evolve(diagram, statuses=_check_statuses(diagram.nodes, statuses or {}))


def node_order(name: str) -> tuple[int, str]:
    """Sort key: START first, then node names, END last."""
    if name == START:
        return (0, "")
    if name == END:
        return (2, "")
    return (1, name)


def _from_graph(graph: CompiledGraph) -> Diagram:
    edges = {(src, dst) for src, targets in graph.edges.items() for dst in targets}
    conditionals: set[Conditional] = set()
    for edge in graph.conditional_edges:
        router = _router_name(edge.fn)
        if edge.path_map is None:
            conditionals.add(Conditional(edge.source, None, router))
        elif edge.mapping is not None:
            keys: dict[str, list[str]] = {}
            for key, target in edge.mapping:
                keys.setdefault(target, []).append(_value_label(key))
            for target in edge.path_map:
                label = ", ".join(sorted(keys.get(target) or [router]))
                conditionals.add(Conditional(edge.source, target, label))
        else:
            conditionals.update(Conditional(edge.source, t, router) for t in edge.path_map)
    joins = {Join(tuple(sorted(j.sources, key=node_order)), j.target) for j in graph.joins}
    return Diagram(
        nodes=tuple(sorted(graph.nodes)),
        edges=_sorted_pairs(edges),
        conditionals=tuple(sorted(conditionals, key=_conditional_key)),
        joins=tuple(sorted(joins, key=lambda j: (node_order(j.target), j.sources))),
        statuses={},
    )


def _from_tasks(tasks: Iterable[Any]) -> Diagram:
    # A task waits for all its dependencies: drawn as plain arrows, the way task DAGs are read.
    edges: set[tuple[str, str]] = set()
    depended_on: set[str] = set()
    names = []
    for task in tasks:
        names.append(task.name)
        depended_on.update(task.depends_on)
        edges.update((dep, task.name) for dep in task.depends_on)
        if not task.depends_on:
            edges.add((START, task.name))
    edges.update((name, END) for name in names if name not in depended_on)
    return Diagram(
        nodes=tuple(sorted(names)),
        edges=_sorted_pairs(edges),
        conditionals=(),
        joins=(),
        statuses={},
    )


def _check_statuses(nodes: Iterable[str], statuses: Mapping[str, object]) -> dict[str, str]:
    known = set(nodes)
    checked: dict[str, str] = {}
    for name, status in statuses.items():
        if name not in known:
            raise ValueError(f"statuses names {name!r}, which is not a node of this graph")
        value = getattr(status, "value", status)
        if not isinstance(value, str) or value.lower() not in STATUSES:
            raise ValueError(
                f"node {name!r} has status {status!r}; use one of {', '.join(STATUSES)}"
            )
        checked[name] = value.lower()
    return checked


def _value_label(key: object) -> str:
    """A router value as its edge label: a non-empty string as it is, anything else as its repr."""
    return key if isinstance(key, str) and key else repr(key)


def _router_name(fn: object) -> str:
    return str(getattr(fn, "__name__", None) or type(fn).__name__)


def _sorted_pairs(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs, key=lambda p: (node_order(p[0]), node_order(p[1]))))


def _conditional_key(edge: Conditional) -> tuple[object, ...]:
    target = (3, "") if edge.target is None else node_order(edge.target)
    return (node_order(edge.source), target, edge.label)
