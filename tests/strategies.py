"""Shared Hypothesis strategies for treadle tests (state values, partials, errors)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from treadle.runtime.graph.frozen import JSON, freeze
from treadle.runtime.graph.partial import Append, NodePartial, Replace
from treadle.runtime.graph.state import ErrorEvent, ErrorScope, Message, VersionedState

# A small key alphabet so that different nodes often write the same keys.
extra_keys = st.sampled_from(["a", "b", "c", "d", "ns:slot:v1"])
node_names = st.sampled_from(["n0", "n1", "n2", "n3", "n4", "n5"])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)


def json_values(*, max_leaves: int = 10) -> st.SearchStrategy[Any]:
    """Plain (mutable) JSON values: dicts with str keys, lists, scalars."""
    return st.recursive(
        json_scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=4), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def frozen_values(*, max_leaves: int = 10) -> st.SearchStrategy[JSON]:
    return json_values(max_leaves=max_leaves).map(freeze)


# Values that differ only in the ways ``==`` misses (1 vs 1.0 vs True, 0.0 vs -0.0), so version
# bumps are tested against what actually serialises differently.
tricky_scalars = st.sampled_from([0, 0.0, -0.0, 1, 1.0, True, False, None, "", "1"])

extra_values = st.one_of(tricky_scalars, json_values(max_leaves=4))

messages = st.builds(
    Message,
    role=st.sampled_from(["user", "assistant", "system", "tool", "critic"]),
    content=st.text(max_size=12),
)

error_scopes = st.one_of(
    st.builds(ErrorScope.node, node_names, st.integers(0, 5)),
    st.builds(ErrorScope.scheduler, st.integers(0, 5)),
    st.builds(ErrorScope.runner, st.sampled_from(["s1", "s2"]), st.integers(0, 5)),
    st.just(ErrorScope.app()),
)

error_events = st.builds(
    ErrorEvent,
    when=st.integers(0, 3),
    scope=error_scopes,
    error=st.sampled_from(["boom", "bad", "oops", ""]),
    tags=st.lists(st.sampled_from(["node", "retry"]), max_size=2),
    context=st.dictionaries(st.text(max_size=3), json_values(max_leaves=3), max_size=2),
)

frontier_commands = st.one_of(
    st.builds(Replace, st.lists(node_names, max_size=3)),
    st.builds(Append, st.lists(node_names, max_size=3)),
)


@st.composite
def node_partials(draw: st.DrawFn) -> NodePartial:
    """Partials with every field optional; ``extra`` sometimes plain, sometimes pre-frozen."""
    extra: Any = draw(st.none() | st.dictionaries(extra_keys, extra_values, max_size=3))
    if extra is not None and draw(st.booleans()):
        extra = freeze(extra)
    return NodePartial(
        messages=draw(st.none() | st.lists(messages, max_size=3)),
        extra=extra,
        errors=draw(st.none() | st.lists(error_events, max_size=2)),
        frontier=draw(st.none() | frontier_commands),
    )


versioned_states = st.builds(
    VersionedState,
    messages=st.lists(messages, max_size=4),
    extra=st.dictionaries(extra_keys | st.text(max_size=4), extra_values, max_size=4),
    errors=st.lists(error_events, max_size=3),
    messages_version=st.integers(1, 50),
    extra_version=st.integers(1, 50),
    errors_version=st.integers(1, 50),
)


# -- generated graphs for the interleaving-determinism tests --------------------------------------
# Appended here (not at the top) to keep this section self-contained; see tests/reference.py.

from reference import (  # noqa: E402  # this appended section builds on the reference
    Behaviour as GraphBehaviour,
)
from reference import (  # noqa: E402  # (see above)
    GraphSpec,
    Router,
)
from reference import (  # noqa: E402  # (see above)
    Value as GraphValue,
)

from treadle.runtime.graph.builder import END as _END  # noqa: E402  # (see above)
from treadle.runtime.graph.builder import START as _START  # noqa: E402  # (see above)

# The keys generated nodes write and routers read: few, so writes collide and counters matter.
graph_keys = st.sampled_from(["k0", "k1", "k2"])

graph_values = st.one_of(
    st.builds(GraphValue, st.just("const"), st.integers(0, 2) | st.sampled_from(["x", "y"])),
    st.builds(GraphValue, st.just("step")),
    st.builds(GraphValue, st.just("incr")),
    st.builds(GraphValue, st.just("delete")),
)

# The name a router or command may use that is not a node: it must be dropped and reported.
GHOST = "ghost"


@st.composite
def graph_behaviours(draw: st.DrawFn, names: list[str], *, failures: bool = True) -> GraphBehaviour:
    """One node's behaviour; ``names`` are the targets its frontier command may use."""
    kind = draw(st.sampled_from(["async", "async", "async", "sync", "runner"]))
    writes = draw(
        st.lists(st.tuples(graph_keys, graph_values), max_size=2, unique_by=lambda w: w[0])
    )
    targets = st.lists(st.sampled_from([*names, _END, GHOST]), max_size=2)
    command = draw(
        st.one_of(
            st.none(),
            st.none(),
            st.none(),
            st.builds(Replace, targets),
            st.builds(Append, targets),
        )
    )
    flaky = draw(st.sampled_from([0, 0, 0, 1, 2]))
    max_attempts = flaky + draw(st.sampled_from([1, 1, 1, 0])) if flaky else 1
    failure = None
    if failures:
        options: list[str | None] = [None] * 6 + ["raise"]
        if kind != "sync":
            options.append("hang")
        failure = draw(st.sampled_from(options))
    return GraphBehaviour(
        kind=kind,
        say=draw(st.booleans()),
        writes=tuple(writes),
        notes=tuple(draw(st.lists(st.sampled_from(["note", "warn"]), max_size=1))),
        command=command,
        delays_ms=(
            (0,)
            if kind == "sync"
            else tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=3)))
        ),
        emits=draw(st.integers(0, 2)),
        flaky=flaky,
        max_attempts=max(1, max_attempts),
        failure=failure,  # type: ignore[arg-type]  # drawn from the allowed literals
        fail_from_step=draw(st.integers(1, 8)),
    )


