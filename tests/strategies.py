"""Shared Hypothesis strategies for treadle tests (state values, partials, errors)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from treadle.runtime.frozen import JSON, freeze
from treadle.runtime.partial import Append, NodePartial, Replace
from treadle.runtime.state import ErrorEvent, ErrorScope, Message, VersionedState

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
