"""Built-in and custom reducers, the registry, and how custom reducers drive version bumps."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import extra_keys, extra_values

from treadle.runtime.execution.barrier import apply_barrier
from treadle.runtime.graph.frozen import FrozenDict, freeze
from treadle.runtime.graph.partial import NodePartial
from treadle.runtime.graph.persistent import FrozenMap
from treadle.runtime.graph.reducers import (
    ReducerRegistry,
    add_errors,
    add_messages,
    map_merge,
    reducer,
)
from treadle.runtime.graph.state import ErrorEvent, ErrorScope, Message, VersionedState

HI, BYE = Message.user("hi"), Message.assistant("bye")


def test_builtins() -> None:
    assert add_messages.apply((HI,), (BYE,)) == (HI, BYE)
    boom = ErrorEvent(0, ErrorScope.app(), "boom")
    assert add_errors.apply((), (boom,)) == (boom,)
    merged = map_merge.apply(freeze({"a": 1, "b": 2}), freeze({"a": None, "c": 3, "z": None}))
    assert merged == {"b": 2, "c": 3}
    assert type(merged) is FrozenMap
    assert [r.definition_label for r in (add_messages, map_merge, add_errors)] == [
        "add_messages",
        "map_merge",
        "add_errors",
    ]


@given(
    st.dictionaries(extra_keys, extra_values, max_size=4),
    st.dictionaries(extra_keys, st.none() | extra_values, max_size=4),
)
def test_map_merge_is_a_shallow_merge_where_none_deletes(
    current: dict[str, Any], update: dict[str, Any]
) -> None:
    merged = map_merge.apply(freeze(current), freeze(update))
    expected = {**current, **{k: v for k, v in update.items() if v is not None}}
    for key, value in update.items():
        if value is None:
            expected.pop(key, None)
    assert merged == freeze(expected)


def test_registry_default_labels_and_replacement() -> None:
    registry = ReducerRegistry.default()
    assert registry.labels() == {
        "messages": "add_messages",
        "extra": "map_merge",
        "errors": "add_errors",
    }
    last_two = reducer(lambda cur, upd: (cur + upd)[-2:], label="last_two")
    custom = registry.with_reducer("messages", last_two)
    assert custom.labels()["messages"] == "last_two"
    assert registry.labels()["messages"] == "add_messages"
    with pytest.raises(
        ValueError, match="unknown state channel 'msgs': use one of messages, extra, errors"
    ):
        registry.with_reducer("msgs", last_two)
    with pytest.raises(TypeError, match="is not a reducer"):
        registry.with_reducer("messages", lambda c, u: c)  # type: ignore[arg-type]  # misuse
    with pytest.raises(ValueError, match="non-empty label"):
        reducer(lambda c, u: c, label="")


def run(registry: ReducerRegistry, state: VersionedState, *partials: NodePartial) -> Any:
    return apply_barrier(state, [f"n{i}" for i in range(len(partials))], list(partials), registry)


def test_custom_messages_reducer_same_length_bumps_only_on_real_change() -> None:
    keep_last = ReducerRegistry.default().with_reducer(
        "messages", reducer(lambda cur, upd: (cur + upd)[-1:], label="keep_last")
    )
    state = VersionedState(messages=[HI])
    new, outcome = run(keep_last, state, NodePartial(messages=[BYE]))
    assert new.messages == (BYE,)
    assert new.messages_version == 2
    assert outcome.updated_channels == ("messages",)
    # Same length and an equal value (a fresh tuple): no change, no bump.
    again, outcome = run(keep_last, new, NodePartial(messages=[Message.assistant("bye")]))
    assert again is new
    assert outcome.updated_channels == ()


def test_custom_reducer_that_ignores_updates_never_bumps() -> None:
    frozen_chat = ReducerRegistry.default().with_reducer(
        "messages", reducer(lambda cur, upd: cur, label="ignore")
    )
    state = VersionedState(messages=[HI])
    new, outcome = run(frozen_chat, state, NodePartial(messages=[BYE]))
    assert new is state
    assert outcome.updated_channels == ()


def test_custom_extra_reducer_gets_frozen_writes_and_is_compared_as_a_whole() -> None:
    seen: list[Any] = []

    def deep_merge(current: FrozenDict, update: FrozenDict) -> dict[str, Any]:
        seen.append(update)
        result: dict[str, Any] = dict(current)
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = {**result[key], **value}
            elif value is not None:
                result[key] = value
        return result  # a plain dict: the barrier freezes it

    registry = ReducerRegistry.default().with_reducer("extra", reducer(deep_merge, label="deep"))
    state = VersionedState(extra={"cfg": {"a": 1}})
    new, outcome = run(
        registry, state, NodePartial(extra={"cfg": {"b": [2]}}), NodePartial(extra={"x": None})
    )
    assert new.extra == {"cfg": {"a": 1, "b": (2,)}}
    assert type(new.extra) is FrozenMap
    assert type(new.extra["cfg"]) is FrozenDict
    assert seen == [{"cfg": {"b": (2,)}, "x": None}]
    assert type(seen[0]) is FrozenDict
    assert outcome.updated_channels == ("extra",)
    assert new.extra_version == 2
    # Writing what is already there changes nothing.
    same, outcome = run(registry, new, NodePartial(extra={"cfg": {"a": 1}}))
    assert same is new
    assert outcome.updated_channels == ()


def test_custom_errors_reducer() -> None:
    def keep_newest(current: tuple[ErrorEvent, ...], update: tuple[ErrorEvent, ...]) -> Any:
        return list(current + update)[-1:]

    registry = ReducerRegistry.default().with_reducer("errors", reducer(keep_newest, label="k"))
    e1 = ErrorEvent(1, ErrorScope.node("a", 1), "first")
    e2 = ErrorEvent(2, ErrorScope.node("b", 1), "second")
    new, outcome = run(
        registry, VersionedState(), NodePartial(errors=[e2]), NodePartial(errors=[e1])
    )
    assert outcome.errors == (e1, e2)  # what was merged, sorted
    assert new.errors == (e2,)  # what the reducer kept, as a tuple
    assert type(new.errors) is tuple
    assert new.errors_version == 2


@pytest.mark.parametrize(
    ("channel", "result", "partial", "message"),
    [
        ("messages", "text", NodePartial(messages=[HI]), "returned a str; it must return a tuple"),
        ("messages", ("x",), NodePartial(messages=[HI]), "returned a str at index 0"),
        ("extra", 42, NodePartial(extra={"a": 1}), "returned a int; it must return a mapping"),
        ("errors", None, NodePartial(errors=[ErrorEvent(0, ErrorScope.app(), "e")]), "NoneType"),
    ],
)
def test_custom_reducers_must_return_the_channel_type(
    channel: str, result: object, partial: NodePartial, message: str
) -> None:
    registry = ReducerRegistry.default().with_reducer(
        channel, reducer(lambda cur, upd: result, label="bad")
    )
    with pytest.raises(TypeError) as info:
        run(registry, VersionedState(), partial)
    assert f"the {channel} reducer 'bad'" in str(info.value)
    assert message in str(info.value)


def test_reducers_are_not_called_without_writes() -> None:
    calls: list[str] = []

    def spy(current: Any, update: Any) -> Any:
        calls.append("called")
        return current

    registry = ReducerRegistry(
        messages=reducer(spy, label="m"),
        extra=reducer(spy, label="x"),
        errors=reducer(spy, label="e"),
    )
    state = VersionedState()
    new, _ = run(registry, state, NodePartial(), NodePartial(messages=[], extra={}, errors=[]))
    assert new is state
    assert calls == []