@st.composite
def graph_specs(draw: st.DrawFn, *, max_nodes: int = 6, failures: bool = True) -> GraphSpec:
    """Graphs that compile: chains, fan-outs, diamonds, random DAGs with unequal-length paths,
    joins, conditional loops bounded by counters in ``extra``, and frontier commands.

    Static edges and joins only go forward in node order (so they form no cycle); routers and
    frontier commands may go anywhere, including back, which makes loops.
    """
    n = draw(st.integers(1, max_nodes))
    names = [f"n{i}" for i in range(n)]
    shape = draw(st.sampled_from(["chain", "fanout", "diamond", "random"]))
    edges: list[tuple[str, str]] = []

    def add(src: str, dst: str) -> None:
        if (src, dst) not in edges:
            edges.append((src, dst))

    for i, name in enumerate(names):
        if shape == "chain":
            add(_START if i == 0 else names[i - 1], name)
        elif shape == "fanout":
            add(_START, name)
        elif shape == "diamond":
            if i == 0:
                add(_START, name)
            elif i < n - 1 or n == 2:
                add(names[0], name)
            else:
                for mid in names[1:-1]:
                    add(mid, name)
        else:
            sources = draw(st.lists(st.sampled_from([_START, *names[:i]]), min_size=1, max_size=2))
            for src in sources:
                add(src, name)
    # Shortcuts make paths of unequal length to one node.
    if n >= 3:
        for _ in range(draw(st.integers(0, 2))):
            i = draw(st.integers(0, n - 2))
            j = draw(st.integers(i + 1, n - 1))
            add(names[i], names[j])
    for name in names:
        if not any(src == name for src, _ in edges) or draw(st.integers(0, 5)) == 0:
            add(name, _END)

    joins: list[tuple[tuple[str, ...], str]] = []
    if n >= 3:
        for _ in range(draw(st.integers(0, 2))):
            target = draw(st.integers(2, n))
            pool = names[:target]
            sources = tuple(
                draw(st.lists(st.sampled_from(pool), min_size=2, max_size=3, unique=True))
            )
            dst = names[target] if target < n else _END
            if all(set(s) != set(sources) or d != dst for s, d in joins):
                joins.append((sources, dst))

    routers: list[Router] = []
    for _ in range(draw(st.integers(0, 2))):
        targets = st.lists(st.sampled_from([*names, _END, GHOST]), max_size=2)
        routers.append(
            Router(
                source=draw(st.sampled_from([_START, *names])),
                key=draw(graph_keys),
                bound=draw(st.integers(1, 3)),
                below=tuple(draw(targets)),
                above=tuple(draw(targets)),
            )
        )
    nodes = tuple((name, draw(graph_behaviours(names, failures=failures))) for name in names)
    return GraphSpec(nodes=nodes, edges=tuple(edges), joins=tuple(joins), routers=tuple(routers))


graph_initial_states = st.builds(
    VersionedState,
    messages=st.lists(st.builds(Message.user, st.sampled_from(["hi", "go"])), max_size=1),
    extra=st.dictionaries(graph_keys, st.integers(0, 2) | st.just("x"), max_size=2),
    messages_version=st.integers(1, 3),
    extra_version=st.integers(1, 3),
)
