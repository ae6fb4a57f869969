"""Messages, error events, VersionedState/StateSnapshot and NodePartial validation."""

from __future__ import annotations

import json

import attrs
import pytest
from hypothesis import given
from strategies import error_events, node_partials, versioned_states

from treadle.runtime.graph.frozen import FrozenDict
from treadle.runtime.graph.partial import Append, NodePartial, Replace
from treadle.runtime.graph.persistent import FrozenMap
from treadle.runtime.graph.state import (
    ErrorEvent,
    ErrorScope,
    Message,
    StateSnapshot,
    VersionedState,
)

# -- messages and errors ---------------------------------------------------------------------------


def test_message_constructors_and_custom_roles() -> None:
    assert Message.user("a") == Message("user", "a")
    assert Message.assistant("a").role == Message.ASSISTANT == "assistant"
    assert Message.system("a").role == "system"
    assert Message.tool("a").role == "tool"
    assert Message("critic", "x").role == "critic"
    assert Message.from_json_value({"role": "critic", "content": "x"}) == Message("critic", "x")
    assert Message.user("hi").to_json_value() == {"role": "user", "content": "hi"}


@pytest.mark.parametrize(("role", "content"), [("", "x"), (None, "x"), ("user", 3)])
def test_message_rejects_bad_fields(role: object, content: object) -> None:
    with pytest.raises(TypeError, match="Message"):
        Message(role, content)  # type: ignore[arg-type]  # deliberate misuse


def test_message_from_json_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="role"):
        Message.from_json_value({"content": "x"})
    with pytest.raises(ValueError, match="JSON object"):
        Message.from_json_value(["user", "x"])


def test_error_scope_constructors_and_ranks() -> None:
    assert ErrorScope.node("a", 2) == ErrorScope("node", "a", 2)
    assert ErrorScope.scheduler(3) == ErrorScope("scheduler", "", 3)
    assert ErrorScope.runner("s", 1) == ErrorScope("runner", "s", 1)
    assert ErrorScope.app() == ErrorScope("app", "", 0)
    assert [s.rank for s in (ErrorScope.node("a", 1), ErrorScope.scheduler(1))] == [0, 1]
    assert [s.rank for s in (ErrorScope.runner("s", 1), ErrorScope.app())] == [2, 3]
    with pytest.raises(ValueError, match="node, scheduler, runner, app"):
        ErrorScope("galaxy")


def test_error_event_converts_tags_and_context() -> None:
    event = ErrorEvent(5, ErrorScope.node("a", 1), "boom", ["x"], {"k": [1]})
    assert event.tags == ("x",)
    assert type(event.context) is FrozenDict
    assert event.context == {"k": (1,)}
    assert event.sort_key() == (0, "a", 1, 5, "boom")
    with pytest.raises(TypeError, match="not the string"):
        ErrorEvent(5, ErrorScope.app(), "e", "tag")
    with pytest.raises(TypeError, match=r"ErrorEvent.context\['k'\] is a set"):
        ErrorEvent(5, ErrorScope.app(), "e", context={"k": {1}})
    with pytest.raises(TypeError, match=r"ErrorEvent\.context must be a mapping"):
        ErrorEvent(5, ErrorScope.app(), "e", context=[1])  # type: ignore[arg-type]  # misuse


@given(error_events)
def test_error_event_json_round_trip(event: ErrorEvent) -> None:
    back = ErrorEvent.from_json_value(json.loads(json.dumps(event.to_json_value())))
    assert back == event


# -- state -----------------------------------------------------------------------------------------


def test_constructor_freezes_and_versions_start_at_one() -> None:
    state = VersionedState(
        messages=[Message.user("hi")],
        extra={"a": [1, {"b": 2}]},
        errors=[],
    )
    assert state.messages == (Message.user("hi"),)
    assert type(state.extra) is FrozenMap
    assert state.extra["a"] == (1, {"b": 2})
    assert (state.messages_version, state.extra_version, state.errors_version) == (1, 1, 1)
    assert VersionedState.with_user_message("x").messages == (Message.user("x"),)
    with pytest.raises(TypeError, match=r"messages\[0\] is a str"):
        VersionedState(messages=["hi"])  # type: ignore[list-item]  # deliberate misuse
    with pytest.raises(TypeError, match=r"extra\['a'\] is a set"):
        VersionedState(extra={"a": {1}})
    with pytest.raises(ValueError, match="messages_version must be an int >= 1"):
        VersionedState(messages_version=0)


def test_state_is_immutable() -> None:
    state = VersionedState(extra={"a": [1]})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        state.messages = ()  # type: ignore[misc]  # deliberate misuse
    with pytest.raises(TypeError):
        state.extra["a"] = 2


