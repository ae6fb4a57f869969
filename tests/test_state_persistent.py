"""The message log and the extra map that steps change without copying: every view keeps exactly
the value it had when it was made, whatever is built from it (or from its ancestors) later.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from strategies import extra_keys, messages, node_partials, tricky_scalars, versioned_states

from treadle.runtime.checkpointers import SQLiteCheckpointer
from treadle.runtime.execution.barrier import apply_barrier
from treadle.runtime.graph.frozen import FrozenDict
from treadle.runtime.graph.persistent import DELETED, FrozenMap, Log
from treadle.runtime.graph.reducers import ReducerRegistry
from treadle.runtime.graph.state import Message, VersionedState

DEFAULT = ReducerRegistry.default()

# One operation on an earlier version: ("append", version index, items) or ("set", version
# index, {key: frozen value or DELETED}). The index is taken modulo the versions made so far, so
# later operations branch from old versions as often as from the newest.
small_values = st.one_of(
    tricky_scalars, st.tuples(st.integers(0, 3)), st.builds(FrozenDict, st.just({"x": 1}))
)
log_ops = st.lists(
    st.tuples(st.integers(0, 50), st.lists(st.integers(), max_size=4)), min_size=1, max_size=30
)
map_ops = st.lists(
    st.tuples(
        st.integers(0, 50),
        st.dictionaries(extra_keys, st.one_of(st.just(DELETED), small_values), max_size=3),
    ),
    min_size=1,
    max_size=30,
)


@given(st.lists(st.integers(), max_size=5), log_ops)
def test_a_log_view_never_sees_what_is_appended_after_it(
    start: list[int], ops: list[tuple[int, list[int]]]
) -> None:
    versions = [Log(start)]
    models = [tuple(start)]
    for index, items in ops:
        base = index % len(versions)
        versions.append(versions[base].extended(tuple(items)))
        models.append(models[base] + tuple(items))
    for log, model in zip(versions, models, strict=True):
        assert log == model
        assert tuple(log) == model
        assert len(log) == len(model)
        assert log[:] == model
        assert list(reversed(log)) == list(reversed(model))
        if model:
            assert log[-1] == model[-1]


@given(st.lists(st.integers(), max_size=5), log_ops)
def test_since_is_exactly_the_appended_items(
    start: list[int], ops: list[tuple[int, list[int]]]
) -> None:
    versions = [Log(start)]
    parents = [-1]
    for index, items in ops:
        base = index % len(versions)
        versions.append(versions[base].extended(tuple(items)))
        parents.append(base)
    for i in range(1, len(versions)):
        parent = versions[parents[i]]
        assert versions[i].since(parent) == tuple(versions[i])[len(parent) :]
        # A version that does not extend another is told apart from one that does.
        for other in versions:
            extends = tuple(versions[i])[: len(other)] == tuple(other)
            assert (versions[i].since(other) is not None) == extends


@given(st.dictionaries(extra_keys, small_values, max_size=4), map_ops)
def test_a_map_never_sees_what_is_set_after_it(
    start: dict[str, Any], ops: list[tuple[int, dict[str, Any]]]
) -> None:
    versions = [FrozenMap(start)]
    models = [dict(start)]
    parents = [-1]
    for index, changes in ops:
        base = index % len(versions)
        if index % 2 and all(value is not DELETED for value in changes.values()):
            versions.append(versions[base].assigned(dict(changes)))  # the set-only way
        else:
            versions.append(versions[base].updated(dict(changes)))
        model = dict(models[base])
        for key, value in changes.items():
            if value is DELETED:
                model.pop(key, None)
            else:
                model[key] = value
        models.append(model)
        parents.append(base)
    for i, (frozen, model) in enumerate(zip(versions, models, strict=True)):
        assert frozen == model
        assert dict(frozen.items()) == model
        assert len(frozen) == len(model)
        assert sorted(frozen) == sorted(model)
        if i:
            # changes_since() from the parent applies to the parent's model to give this one.
            changes = frozen.changes_since(versions[parents[i]])
            assert changes is not None
            rebuilt = dict(models[parents[i]])
            for key, value in changes.items():
                if value is DELETED:
                    rebuilt.pop(key, None)
                else:
                    rebuilt[key] = value
            assert rebuilt == model


@given(versioned_states, st.lists(st.lists(node_partials(), max_size=3), min_size=1, max_size=6))
def test_a_snapshot_taken_before_a_step_never_sees_its_writes(
    state: VersionedState, steps: list[list[Any]]
) -> None:
    """Barriers run one after another, each on the state the one before left; a snapshot taken at
    any point still reads, at the end, exactly what it read when it was taken."""
    taken: list[tuple[Any, dict[str, Any]]] = []
    for partials in steps:
        snapshot = state.snapshot()
        taken.append((snapshot, snapshot.to_json_value()))
        nodes = [f"n{i}" for i in range(len(partials))]
        try:
            state, _ = apply_barrier(state, nodes, partials, DEFAULT)
        except TypeError:
            continue  # a write that is not JSON: the step fails, the state stays
    for snapshot, seen in taken:
        assert snapshot.to_json_value() == seen


@given(versioned_states, st.lists(messages, min_size=1, max_size=3), st.integers(0, 3))
def test_a_step_run_again_from_an_older_state_does_not_disturb_the_newer_one(
    state: VersionedState, written: list[Message], repeats: int
) -> None:
    """A step whose save failed is run again from the state before it (a branch): the abandoned
    state and the new one keep their own messages."""
    from treadle.runtime.graph.partial import NodePartial

    first, _ = apply_barrier(state, ["a"], [NodePartial(messages=written)], DEFAULT)
    before = first.to_json_value()
    for i in range(repeats + 1):
        again, _ = apply_barrier(
            state, ["a"], [NodePartial(messages=[Message.user(f"again {i}")])], DEFAULT
        )
        assert again.messages[-1] == Message.user(f"again {i}")
        assert len(again.messages) == len(state.messages) + 1
    assert first.to_json_value() == before


def test_views_are_read_only() -> None:
    log = Log([1, 2])
    frozen = FrozenMap({"a": 1})
    with pytest.raises(TypeError):
        log[0] = 5  # type: ignore[index]  # deliberate misuse
    with pytest.raises(AttributeError):
        log.append(3)  # type: ignore[attr-defined]  # deliberate misuse
    for mutate in (
        lambda: frozen.__setitem__("a", 2),
        lambda: frozen.__delitem__("a"),
        lambda: frozen.update({"b": 1}),
        lambda: frozen.pop("a"),
        lambda: frozen.popitem(),
        lambda: frozen.clear(),
        lambda: frozen.setdefault("b", 1),
    ):
        with pytest.raises(TypeError, match="read-only") as raised:
            mutate()
        # The same map holds a session's versions_seen (a checkpoint hands it out): the message
        # names both uses, and how a node changes extra.
        assert "versions_seen" in str(raised.value)
        assert "NodePartial(extra=...)" in str(raised.value)
    # Calling the constructor again on an existing view changes nothing.
    log.__init__([9])  # type: ignore[misc]  # deliberate misuse
    frozen.__init__({"z": 9})  # type: ignore[misc]  # deliberate misuse
    assert log == (1, 2)
    assert frozen == {"a": 1}
    # += on a name makes a new log; the view it named is unchanged.
    other = log
    other += (3,)
    assert log == (1, 2)
    assert other == (1, 2, 3)


def test_logs_and_maps_read_like_tuples_and_dicts() -> None:
    log = Log([1, 2, 3])
    assert log == (1, 2, 3)
    assert log != (1, 2)
    assert log != [1, 2, 3]  # like a tuple
    assert hash(log) == hash((1, 2, 3))
    assert log[::-1] == (3, 2, 1)
    assert log[1:] == (2, 3)
    assert 2 in log
    assert log.index(3) == 2
    assert (0, *log) == (0, 1, 2, 3)
    assert (0,) + log == (0, 1, 2, 3)  # noqa: RUF005  # the reflected + is what is tested
    with pytest.raises(IndexError):
        log[3]
    frozen = FrozenMap({"a": 1, "b": (1, 2)})
    assert frozen == {"a": 1, "b": (1, 2)}
    assert {"a": 1, "b": (1, 2)} == frozen  # noqa: SIM300  # the reflected == is what is tested
    assert frozen != {"a": 1}
    assert {**frozen, "c": 3} == {"a": 1, "b": (1, 2), "c": 3}
    assert frozen | {"c": 3} == {"a": 1, "b": (1, 2), "c": 3}
    assert frozen.get("missing", 7) == 7
    for value in (log, frozen):
        assert copy.copy(value) is value
        assert copy.deepcopy(value) is value
        assert pickle.loads(pickle.dumps(value)) == value


def vandal_app(kept: list[tuple[Any, dict[str, Any]]], attempts: list[str]) -> Any:
    """Step 1 runs ``vandal`` and ``reader`` together; step 2 runs ``check``. Every node keeps its
    snapshot and what it read then; ``vandal`` tries every way to change its snapshot in place."""
    from treadle import END, START, GraphBuilder, NodePartial

    tried = trio.Event()

    def keep(snapshot: Any) -> None:
        kept.append((snapshot, snapshot.to_json_value()))

    async def vandal(snapshot: Any, ctx: Any) -> NodePartial:
        keep(snapshot)
        messages, extra = snapshot.messages, snapshot.extra
        for name, attempt in (
            ("messages[0] =", lambda: messages.__setitem__(0, Message.user("forged"))),
            ("messages.append", lambda: messages.append(Message.user("forged"))),
            ("messages.extend", lambda: messages.extend([Message.user("forged")])),
            ("extra[k] =", lambda: extra.__setitem__("k", 0)),
            ("extra.update", lambda: extra.update({"k": 0})),
            ("extra.pop", lambda: extra.pop("list")),
            ("nested dict", lambda: extra["nested"].__setitem__("x", 0)),
            ("nested list", lambda: extra["list"].append(0)),
            ("message field", lambda: setattr(messages[0], "content", "forged")),
        ):
            try:
                attempt()
            except (TypeError, AttributeError):
                attempts.append(name)
        messages += (Message.user("a local name only"),)
        tried.set()
        return NodePartial(messages=[Message.assistant("from vandal")])

    async def reader(snapshot: Any, ctx: Any) -> NodePartial:
        await tried.wait()  # read after every attempt was made
        keep(snapshot)
        return NodePartial(extra={"read": len(snapshot.messages)})

    async def check(snapshot: Any, ctx: Any) -> NodePartial:
        keep(snapshot)
        return NodePartial(extra={"checked": True})

    return (
        GraphBuilder()
        .add_node("vandal", vandal)
        .add_node("reader", reader)
        .add_node("check", check)
        .add_edge(START, "vandal")
        .add_edge(START, "reader")
        .add_edge("vandal", "check")
        .add_edge("reader", "check")
        .add_edge("check", END)
        .compile()
    )


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_node_cannot_change_what_another_node_sees(store: str, tmp_path: Path) -> None:
    from treadle import AppRunner

    kept: list[tuple[Any, dict[str, Any]]] = []
    attempts: list[str] = []
    options: dict[str, Any] = {"concurrency_limit": 2}
    if store == "sqlite":
        options["checkpointer"] = SQLiteCheckpointer(tmp_path / "c.db")
    initial = VersionedState(
        messages=[Message.user(f"m{i}") for i in range(50)],
        extra={"nested": {"x": 1}, "list": [1, 2]},
    )
    with trio.fail_after(30):
        async with AppRunner(vandal_app(kept, attempts), **options) as runner:
            await runner.create_session("s", initial)
            final = await runner.run_until_complete("s")
    assert len(attempts) == 9  # every attempt raised
    # Both nodes of step 1 saw the initial state, and still read exactly what they read then.
    assert [seen for _, seen in kept[:2]] == [initial.to_json_value()] * 2
    for snapshot, seen in kept:
        assert snapshot.to_json_value() == seen
    # Step 2 saw step 1's writes, and only those.
    step2 = kept[2][1]
    assert step2["messages"][50:] == [{"role": "assistant", "content": "from vandal"}]
    assert step2["extra"] == {"nested": {"x": 1}, "list": [1, 2], "read": 50}
    assert final.messages[:50] == initial.messages
    assert final.extra == {"nested": {"x": 1}, "list": (1, 2), "read": 50, "checked": True}
