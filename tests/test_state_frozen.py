"""FrozenDict, freeze and thaw: read-only everywhere, JSON-compatible, path-naming errors."""

from __future__ import annotations

import copy
import enum
import json
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import frozen_values, json_values

from treadle.runtime.graph.frozen import EMPTY, FrozenDict, freeze, strict_equal, thaw

MUTATORS: list[tuple[str, Callable[[FrozenDict], object]]] = [
    ("__setitem__", lambda d: d.__setitem__("a", 2)),
    ("__delitem__", lambda d: d.__delitem__("a")),
    ("update", lambda d: d.update({"z": 1})),
    ("update kwargs", lambda d: d.update(z=1)),
    ("pop", lambda d: d.pop("a")),
    ("pop default", lambda d: d.pop("missing", None)),
    ("popitem", lambda d: d.popitem()),
    ("clear", lambda d: d.clear()),
    ("setdefault", lambda d: d.setdefault("z", 1)),
    ("__init__ again", lambda d: d.__init__({"z": 1})),  # type: ignore[misc]  # deliberate misuse
]


@pytest.mark.parametrize(("name", "mutate"), MUTATORS, ids=[m[0] for m in MUTATORS])
def test_every_mutator_raises(name: str, mutate: Callable[[FrozenDict], object]) -> None:
    d = FrozenDict({"a": 1, "b": (1, 2)})
    with pytest.raises(TypeError, match="read-only"):
        mutate(d)
    assert d == {"a": 1, "b": (1, 2)}


def test_in_place_or_raises() -> None:
    d = FrozenDict({"a": 1})
    alias = d
    with pytest.raises(TypeError, match="read-only"):
        alias |= {"b": 2}
    assert d == {"a": 1}


def test_item_assignment_syntax_raises() -> None:
    d = freeze({"a": {"b": [1]}})
    assert isinstance(d, FrozenDict)
    with pytest.raises(TypeError, match="read-only"):
        d["a"]["b"] = 2
    with pytest.raises(TypeError, match="read-only"):
        del d["a"]


def test_constructor_freezes_values_and_repr_is_a_dicts() -> None:
    d = FrozenDict({"a": [1, {"b": [2]}]})
    assert type(d["a"]) is tuple
    assert type(d["a"][1]) is FrozenDict
    assert repr(d) == "{'a': (1, {'b': (2,)})}"
    assert FrozenDict([("x", 1)]) == {"x": 1}
    assert FrozenDict.fromkeys(["p", "q"]) == {"p": None, "q": None}
    assert type(FrozenDict.fromkeys(["p"])) is FrozenDict


def test_json_dumps_handles_it_natively() -> None:
    d = freeze({"a": [1, 2.5, None, True], "b": {"c": "x"}})
    assert json.loads(json.dumps(d)) == {"a": [1, 2.5, None, True], "b": {"c": "x"}}
    assert isinstance(d, dict)


def test_hashable_and_equal_to_plain_dicts() -> None:
    a = freeze({"x": [1, {"y": 2}]})
    b = freeze({"x": [1, {"y": 2}]})
    assert a == b
    assert hash(a) == hash(b)
    assert {a: 1}[b] == 1
    assert a == {"x": (1, {"y": 2})}


def test_copy_and_pickle_keep_it_frozen() -> None:
    d = freeze({"a": [1, {"b": 2}]})
    assert isinstance(d, FrozenDict)
    assert copy.copy(d) is d
    assert copy.deepcopy(d) is d
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(d, protocol=protocol))
        assert type(back) is FrozenDict
        assert back == d
        assert type(back["a"][1]) is FrozenDict
        with pytest.raises(TypeError):
            back["z"] = 1


def test_empty_is_frozen() -> None:
    assert EMPTY == {}
    with pytest.raises(TypeError):
        EMPTY["a"] = 1


def test_frozen_values_are_returned_as_is() -> None:
    d = freeze({"a": [1, 2]})
    assert isinstance(d, FrozenDict)
    assert freeze(d) is d
    inner = d["a"]
    assert freeze(inner) is inner
    s = "text"
    assert freeze(s) is s
    assert freeze(None) is None


def test_scalar_subclasses_become_plain_json() -> None:
    class Colour(enum.IntEnum):
        RED = 1

    class Name(enum.StrEnum):
        BOB = "bob"

    assert type(freeze(Colour.RED)) is int
    assert freeze(Colour.RED) == 1
    assert type(freeze(Name.BOB)) is str
    assert freeze(Name.BOB) == "bob"
    assert type(freeze(OrderedDict(a=1))) is FrozenDict


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [0, 1, {2, 3}]}, "extra['a'][2] is a set, which is not a JSON value"),
        ({"a": b"x"}, "extra['a'] is a bytes, which is not a JSON value"),
        ({"a": object()}, "extra['a'] is an object, which is not a JSON value"),
        ({"a": {"b": float("nan")}}, "extra['a']['b'] is nan, which is not a JSON value"),
        ({"a": [float("inf")]}, "extra['a'][0] is inf, which is not a JSON value"),
        ({"a": -float("inf")}, "extra['a'] is -inf, which is not a JSON value"),
        ({1: "x"}, "extra has the key 1 (int); JSON object keys must be strings"),
        ({"a": {(1, 2): "x"}}, "extra['a'] has the key (1, 2) (tuple)"),
        ({"a": frozenset()}, "extra['a'] is a frozenset"),
    ],
)
def test_freeze_rejects_non_json_naming_the_path(value: object, message: str) -> None:
    with pytest.raises(TypeError, match="^" + re.escape(message)):
        freeze(value, path="extra")


def test_default_path_is_value() -> None:
    with pytest.raises(TypeError, match=r"^value is a set"):
        freeze({1, 2})


@given(json_values())
def test_freeze_then_thaw_round_trips(value: Any) -> None:
    frozen = freeze(value)
    assert json.dumps(thaw(frozen)) == json.dumps(value)
    assert json.dumps(frozen) == json.dumps(value)
    assert freeze(thaw(frozen)) == frozen


@given(frozen_values())
def test_thaw_gives_independent_mutable_copies(value: Any) -> None:
    plain = thaw(value)
    again = thaw(value)
    if isinstance(plain, dict):
        plain["new"] = 1
        assert "new" not in again
        assert type(plain) is dict
    elif isinstance(plain, list):
        plain.append(1)
        assert len(again) == len(plain) - 1


@given(json_values(), json_values())
def test_strict_equal_matches_serialised_equality(a: Any, b: Any) -> None:
    fa, fb = freeze(a), freeze(b)
    same_json = json.dumps(fa, sort_keys=True) == json.dumps(fb, sort_keys=True)
    assert strict_equal(fa, fb) == same_json


@given(st.sampled_from([0, 0.0, -0.0, 1, 1.0, True, False]), st.sampled_from([0, 0.0, -0.0, 1]))
def test_strict_equal_tells_numbers_and_bools_apart(a: object, b: object) -> None:
    assert strict_equal(a, b) == (json.dumps(a) == json.dumps(b))