@given(versioned_states)
def test_snapshot_shares_values_and_compares_only_to_snapshots(state: VersionedState) -> None:
    snap = state.snapshot()
    assert type(snap) is StateSnapshot
    assert snap.messages is state.messages
    assert snap.extra is state.extra
    assert snap.errors is state.errors
    assert snap.messages_version == state.messages_version
    assert snap.extra_version == state.extra_version
    assert snap.errors_version == state.errors_version
    assert snap != state  # type: ignore[comparison-overlap]  # the point of the check
    assert snap == state.snapshot()
    assert StateSnapshot.from_json_value(state.to_json_value()) == snap


@given(versioned_states)
def test_state_json_round_trip_is_exact(state: VersionedState) -> None:
    document = state.to_json_value()
    text = json.dumps(document)
    back = VersionedState.from_json_value(json.loads(text))
    assert back == state
    assert json.dumps(back.to_json_value()) == text
    assert back.to_json_value()["versions"] == {
        "messages": state.messages_version,
        "extra": state.extra_version,
        "errors": state.errors_version,
    }


def test_to_json_value_is_plain_and_detached() -> None:
    state = VersionedState(extra={"a": [1]})
    document = state.to_json_value()
    document["extra"]["a"].append(2)
    assert state.extra["a"] == (1,)
    assert type(document["extra"]) is dict


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "a state must be a JSON object"),
        ({"messages": {}}, "state['messages'] must be a JSON array"),
        ({"versions": {"extra": 0}}, "state['versions']['extra'] must be an int >= 1"),
        ({"errors": [{"when": "x"}]}, "error event['when'] must be a int"),
    ],
)
def test_from_json_value_rejects_bad_documents(document: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        VersionedState.from_json_value(document)
    assert message in str(info.value)


# -- partials --------------------------------------------------------------------------------------


def test_partial_converts_lists_and_validates_types() -> None:
    partial = NodePartial(messages=[Message.user("a")], errors=[], frontier=Replace(["x"]))
    assert partial.messages == (Message.user("a"),)
    assert partial.errors == ()
    assert partial.frontier == Replace(("x",))
    with pytest.raises(
        TypeError,
        match=r"NodePartial.messages\[1\] is a str; wrap text with "
        r"Message.user\(...\)/Message.assistant\(...\)",
    ):
        NodePartial(messages=[Message.user("a"), "b"])  # type: ignore[list-item]  # misuse
    with pytest.raises(TypeError, match=r"NodePartial\.messages must be a list of Message"):
        NodePartial(messages="hello")  # type: ignore[arg-type]  # deliberate misuse
    with pytest.raises(TypeError, match=r"NodePartial\.extra has the key 1"):
        NodePartial(extra={1: "x"})  # type: ignore[dict-item]  # deliberate misuse
    with pytest.raises(TypeError, match=r"NodePartial\.extra must be a mapping"):
        NodePartial(extra=[("a", 1)])  # type: ignore[arg-type]  # deliberate misuse
    with pytest.raises(TypeError, match=r"NodePartial.errors\[0\] is a str"):
        NodePartial(errors=["boom"])  # type: ignore[list-item]  # deliberate misuse
    with pytest.raises(TypeError, match=r"Replace\(\[...\]\) or Append"):
        NodePartial(frontier=["x"])  # type: ignore[arg-type]  # deliberate misuse


def test_frontier_commands() -> None:
    assert Replace(["a", "b"]).targets == ("a", "b")
    assert Append(("a",)).targets == ("a",)
    with pytest.raises(TypeError, match=r"write \['abc'\]"):
        Replace("abc")
    with pytest.raises(TypeError, match="non-empty node names"):
        Append([""])


def test_extra_is_not_frozen_until_asked() -> None:
    written = {"a": [1]}
    partial = NodePartial(extra=written)
    assert partial.extra is written
    frozen = partial.frozen()
    assert type(frozen.extra) is FrozenDict
    assert frozen.extra == {"a": (1,)}
    assert frozen.frozen() is frozen
    with pytest.raises(TypeError, match=r"NodePartial.extra\['a'\] is a set"):
        NodePartial(extra={"a": {1}}).frozen()


def test_is_empty() -> None:
    assert NodePartial().is_empty()
    assert NodePartial(messages=[], extra={}, errors=[]).is_empty()
    assert not NodePartial(messages=[Message.user("a")]).is_empty()
    assert not NodePartial(extra={"a": None}).is_empty()
    assert not NodePartial(frontier=Replace([])).is_empty()
    assert not NodePartial(errors=[ErrorEvent(0, ErrorScope.app(), "e")]).is_empty()


@given(node_partials())
def test_generated_partials_are_valid(partial: NodePartial) -> None:
    again = attrs.evolve(partial)
    assert again == partial
