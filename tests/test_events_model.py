"""Events: construction, JSON shapes and round trips, sentinels."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import json_values

from treadle.runtime.events.types import (
    INVOCATION_END_SCOPE,
    LLM_FINAL_SCOPE,
    STREAM_END_SCOPE,
    AnyEvent,
    DiagnosticEvent,
    Event,
    LLMEvent,
    NodeEvent,
    event_from_json,
    invocation_end,
    is_sentinel,
    stream_end,
)
from treadle.runtime.graph.frozen import FrozenDict

# Metadata keys other than the ones the event fields own.
metadata_dicts = st.dictionaries(
    st.text(max_size=6).filter(lambda k: k not in {"node_id", "step", "stream_id", "is_final"}),
    json_values(max_leaves=5),
    max_size=4,
)
finite = st.floats(allow_nan=False, allow_infinity=False)
maybe_session = st.none() | st.text(max_size=6)
maybe_seq = st.none() | st.integers(min_value=0, max_value=2**40)

node_events = st.builds(
    NodeEvent,
    node_id=st.text(max_size=6),
    step=st.integers(min_value=0, max_value=10**6),
    scope=st.text(max_size=8),
    message=st.text(max_size=20),
    metadata=metadata_dicts,
    timestamp=finite,
    session_id=maybe_session,
    seq=maybe_seq,
)
diagnostic_events = st.builds(
    DiagnosticEvent,
    scope=st.text(max_size=8),
    message=st.text(max_size=20),
    metadata=metadata_dicts,
    timestamp=finite,
    session_id=maybe_session,
    seq=maybe_seq,
)
llm_events = st.builds(
    LLMEvent,
    session_id=maybe_session,
    node_id=st.text(max_size=6),
    stream_id=st.none() | st.text(max_size=6),
    chunk=st.text(max_size=20),
    is_final=st.booleans(),
    scope=st.sampled_from(["chunk", "final", "error"]),
    metadata=metadata_dicts,
    timestamp=finite,
    seq=maybe_seq,
)
any_events = node_events | diagnostic_events | llm_events


@given(any_events)
def test_json_string_round_trip(event: AnyEvent) -> None:
    text = event.to_json_string()
    assert "\n" not in text
    back = Event.from_json(text)
    assert back == event
    assert type(back) is type(event)
    assert back.to_json_string() == text


@given(any_events)
def test_json_value_and_pretty_round_trip(event: AnyEvent) -> None:
    value = event.to_json_value()
    assert set(value) == {"type", "scope", "message", "timestamp", "session_id", "seq", "metadata"}
    assert event_from_json(value) == event
    assert event_from_json(event.to_json_pretty()) == event
    # The value is plain JSON: it survives a dumps/loads cycle unchanged.
    assert json.loads(json.dumps(value)) == json.loads(event.to_json_string())


def test_node_event_json_shape() -> None:
    event = NodeEvent("plan", 3, "progress", "half way", {"pct": 50}, 12.5, "s1", 7)
    assert event.to_json_value() == {
        "type": "node",
        "scope": "progress",
        "message": "half way",
        "timestamp": 12.5,
        "session_id": "s1",
        "seq": 7,
        "metadata": {"pct": 50, "node_id": "plan", "step": 3},
    }


def test_llm_event_json_shape_uses_the_chunk_as_message() -> None:
    event = LLMEvent("s1", "writer", "st-1", "Hel", False, "chunk", timestamp=1.0)
    value = event.to_json_value()
    assert value["type"] == "llm"
    assert value["message"] == "Hel"
    assert value["session_id"] == "s1"
    assert value["metadata"] == {"node_id": "writer", "stream_id": "st-1", "is_final": False}
    assert event.message == "Hel"


def test_diagnostic_json_shape() -> None:
    event = DiagnosticEvent("routing.unknown_target", "dropped 'x'", timestamp=2.0)
    assert event.to_json_value() == {
        "type": "diagnostic",
        "scope": "routing.unknown_target",
        "message": "dropped 'x'",
        "timestamp": 2.0,
        "session_id": None,
        "seq": None,
        "metadata": {},
    }


def test_fields_win_over_metadata_keys_they_own() -> None:
    event = NodeEvent("a", 2, "s", "m", {"node_id": "other", "step": 9, "k": 1})
    assert event.metadata == {"node_id": "a", "step": 2, "k": 1}
    llm = LLMEvent(None, "a", None, "c", True, LLM_FINAL_SCOPE, {"is_final": False})
    assert llm.metadata["is_final"] is True


def test_metadata_is_frozen_and_timestamp_set_at_creation() -> None:
    event = NodeEvent("a", 1, "s", "m", {"items": [1, {"x": 2}]})
    assert isinstance(event.metadata, FrozenDict)
    assert event.metadata["items"] == (1, {"x": 2})
    with pytest.raises(TypeError):
        event.metadata["new"] = 1
    assert event.timestamp > 1_600_000_000
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.scope = "x"  # type: ignore[misc]  # proving the event is frozen


def test_metadata_must_be_json() -> None:
    with pytest.raises(TypeError, match="metadata"):
        NodeEvent("a", 1, "s", "m", {"bad": {1, 2}})


def test_stamped_copies_only_session_and_seq() -> None:
    event = NodeEvent("a", 1, "s", "m", {"k": 1}, timestamp=5.0)
    stamped = event.stamped("s1", 4)
    assert stamped == attrs.evolve(event, session_id="s1", seq=4)
    assert event.session_id is None
    llm = LLMEvent(None, "a", None, "c", False, "chunk", timestamp=1.0)
    assert llm.stamped("s", 0) == attrs.evolve(llm, session_id="s", seq=0)
    diag = DiagnosticEvent("d", "m", timestamp=1.0)
    assert diag.stamped("s", 1) == attrs.evolve(diag, session_id="s", seq=1)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("not json", "Expecting value"),
        ("[1, 2]", "expected a JSON object"),
        ('{"type": "node"}', "'scope' is missing"),
        (
            {
                "type": "weird",
                "scope": "s",
                "message": "m",
                "timestamp": 1,
                "session_id": None,
                "seq": None,
                "metadata": {},
            },
            "unknown type 'weird'",
        ),
        (
            {
                "type": "node",
                "scope": "s",
                "message": "m",
                "timestamp": 1,
                "session_id": None,
                "seq": True,
                "metadata": {"node_id": "a", "step": 1},
            },
            "'seq' is True",
        ),
        (
            {
                "type": "node",
                "scope": "s",
                "message": "m",
                "timestamp": 1,
                "session_id": None,
                "seq": None,
                "metadata": {"step": 1},
            },
            "'node_id' is missing",
        ),
    ],
)
def test_from_json_rejects_bad_input(data: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Event.from_json(data)


def test_sentinel_messages_follow_the_spec() -> None:
    done = stream_end("s1", 4)
    assert done.scope == STREAM_END_SCOPE == "__treadle_stream_end__"
    assert done.message == "session=s1 status=completed step=4"
    assert done.session_id == "s1"
    assert done.metadata == {"status": "completed", "step": 4}
    failed = stream_end("s1", 2, error="boom")
    assert failed.message == "session=s1 status=error step=2 error=boom"
    assert failed.metadata["error"] == "boom"
    inv = invocation_end("s2", 7)
    assert inv.scope == INVOCATION_END_SCOPE == "__treadle_invocation_end__"
    assert inv.message == "session=s2 status=completed step=7"
    assert is_sentinel(done)
    assert is_sentinel(inv)
    assert not is_sentinel(DiagnosticEvent("other", "m"))
    # An LLM final chunk is not a sentinel, whatever its scope.
    assert not is_sentinel(LLMEvent("s", "n", None, "", True, LLM_FINAL_SCOPE))
    assert not is_sentinel(NodeEvent("n", 1, STREAM_END_SCOPE, "m"))
    assert Event.from_json(done.to_json_string()) == done


def test_isinstance_and_str() -> None:
    events: list[Event] = [
        NodeEvent("a", 1, "s", "hi"),
        DiagnosticEvent("d", "note"),
        LLMEvent(None, "w", "st", "tok", False, "chunk"),
    ]
    assert all(isinstance(e, Event) for e in events)
    assert [str(e) for e in events] == ["[a@1] s: hi", "(d) note", "[LLM st] chunk: tok"]
