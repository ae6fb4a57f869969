"""Property: any sequence of saves (appends, rewrites, extra writes and deletes, errors; next, same,
lower and skipped step numbers), prunes, deletes and reopenings leaves every durable backend
holding exactly what a dictionary model holds, value for value. For SQLite and PostgreSQL the
sequence also has group commits (``save_many``) and saves by a second store on the same database, so
that steps encoded ahead of their transaction (drafts) are sometimes stale and must be redone.

Real files and a real server, so plain ``trio.run`` (no mock clock) inside sync ``@given`` tests.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_fixtures import drop_schema, require_postgres_url

from treadle.runtime.checkpointers.checkpoint import Checkpoint
from treadle.runtime.checkpointers.json_files import JSONCheckpointer
from treadle.runtime.checkpointers.postgres import PostgresCheckpointer
from treadle.runtime.checkpointers.sqlite import SQLiteCheckpointer
from treadle.runtime.graph.state import ErrorEvent, ErrorScope, Message, VersionedState

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=5,
)
keys = st.sampled_from(["a", "b", "c", "ns:slot:v1", ""])
messages = st.lists(
    st.builds(Message, st.sampled_from(["user", "assistant", "tool", "x"]), st.text(max_size=10)),
    max_size=3,
)
mutations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), messages),
        st.tuples(st.just("rewrite"), messages),
        st.tuples(st.just("set"), keys, json_values),
        st.tuples(st.just("delete"), keys),
        st.tuples(st.just("error"), st.text(max_size=8)),
    ),
    max_size=4,
)
saves = st.tuples(
    st.just("save"),
    st.sampled_from(["next", "next", "next", "same", "lower", "gap"]),
    st.integers(0, 50),
    mutations,
)
housekeeping = (
    st.tuples(st.just("prune"), st.integers(0, 4))
    | st.tuples(st.just("reopen"))
    | st.tuples(st.just("delete"))
)
operations = st.lists(saves | housekeeping, min_size=1, max_size=14)
# Saves by another store on the same database, and several saves committed together.
shared_operations = st.lists(
    saves
    | housekeeping
    | st.tuples(st.just("other"), saves)
    | st.tuples(st.just("batch"), st.lists(saves, min_size=1, max_size=4)),
    min_size=1,
    max_size=14,
)


def mutate(state: VersionedState, changes: list[tuple[Any, ...]], step: int) -> VersionedState:
    msgs = list(state.messages)
    extra = dict(state.extra)
    errors = list(state.errors)
    for change in changes:
        match change:
            case ("append", new):
                msgs.extend(new)
            case ("rewrite", new):
                msgs = list(new)
            case ("set", key, value):
                extra[key] = value
            case ("delete", key):
                extra.pop(key, None)
            case ("error", text):
                errors.append(ErrorEvent(when=step, scope=ErrorScope.node("n", step), error=text))
    return VersionedState(
        messages=msgs,
        extra=extra,
        errors=errors,
        messages_version=state.messages_version + 1,
        extra_version=state.extra_version + 1,
        errors_version=state.errors_version + (len(errors) != len(state.errors)),
    )


def exact(cp: Checkpoint) -> str:
    return json.dumps(cp.to_json_value(), sort_keys=True)


async def check_all(store: Any, model: dict[int, Checkpoint]) -> None:
    assert [i.step for i in await store.list_steps("s")] == sorted(model)
    latest = await store.load_latest("s")
    if not model:
        assert latest is None
        return
    assert latest is not None
    assert exact(latest) == exact(model[max(model)])
    for step, cp in model.items():
        assert exact(await store.load("s", step)) == exact(cp)


async def play(make: Any, ops: list[tuple[Any, ...]]) -> None:
    async with trio.open_nursery() as nursery:  # where each store's connection thread runs
        await play_in(nursery, make, ops)


async def play_in(nursery: trio.Nursery, make: Any, ops: list[tuple[Any, ...]]) -> None:
    store = make()
    await store.open(nursery)
    model: dict[int, Checkpoint] = {}
    state = VersionedState()

    def checkpoint(save: tuple[Any, ...]) -> Checkpoint:
        # The next checkpoint a ("save", ...) operation describes; the model holds it once stored.
        nonlocal state
        _, how, pick, changes = save
        latest = max(model, default=-1)
        if how == "next" or latest < 0:
            step = latest + 1
        elif how == "same":
            step = latest
        elif how == "lower":
            step = pick % (latest + 1)
        else:
            step = latest + 3
        state = mutate(state, changes, step)
        cp = Checkpoint(
            session_id="s",
            step=step,
            state=state,
            frontier=(f"n{step % 3}",),
            versions_seen={"n": (state.messages_version, state.extra_version)},
            join_state={"j": ("n",)} if step % 2 else {},
            concurrency_limit=2,
            created_at=step,
            ran_nodes=("n",),
            updated_channels=("extra",),
        )
        model[step] = cp
        return cp

    try:
        for op in ops:
            match op:
                case ("save", *_):
                    await store.save(checkpoint(op))
                case ("other", save):
                    other = make()
                    await other.open(nursery)
                    try:
                        await other.save(checkpoint(save))
                    finally:
                        await other.aclose()
                case ("batch", batch):
                    await store.save_many([checkpoint(save) for save in batch])
                case ("prune", keep):
                    removed = await store.prune(keep_last=keep)
                    kept = sorted(model)[-max(keep, 1) :]
                    assert removed == len(model) - len(kept)
                    model = {step: model[step] for step in kept}
                case ("reopen",):
                    await store.aclose()
                    store = make()
                    await store.open(nursery)
                case ("delete",):
                    assert await store.delete_session("s") is bool(model)
                    model = {}
            latest = await store.load_latest("s")
            assert (latest.step if latest else None) == max(model, default=None)
        await check_all(store, model)
    finally:
        await store.aclose()


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(ops=shared_operations)
def test_sqlite_holds_exactly_what_was_saved(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        # A short chain limit so that snapshots, deltas and chain restarts all occur.
        trio.run(play, lambda: SQLiteCheckpointer(Path(folder) / "c.db", max_chain=3), ops)


@SETTINGS
@given(ops=operations)
def test_json_files_hold_exactly_what_was_saved(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        trio.run(play, lambda: JSONCheckpointer(Path(folder) / "c", max_chain=3), ops)


@pytest.mark.postgres
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=shared_operations)
def test_postgres_holds_exactly_what_was_saved(ops: list[tuple[Any, ...]]) -> None:
    url = require_postgres_url()
    schema = f"treadle_prop_{uuid.uuid4().hex[:12]}"
    try:
        trio.run(play, lambda: PostgresCheckpointer(url, schema=schema, max_chain=3), ops)
    finally:
        drop_schema(url, schema)
