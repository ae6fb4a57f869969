"""The barrier merge against a naive reference fold: frontier order, last writer wins, sorted
errors, and versions that rise by one exactly when a channel's value changed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import error_events, messages, node_partials, versioned_states

from treadle.runtime.execution.barrier import BarrierOutcome, apply_barrier
from treadle.runtime.graph.frozen import FrozenDict, thaw
from treadle.runtime.graph.partial import Append, NodePartial
from treadle.runtime.graph.persistent import FrozenMap
from treadle.runtime.graph.reducers import ReducerRegistry
from treadle.runtime.graph.state import ErrorEvent, ErrorScope, Message, VersionedState

DEFAULT = ReducerRegistry.default()
RANK = {"node": 0, "scheduler": 1, "runner": 2, "app": 3}


def canonical(value: Any) -> str:
    """JSON text that tells 1, 1.0 and true apart and ignores key order."""
    return json.dumps(value, sort_keys=True)


def reference_fold(state: VersionedState, partials: list[NodePartial]) -> dict[str, Any]:
    """The barrier rules written the slow, obvious way over plain JSON documents."""
    doc = state.to_json_value()
    messages = list(doc["messages"])
    extra = dict(doc["extra"])
    new_errors: list[dict[str, Any]] = []
    for partial in partials:
        for m in partial.messages or ():
            messages.append({"role": m.role, "content": m.content})
        for key, value in (partial.extra or {}).items():
            if value is None:
                extra.pop(key, None)
            else:
                extra[key] = json.loads(json.dumps(value))
        new_errors.extend(e.to_json_value() for e in partial.errors or ())
    new_errors.sort(
        key=lambda e: (
            RANK[e["scope"]["kind"]],
            e["scope"]["name"],
            e["scope"]["step"],
            e["when"],
            e["error"],
        )
    )
    versions = dict(doc["versions"])
    if len(messages) != len(doc["messages"]):
        versions["messages"] += 1
    if canonical(extra) != canonical(doc["extra"]):
        versions["extra"] += 1
    if new_errors:
        versions["errors"] += 1
    return {
        "messages": messages,
        "extra": extra,
        "errors": doc["errors"] + new_errors,
        "versions": versions,
    }


@st.composite
def steps(draw: st.DrawFn) -> tuple[list[str], list[NodePartial]]:
    nodes = draw(st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=5))
    partials = [draw(node_partials()) for _ in nodes]
    return nodes, partials


@given(versioned_states, steps())
def test_barrier_matches_the_reference_fold(
    state: VersionedState, step: tuple[list[str], list[NodePartial]]
) -> None:
    nodes, partials = step
    new, outcome = apply_barrier(state, nodes, partials, DEFAULT)
    expected = reference_fold(state, partials)
    assert canonical(new.to_json_value()) == canonical(expected)
    assert type(new.extra) is FrozenMap
    assert outcome.updated_channels == tuple(
        ch
        for ch in ("messages", "extra", "errors")
        if expected["versions"][ch] != state.to_json_value()["versions"][ch]
    )
    assert [e.to_json_value() for e in outcome.errors] == expected["errors"][len(state.errors) :]
    assert outcome.frontier_commands == tuple(
        (n, p.frontier) for n, p in zip(nodes, partials, strict=True) if p.frontier is not None
    )


@given(versioned_states, st.lists(steps(), max_size=6))
def test_versions_rise_by_at_most_one_and_only_on_change(
    state: VersionedState, many: list[tuple[list[str], list[NodePartial]]]
) -> None:
    for nodes, partials in many:
        new, outcome = apply_barrier(state, nodes, partials, DEFAULT)
        before, after = state.to_json_value(), new.to_json_value()
        for channel in ("messages", "extra", "errors"):
            bump = after["versions"][channel] - before["versions"][channel]
            changed = canonical(after[channel]) != canonical(before[channel])
            assert bump == (1 if changed else 0), channel
            assert (channel in outcome.updated_channels) == changed
            # An unchanged channel is shared, not copied.
            if not changed:
                assert getattr(new, channel) is getattr(state, channel)
        if not outcome.updated_channels:
            assert new is state
        state = new


@given(versioned_states, st.lists(error_events, max_size=6), st.randoms(use_true_random=False))
def test_merged_errors_do_not_depend_on_frontier_order(
    state: VersionedState, errors: list[ErrorEvent], rnd: Any
) -> None:
    partials = [NodePartial(errors=[e]) for e in errors]
    shuffled = list(partials)
    rnd.shuffle(shuffled)
    names = [f"n{i}" for i in range(len(partials))]
    a, out_a = apply_barrier(state, names, partials, DEFAULT)
    b, out_b = apply_barrier(state, names, shuffled, DEFAULT)
    keys = [e.sort_key() for e in out_a.errors]
    assert keys == sorted(e.sort_key() for e in errors)
    assert [e.sort_key() for e in out_b.errors] == keys
    # Events with equal sort keys keep frontier order (a stable sort), so only distinct keys
    # make the whole result independent of the frontier.
    if len(set(keys)) == len(keys):
        assert a == b


def test_frontier_order_decides_messages_and_last_writer() -> None:
    state = VersionedState(extra={"keep": 1, "gone": 2})
    partials = [
        NodePartial(messages=[Message.user("from a")], extra={"k": "a", "x": [1]}),
        NodePartial(messages=[Message.user("from b")], extra={"k": "b", "x": None, "gone": None}),
    ]
    new, outcome = apply_barrier(state, ["a", "b"], partials, DEFAULT)
    assert [m.content for m in new.messages] == ["from a", "from b"]
    assert new.extra == {"keep": 1, "k": "b"}
    assert outcome.updated_channels == ("messages", "extra")
    assert (new.messages_version, new.extra_version, new.errors_version) == (2, 2, 1)
    swapped, _ = apply_barrier(state, ["b", "a"], partials[::-1], DEFAULT)
    assert [m.content for m in swapped.messages] == ["from b", "from a"]
    assert swapped.extra == {"keep": 1, "k": "a", "x": (1,)}


def test_errors_sort_by_scope_rank_name_step_when_message() -> None:
    def event(scope: ErrorScope, when: int, error: str) -> ErrorEvent:
        return ErrorEvent(when, scope, error)

    app = event(ErrorScope.app(), 0, "a")
    runner = event(ErrorScope.runner("s", 1), 0, "r")
    sched = event(ErrorScope.scheduler(1), 0, "s")
    node_b = event(ErrorScope.node("b", 1), 0, "x")
    node_a2 = event(ErrorScope.node("a", 2), 0, "x")
    node_a1_late = event(ErrorScope.node("a", 1), 9, "x")
    node_a1_z = event(ErrorScope.node("a", 1), 1, "z")
    node_a1_y = event(ErrorScope.node("a", 1), 1, "y")
    jumbled = [app, runner, sched, node_b, node_a2, node_a1_late, node_a1_z, node_a1_y]
    new, outcome = apply_barrier(VersionedState(), ["n"], [NodePartial(errors=jumbled)], DEFAULT)
    expected = (node_a1_y, node_a1_z, node_a1_late, node_a2, node_b, sched, runner, app)
    assert outcome.errors == expected
    assert new.errors == expected
    assert new.errors_version == 2
    assert outcome.updated_channels == ("errors",)


@pytest.mark.parametrize(
    "extra",
    [
        {"a": 1},  # identical value
        {"missing": None},  # deleting an absent key
        {"nested": {"b": [1, 2]}},  # deep-equal nested value
    ],
)
def test_writes_that_change_nothing_do_not_bump(extra: dict[str, Any]) -> None:
    state = VersionedState(extra={"a": 1, "nested": {"b": [1, 2]}})
    new, outcome = apply_barrier(state, ["n"], [NodePartial(extra=extra)], DEFAULT)
    assert new is state
    assert outcome.updated_channels == ()


@pytest.mark.parametrize("value", [1.0, True, "1", [1]])
def test_values_equal_in_python_but_not_in_json_do_bump(value: object) -> None:
    state = VersionedState(extra={"a": 1})
    new, outcome = apply_barrier(state, ["n"], [NodePartial(extra={"a": value})], DEFAULT)
    assert outcome.updated_channels == ("extra",)
    assert new.extra_version == 2
    assert canonical(new.extra["a"]) == canonical(value)


def test_empty_partials_return_the_same_state() -> None:
    state = VersionedState.with_user_message("hi")
    partials = [NodePartial(), NodePartial(messages=[], extra={}, errors=[])]
    new, outcome = apply_barrier(state, ["a", "b"], partials, DEFAULT)
    assert new is state
    assert outcome == BarrierOutcome((), (), ())
    new, outcome = apply_barrier(
        state, ["a", "b"], [NodePartial(), NodePartial(frontier=Append(["x"]))], DEFAULT
    )
    assert new is state
    assert outcome.frontier_commands == (("b", Append(("x",))),)
    assert apply_barrier(state, [], [], DEFAULT) == (state, BarrierOutcome())


def test_written_values_are_frozen_and_detached_from_the_node() -> None:
    written: dict[str, Any] = {"a": {"list": [1, 2]}}
    new, _ = apply_barrier(VersionedState(), ["n"], [NodePartial(extra=written)], DEFAULT)
    written["a"]["list"].append(3)
    assert new.extra["a"] == {"list": (1, 2)}
    assert type(new.extra["a"]) is FrozenDict
    with pytest.raises(TypeError):
        new.extra["a"]["list"] = ()


def test_bad_value_names_the_node_and_path() -> None:
    partials = [NodePartial(extra={"ok": 1}), NodePartial(extra={"a": [1, {"b": {1}}]})]
    with pytest.raises(TypeError) as info:
        apply_barrier(VersionedState(), ["first", "second"], partials, DEFAULT)
    assert str(info.value) == (
        "node 'second' wrote a value that is not JSON: extra['a'][1]['b'] is a set, which is "
        "not a JSON value"
    )


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="one partial per ran node, got 1 partials for 2 nodes"):
        apply_barrier(VersionedState(), ["a", "b"], [NodePartial()], DEFAULT)
    with pytest.raises(ValueError, match="a frontier command without a ran node"):
        apply_barrier(VersionedState(), [], [NodePartial(frontier=Append(["x"]))], DEFAULT)


def test_runtime_writes_need_no_ran_node() -> None:
    # How the scheduler records a failed step: no node ran, one error is appended.
    failure = ErrorEvent(7, ErrorScope.node("work", 3), "ValueError: boom", ("node",))
    state = VersionedState.with_user_message("hi")
    new, outcome = apply_barrier(state, (), [NodePartial(errors=(failure,))], DEFAULT)
    assert new.errors == (failure,)
    assert (new.messages_version, new.extra_version, new.errors_version) == (1, 1, 2)
    assert outcome == BarrierOutcome(("errors",), (failure,), ())
    with pytest.raises(TypeError, match="node '<runtime>' wrote a value that is not JSON"):
        apply_barrier(state, (), [NodePartial(extra={"a": {1}})], DEFAULT)


def test_snapshot_of_merged_state_is_shared_not_copied() -> None:
    state = VersionedState(messages=[Message.user(str(i)) for i in range(50)])
    new, _ = apply_barrier(state, ["n"], [NodePartial(messages=[Message.assistant("x")])], DEFAULT)
    snap = new.snapshot()
    assert snap.messages is new.messages
    assert new.extra is state.extra
    assert new.errors is state.errors
    assert thaw(snap.extra) == {}


@given(st.lists(messages, max_size=5), st.lists(st.lists(messages, max_size=3), max_size=4))
def test_messages_concatenate_in_frontier_order(
    initial: list[Message], writes: list[list[Message]]
) -> None:
    state = VersionedState(messages=initial)
    partials = [NodePartial(messages=w) for w in writes]
    new, _ = apply_barrier(state, [f"n{i}" for i in range(len(writes))], partials, DEFAULT)
    assert list(new.messages) == initial + [m for w in writes for m in w]
