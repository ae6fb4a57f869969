"""Routing after a barrier: the next frontier, join edges, and the initial frontier of a session."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..errors import TreadleError
from ..graph.builder import END, START, CompiledGraph, ConditionalEdge, JoinEdge
from ..graph.partial import Append, FrontierCommand, Replace
from ..graph.state import StateSnapshot

log = logging.getLogger("treadle.routing")

JoinState = Mapping[str, tuple[str, ...]]


@attrs.frozen
class Routing:
    """The result of routing one step."""

    frontier: tuple[str, ...]
    join_state: JoinState
    unknown_targets: tuple[tuple[str, str], ...]  # (source node, unknown target)


def join_key(join: JoinEdge) -> str:
    """The stable name of a join in checkpoints: ``"a+b->c"``."""
    return "+".join(join.sources) + "->" + join.target


def route(
    graph: CompiledGraph,
    ran_nodes: Sequence[str],
    snapshot: StateSnapshot,
    commands: Iterable[tuple[str, FrontierCommand]],
    join_state: JoinState,
) -> Routing:
    """Compute the next frontier from the nodes that ran, in frontier order.

    For each ran node: its static edges (or its frontier command), then the joins it completes, then its
    conditional targets evaluated on the post-barrier ``snapshot`` (``Replace`` suppresses them).
    Unknown targets are dropped and reported; duplicates keep their first position.
    """
    by_node: dict[str, list[FrontierCommand]] = {}
    for node, command in commands:
        by_node.setdefault(node, []).append(command)

    nodes = graph.nodes
    # Join marks as sets while routing (a wide join is marked once per source), tuples in the result.
    marks: dict[JoinEdge, set[str]] = {}
    seen: set[str] = set()
    frontier: list[str] = []
    unknown: list[tuple[str, str]] = []

    for node in ran_nodes:
        targets, replaced = _static_targets(graph.edges.get(node, ()), by_node.get(node))
        for join in graph.joins_by_source.get(node, ()):
            if _mark_join(marks, join_state, join, node):
                targets.append(join.target)
        if not replaced:
            for edge in graph.conditional_by_source.get(node, ()):
                targets.extend(_conditional_targets(edge, snapshot))
        for target in targets:
            if not isinstance(target, str):
                log.warning("node %r routed to %r, which is not a node name; dropped", node, target)
                unknown.append((node, repr(target)))
                continue
            if target in seen:
                continue
            if target == END or target in nodes:
                seen.add(target)
                frontier.append(target)
            else:
                log.warning("node %r routed to unknown node %r; dropped", node, target)
                unknown.append((node, target))
    return Routing(tuple(frontier), _join_state(join_state, marks), tuple(unknown))


def initial_frontier(graph: CompiledGraph, snapshot: StateSnapshot) -> Routing:
    """The frontier a new session starts from: START's edges, then its conditional targets."""
    return route(graph, (START,), snapshot, (), {})


def _static_targets(
    default: Sequence[str], commands: list[FrontierCommand] | None
) -> tuple[list[Any], bool]:
    # Commands and routers are user code: their targets are checked by the caller, whatever their
    # annotations say, so they are typed as Any here.
    if not commands:
        return list(default), False
    targets: list[Any] = []
    replaced = False
    for command in commands:
        match command:
            case Replace(targets=new):
                if replaced:
                    log.warning(
                        "a node sent two Replace commands in one step; the second is ignored"
                    )
                    continue
                targets = list(new)
                replaced = True
            case Append(targets=more):
                if not targets and not replaced:
                    targets.extend(default)
                targets.extend(more)
    if not targets and not replaced:
        targets.extend(default)
    return targets, replaced


def _mark_join(
    marks: dict[JoinEdge, set[str]], before: JoinState, join: JoinEdge, node: str
) -> bool:
    """Mark ``node`` as run for ``join``; True when that completes it (the join then resets)."""
    seen = marks.get(join)
    if seen is None:
        seen = marks[join] = set(before.get(join_key(join), ()))
    seen.add(node)
    if len(seen) == len(join.sources):
        seen.clear()
        return True
    return False


def _join_state(before: JoinState, marks: dict[JoinEdge, set[str]]) -> JoinState:
    if not marks:
        return before
    state = dict(before)
    for join, seen in marks.items():
        key = join_key(join)
        if seen:
            state[key] = tuple(source for source in join.sources if source in seen)
        else:
            state.pop(key, None)
    return state


class RouterFailed(TreadleError):
    """A conditional edge's router raised.

    Inside a step the step fails as if the router's source node had (:class:`NodeRunError`); a
    router from START that raises while a session is created surfaces as this error.
    """

    def __init__(self, node: str, cause: Exception) -> None:
        self.node = node
        self.cause = cause
        super().__init__(f"router of {node!r} raised {type(cause).__name__}: {cause}")


def _conditional_targets(edge: ConditionalEdge, snapshot: StateSnapshot) -> list[Any]:
    try:
        return list(edge.resolve(edge.fn(snapshot)))
    except Exception as exc:
        raise RouterFailed(edge.source, exc) from exc
