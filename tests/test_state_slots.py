"""Typed state slots: storage keys, round trips through the barrier, and the three error kinds."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from treadle.runtime.errors import (
    StateSlotDeserialize,
    StateSlotError,
    StateSlotMissing,
    StateSlotSerialize,
)
from treadle.runtime.execution.barrier import apply_barrier
from treadle.runtime.graph.frozen import FrozenDict
from treadle.runtime.graph.partial import NodePartial
from treadle.runtime.graph.reducers import ReducerRegistry
from treadle.runtime.graph.slots import StateKey
from treadle.runtime.graph.state import VersionedState


@attrs.frozen
class Portfolio:
    owner: str
    holdings: tuple[str, ...]


PORTFOLIO: StateKey[Portfolio] = StateKey(
    "wq",
    "portfolio",
    encode=lambda p: {"owner": p.owner, "holdings": list(p.holdings)},
    decode=lambda raw: Portfolio(raw["owner"], tuple(raw["holdings"])),
)
COUNT = StateKey("demo", "count", value_type=int)


def merge(state: VersionedState, partial: NodePartial) -> VersionedState:
    return apply_barrier(state, ["n"], [partial], ReducerRegistry.default())[0]


def test_storage_key_and_equality_ignore_the_codec() -> None:
    assert PORTFOLIO.storage_key == "wq:portfolio:v1"
    assert StateKey("wq", "portfolio", 2).storage_key == "wq:portfolio:v2"
    assert StateKey("wq", "portfolio") == PORTFOLIO
    assert StateKey("wq", "portfolio", 2) != PORTFOLIO
    assert hash(StateKey("wq", "portfolio")) == hash(PORTFOLIO)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "x"), "StateKey.namespace must be a non-empty string without ':'"),
        (("a:b", "x"), "StateKey.namespace must be a non-empty string without ':'"),
        (("a", 3), "StateKey.name must be a non-empty string without ':'"),
        (("a", "x", 0), "StateKey.version must be an int >= 1"),
    ],
)
def test_invalid_keys_are_rejected(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError) as info:
        StateKey(*args)
    assert message in str(info.value)


def test_codec_round_trip_through_the_barrier() -> None:
    value = Portfolio("ann", ("AAPL", "MSFT"))
    partial = NodePartial().with_typed_extra(PORTFOLIO, value)
    state = merge(VersionedState(), partial)
    assert state.extra["wq:portfolio:v1"] == {"owner": "ann", "holdings": ("AAPL", "MSFT")}
    snap = state.snapshot()
    assert snap.get_typed(PORTFOLIO) == value
    assert snap.require_typed(PORTFOLIO) == value
    assert state.require_typed(PORTFOLIO) == value


def test_with_typed_extra_returns_a_new_partial_and_keeps_other_writes() -> None:
    base = NodePartial(extra={"plain": 1})
    partial = base.with_typed_extra(COUNT, 3).with_typed_extra(COUNT, 4)
    assert base.extra == {"plain": 1}
    assert partial.extra == {"plain": 1, "demo:count:v1": 4}
    assert NodePartial().with_typed_extra(COUNT, 1).extra == {"demo:count:v1": 1}


def test_clearing_a_slot_deletes_it() -> None:
    state = merge(VersionedState(), NodePartial().with_typed_extra(COUNT, 1))
    assert state.get_typed(COUNT) == 1
    state = merge(state, NodePartial().clear_typed_extra(COUNT))
    assert state.get_typed(COUNT) is None
    assert "demo:count:v1" not in state.extra


def test_error_kinds_have_the_spec_spelling() -> None:
    assert StateSlotError.Missing is StateSlotMissing  # type: ignore[attr-defined]  # alias
    assert StateSlotError.Serialize is StateSlotSerialize  # type: ignore[attr-defined]  # alias
    assert StateSlotError.Deserialize is StateSlotDeserialize  # type: ignore[attr-defined]  # alias


def test_missing_slot() -> None:
    snap = VersionedState().snapshot()
    assert snap.get_typed(PORTFOLIO) is None
    with pytest.raises(StateSlotMissing) as info:
        snap.require_typed(PORTFOLIO)
    assert isinstance(info.value, StateSlotError)
    assert info.value.key == "wq:portfolio:v1"
    assert str(info.value) == "state slot 'wq:portfolio:v1': missing from extra"


def test_deserialize_error_names_the_key() -> None:
    snap = VersionedState(extra={"demo:count:v1": "seven", "wq:portfolio:v1": [1]}).snapshot()
    with pytest.raises(StateSlotDeserialize) as info:
        snap.get_typed(COUNT)
    assert info.value.key == "demo:count:v1"
    assert "invalid type: expected int, found str 'seven'" in str(info.value)
    with pytest.raises(StateSlotDeserialize) as info:
        snap.require_typed(PORTFOLIO)
    assert info.value.key == "wq:portfolio:v1"
    assert "TypeError" in str(info.value)


def test_booleans_are_not_ints() -> None:
    snap = VersionedState(extra={"demo:count:v1": True}).snapshot()
    with pytest.raises(StateSlotDeserialize):
        snap.get_typed(COUNT)


def test_serialize_error_names_the_key() -> None:
    bad_encode: StateKey[Portfolio] = StateKey("wq", "p", encode=lambda p: {"tags": {p.owner}})
    with pytest.raises(StateSlotSerialize) as info:
        NodePartial().with_typed_extra(bad_encode, Portfolio("ann", ()))
    assert info.value.key == "wq:p:v1"
    assert "extra['wq:p:v1']['tags'] is a set" in str(info.value)

    def explode(_: object) -> object:
        raise RuntimeError("cannot encode")

    raising: StateKey[int] = StateKey("wq", "q", encode=explode)
    with pytest.raises(StateSlotSerialize, match="RuntimeError: cannot encode"):
        NodePartial().with_typed_extra(raising, 1)
    with pytest.raises(StateSlotSerialize, match="is an object"):
        NodePartial().with_typed_extra(StateKey("wq", "r"), object())


def test_versions_of_a_name_are_separate_slots() -> None:
    v1, v2 = StateKey("s", "x", 1, value_type=int), StateKey("s", "x", 2, value_type=str)
    partial = NodePartial().with_typed_extra(v1, 1).with_typed_extra(v2, "one")
    snap = merge(VersionedState(), partial).snapshot()
    assert (snap.get_typed(v1), snap.get_typed(v2)) == (1, "one")


@given(st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3), max_size=4))
def test_dict_slots_come_back_frozen(value: dict[str, Any]) -> None:
    key = StateKey("h", "d", value_type=dict)
    snap = merge(VersionedState(), NodePartial().with_typed_extra(key, value)).snapshot()
    got = snap.require_typed(key)
    assert got == value
    assert type(got) is FrozenDict
