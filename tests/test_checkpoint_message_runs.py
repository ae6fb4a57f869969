"""The SQL stores keep a session's message log in runs: a row holds up to 1,000 consecutive messages
as one JSON array. A state that starts with many messages takes a few rows, a step that appends one
message still writes one small row, any range of the log reads back exactly, and a database written
by the one-row-per-message layout (SQLite schema 1, PostgreSQL schema 2) is upgraded when opened
and resumes where it was."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from test_checkpoint_storage import record

from treadle import Message, VersionedState
from treadle.runtime.checkpointers import PostgresCheckpointer, SQLiteCheckpointer
from treadle.runtime.checkpointers.codec import (
    StepCodec,
    _message_json,
    dumps,
    messages_json,
    save_steps,
)
from treadle.runtime.checkpointers.postgres import _PostgresTx, migrations
from treadle.runtime.checkpointers.sql import RUN, message_runs, slice_runs
from treadle.runtime.checkpointers.sqlite import _TABLES, _SQLiteTx

pytest_plugins = ["pg_fixtures"]

# Text a message log must keep exactly: quotes, escapes, non-ASCII, a NUL, a lone line break.
TRICKY = ['say "hi"', "back\\slash", "é ✓ 𝄞", "nul \u0000 here", "line\nbreak", ""]


def grown(state: VersionedState, *texts: str) -> VersionedState:
    return VersionedState(
        messages=[*state.messages, *(Message.assistant(text) for text in texts)],
        extra={**state.extra, "n": len(state.messages) + len(texts)},
        messages_version=state.messages_version + 1,
        extra_version=state.extra_version + 1,
    )


# -- encoding and slicing ----------------------------------------------------------------------------

messages_st = st.lists(
    st.builds(Message, st.text(min_size=1, max_size=8), st.text(max_size=12)), max_size=30
)


@given(messages_st)
def test_a_run_is_the_json_the_codec_writes_for_its_messages(messages: list[Message]) -> None:
    assert messages_json(messages) == dumps([_message_json(m) for m in messages])


@given(
    st.integers(min_value=0, max_value=60),
    st.lists(st.integers(min_value=1, max_value=7), max_size=12),
    st.data(),
)
def test_any_range_of_the_log_reads_back_from_its_runs(
    first: int, sizes: list[int], data: st.DataObject
) -> None:
    # The log from position `first` on, cut into runs of the drawn sizes.
    total = sum(sizes)
    log = [Message.user(f"m{first + i}") for i in range(total)]
    runs: list[tuple[int, int, str]] = []
    at = 0
    for size in sizes:
        runs.append((first + at, size, messages_json(log[at : at + size])))
        at += size
    start = data.draw(st.integers(min_value=first, max_value=first + total))
    end = data.draw(st.integers(min_value=start, max_value=first + total))
    want = [_message_json(m) for m in log[start - first : end - first]]
    assert slice_runs(start, end, runs) == want
    # A missing run ends the list where it is missing.
    if runs:
        gone = data.draw(st.integers(min_value=0, max_value=len(runs) - 1))
        seq, count, _ = runs[gone]
        kept = [run for i, run in enumerate(runs) if i != gone]
        found = slice_runs(start, end, kept)
        assert found == (want if seq + count <= start else want[: max(0, seq - start)])


def test_messages_go_in_runs_of_at_most_RUN() -> None:
    messages = [Message.user(str(i)) for i in range(2 * RUN + 5)]
    runs = message_runs(7, messages)
    assert [(seq, count) for seq, count, _ in runs] == [(7, RUN), (7 + RUN, RUN), (7 + 2 * RUN, 5)]
    assert message_runs(3, messages[:1]) == [(3, 1, '[{"role":"user","content":"0"}]')]


# -- the stores ----------------------------------------------------------------------------------------


def log_rows(kind: str, where: Any) -> list[tuple[int, int]]:
    """``(seq, count)`` of every row of the message log, in order."""
    sql = "SELECT seq, count FROM messages ORDER BY seq"
    if kind == "sqlite":
        conn = sqlite3.connect(where)
        try:
            return [tuple(row) for row in conn.execute(sql)]
        finally:
            conn.close()
    url, schema = where
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        return [tuple(row) for row in conn.execute(sql.encode())]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_big_initial_state_takes_a_few_rows_and_a_step_one_more(
    kind: str, make_backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    where: Any = tmp_path / "checkpoints.db"
    if kind == "postgres":
        where = (request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_schema"))
    first = VersionedState(
        messages=[Message.user(f"message {i} {TRICKY[i % len(TRICKY)]}") for i in range(2500)]
    )
    states = [first, grown(first, "one"), grown(grown(first, "one"), "two", "three")]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            store = make_backend(kind)
            await store.open(nursery)
            for step, state in enumerate(states):
                await store.save(record(step, state))
            assert log_rows(kind, where) == [
                (0, RUN),
                (RUN, RUN),
                (2 * RUN, 500),
                (2500, 1),
                (2501, 2),
            ]
            for step, state in enumerate(states):
                assert (await store.load("s", step)).state == state
            await store.aclose()

            again = make_backend(kind)  # a new process: nothing remembered
            await again.open(nursery)
            latest = await again.load_latest("s")
            assert latest is not None
            assert latest.state == states[-1]
            resumed = grown(latest.state, "four")
            await again.save(record(3, resumed))
            assert log_rows(kind, where)[-1] == (2503, 1)
            assert (await again.load("s", 3)).state == resumed
            await again.aclose()


# -- upgrades from one row per message -------------------------------------------------------------


def old_history() -> list[VersionedState]:
    state = VersionedState(messages=[Message.user(text) for text in TRICKY])
    states = [state]
    for text in ("a", "b \u0000", "c é"):
        states.append(grown(states[-1], text))
    return states


def write_old(tx: Any, states: Sequence[VersionedState]) -> None:
    """Store ``states`` as steps 0, 1, … the way the one-row-per-message layout did."""
    save_steps(StepCodec(), tx, [record(step, state) for step, state in enumerate(states)])


class _SchemaOneTx(_SQLiteTx):
    def append_messages(self, session_id: str, start: int, messages: Sequence[Message]) -> None:
        self.conn.executemany(
            "INSERT INTO messages (session_id, seq, role, content) VALUES (?,?,?,?)",
            [(session_id, start + i, m.role, m.content) for i, m in enumerate(messages)],
        )


class _SchemaTwoTx(_PostgresTx):
    def append_messages(self, session_id: str, start: int, messages: Sequence[Message]) -> None:
        for i, m in enumerate(messages):
            self.conn.execute(
                "INSERT INTO messages (session_id, seq, message) VALUES (%s, %s, %s::json)",
                (session_id, start + i, dumps(_message_json(m))),
            )


async def resume_after_upgrade(store: Any, states: Sequence[VersionedState]) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await store.open(nursery)
            for step, state in enumerate(states):
                assert (await store.load("s", step)).state == state
            latest = await store.load_latest("s")
            assert latest is not None
            assert latest.state == states[-1]
            resumed = grown(latest.state, "after the upgrade", "and more")
            await store.save(record(len(states), resumed))
            assert (await store.load("s", len(states))).state == resumed
            await store.aclose()


async def test_a_schema_1_sqlite_file_is_upgraded_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    for name in ("sessions", "steps"):
        spec = _TABLES[name]
        db.create_table(
            name,
            spec["columns"],
            pk=spec["pk"],
            not_null=spec["not_null"],
            foreign_keys=spec.get("foreign_keys", []),
        )
    conn.execute(
        "CREATE TABLE messages (session_id TEXT REFERENCES sessions(session_id), seq INTEGER, "
        "role TEXT NOT NULL, content TEXT NOT NULL, PRIMARY KEY (session_id, seq)) WITHOUT ROWID"
    )
    conn.execute("PRAGMA user_version=1")
    states = old_history()
    conn.execute("BEGIN")
    write_old(_SchemaOneTx(conn), states)
    conn.execute("COMMIT")
    conn.close()

    await resume_after_upgrade(SQLiteCheckpointer(path), states)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    n = len(TRICKY) + 3
    # Each old message became a run of one; the resumed step appended one run of two.
    assert conn.execute("SELECT seq, count FROM messages ORDER BY seq").fetchall() == [
        *((i, 1) for i in range(n)),
        (n, 2),
    ]
    conn.close()


@pytest.mark.postgres
async def test_a_schema_2_postgres_database_is_migrated_and_resumes(
    postgres_url: str, pg_schema: str
) -> None:
    states = old_history()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_schema}"'.encode())
        conn.execute(f'SET search_path TO "{pg_schema}"'.encode())
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for version, name, text in migrations():
            if version > 2:
                break
            conn.execute(text.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
        with conn.transaction():
            write_old(_SchemaTwoTx(conn), states)

    await resume_after_upgrade(PostgresCheckpointer(postgres_url, schema=pg_schema), states)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{pg_schema}"'.encode())
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        assert versions == [version for version, _, _ in migrations()]
        # Schema 4: no foreign keys, no (session_id, created_at) index.
        foreign = conn.execute(
            "SELECT conname FROM pg_constraint WHERE contype = 'f' "
            "AND connamespace = %s::regnamespace",
            (pg_schema,),
        ).fetchall()
        assert foreign == []
        indexes = [
            row[0]
            for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'steps'",
                (pg_schema,),
            )
        ]
        assert indexes == ["steps_pkey"]
        n = len(TRICKY) + 3
        rows = conn.execute("SELECT seq, count, messages::text FROM messages ORDER BY seq")
        found = [(seq, count) for seq, count, _ in rows]
        assert found == [*((i, 1) for i in range(n)), (n, 2)]
        # The SQL shown in the docs reads a message out of its run.
        content = conn.execute(
            "SELECT t.message->>'content' FROM messages m, "
            "json_array_elements(m.messages) WITH ORDINALITY AS t(message, i) "
            "WHERE m.session_id = 's' AND m.seq + t.i - 1 = %s",
            (len(TRICKY) + 2,),
        ).fetchone()
        assert content == ("c é",)
