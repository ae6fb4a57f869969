"""The SQLite checkpointer: one file in WAL mode with the full, delta-encoded step history."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlite_utils
import trio

from ..errors import CheckpointBackendError, CheckpointerError
from ..graph.state import Message
from .base import BatchingStore
from .checkpoint import Checkpoint, StepInfo
from .codec import (
    StepCodec,
    StepTx,
    dumps,
    load_step,
    prune_session,
)
from .connection import ConnectionThread
from .sql import ROW_COLUMNS, SqlStepTx, message_runs

T = TypeVar("T")

_BUSY_PAUSE = 0.02
"""Seconds between two tries to take a lock another process holds (also SQLite's own wait)."""

SCHEMA_VERSION = 2
"""Stored in ``PRAGMA user_version``; a file from a newer treadle is refused, not misread, and one
from an older treadle is upgraded when opened (:meth:`SQLiteCheckpointer._upgrade`)."""

_TABLES: dict[str, dict[str, Any]] = {
    "sessions": {
        "columns": {
            "session_id": str,
            "latest_step": int,
            "token": str,
            "log_end": int,
            "created_at": int,
            "updated_at": int,
        },
        "pk": "session_id",
        "not_null": ["latest_step", "token", "log_end", "created_at", "updated_at"],
    },
    "steps": {
        "columns": {
            "session_id": str,
            "step": int,
            "created_at": int,
            "kind": str,
            "base_step": int,
            "root_step": int,
            "messages_start": int,
            "messages_len": int,
            "ran_nodes": str,
            "skipped_nodes": str,
            "updated_channels": str,
            "body": str,
        },
        "pk": ("session_id", "step"),
        "not_null": [
            "created_at",
            "kind",
            "root_step",
            "messages_start",
            "messages_len",
            "ran_nodes",
            "skipped_nodes",
            "updated_channels",
            "body",
        ],
        "foreign_keys": [("session_id", "sessions", "session_id")],
    },
    # The message log in runs (see .sql): `count` messages from position `seq` on, as a JSON array.
    "messages": {
        "columns": {"session_id": str, "seq": int, "count": int, "messages": str},
        "pk": ("session_id", "seq"),
        "not_null": ["count", "messages"],
        "foreign_keys": [("session_id", "sessions", "session_id")],
    },
}


def _names(stored: Any) -> tuple[str, ...]:
    """A name list as stored: JSON text."""
    return tuple(json.loads(stored))


class _SQLiteTx(SqlStepTx[sqlite3.Connection]):
    """:class:`~.codec.StepTx` over one SQLite connection, inside a transaction.

    Statements go straight to the ``sqlite3`` connection: sqlite-utils' ``execute()`` adds
    bookkeeping for autocommit mode that a transaction never needs.
    """

    put_row = f"INSERT OR REPLACE INTO steps ({ROW_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    names = staticmethod(_names)

    def append_messages(self, session_id: str, start: int, messages: Sequence[Message]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO messages (session_id, seq, count, messages) VALUES (?,?,?,?)",
            [(session_id, *run) for run in message_runs(start, messages)],
        )

    def delete_steps(self, session_id: str, steps: Sequence[int]) -> None:
        self.conn.executemany(
            "DELETE FROM steps WHERE session_id = ? AND step = ?",
            [(session_id, step) for step in steps],
        )


class SQLiteCheckpointer(BatchingStore):
    """Checkpoints in one SQLite file: the full step history, delta-encoded.

    The file is in WAL mode; a committed step survives the process being killed at any instant
    (``synchronous="normal"``); use ``synchronous="full"`` to also survive power loss, at some cost
    per step. The connection lives in its own worker thread (:class:`.ConnectionThread`: one
    ``trio.to_thread`` call behind a ``CapacityLimiter(1)``), which serves calls one at a time.
    Several processes may share a file (writes are serialised by SQLite's lock); of two running one
    session, the second fails at its first step with ``ConcurrencyConflict``, since every save
    states the step it builds on (PostgreSQL refuses it even earlier, by a lease).

    Args:
        path: The database file (``":memory:"`` for a private in-memory database).
        synchronous: SQLite's ``synchronous`` setting: ``"normal"`` or ``"full"``.
        max_chain: The most deltas stored between two snapshots of a session (``None``: 64,
            or one per KiB of the snapshot when that is more; see :class:`StepCodec`).
        busy_timeout: Seconds to wait for another process's write lock before failing.
    """

    backend = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["normal", "full"] = "normal",
        max_chain: int | None = None,
        busy_timeout: float = 10.0,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self._codec = StepCodec(max_chain=max_chain)
        self._thread: ConnectionThread[sqlite_utils.Database] | None = None
        self._db: sqlite_utils.Database | None = None
        self._interrupted = threading.Event()

    def __repr__(self) -> str:
        return f"SQLiteCheckpointer({str(self.path)!r})"

    # -- plumbing ----------------------------------------------------------------------------------

    def _not_open(self) -> CheckpointerError:
        return CheckpointerError(
            f"the SQLite checkpointer for {self.path} is not open: call open() first"
        )

    def _require_db(self) -> sqlite_utils.Database:
        if self._db is None:
            raise self._not_open()
        return self._db

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[_SQLiteTx]:
        db = self._require_db()
        try:
            self._begin(db.conn, "BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SQLiteTx(db.conn)
            except BaseException:
                db.conn.execute("ROLLBACK")
                raise
            db.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise CheckpointBackendError("sqlite", f"{self.path}: {exc}") from exc

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self, nursery: trio.Nursery) -> None:
        """Open (or create) the file in a new connection thread, which runs in ``nursery``."""
        if self._thread is not None:
            return
        thread = ConnectionThread(
            "treadle-sqlite",
            self._open_sync,
            sqlite_utils.Database.close,
            interrupt=self._interrupt,
        )
        self._db = await nursery.start(thread.run)
        self._thread = thread

    def _begin(self, conn: sqlite3.Connection, statement: str) -> None:
        """Start a transaction, waiting at most ``busy_timeout`` for another process's lock.

        The wait is a loop of short tries rather than SQLite's own busy handler, so that a
        cancelled call (:meth:`_interrupt`) ends it at once.
        """
        deadline = time.monotonic() + self.busy_timeout
        try:
            while True:
                try:
                    conn.execute(statement)
                    return
                except sqlite3.OperationalError as exc:
                    locked = "locked" in str(exc) or "busy" in str(exc)
                    if not locked or self._interrupted.is_set() or time.monotonic() >= deadline:
                        raise
                self._interrupted.wait(_BUSY_PAUSE)
        finally:
            self._interrupted.clear()

    def _interrupt(self) -> None:
        # Called from the Trio thread when a call is cancelled: a wait for another process's
        # lock stops at its next try, and a statement in progress fails at once (sqlite3's
        # interrupt() is the one call made for another thread).
        self._interrupted.set()
        db = self._db
        if db is not None:
            db.conn.interrupt()

    def _open_sync(self) -> sqlite_utils.Database:
        where = str(self.path)
        if where != ":memory:" and not self.path.parent.is_dir():
            raise CheckpointBackendError(
                "sqlite",
                f"cannot open {where}: the directory {self.path.parent} does not exist; "
                "create it or choose another path",
            )
        try:
            # Opened, used and closed in its connection thread only: sqlite3's same-thread check holds.
            conn = sqlite3.connect(where, isolation_level=None, timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            raise CheckpointBackendError("sqlite", f"cannot open {where}: {exc}") from exc
        try:
            db = sqlite_utils.Database(conn, execute_plugins=False)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CheckpointBackendError(
                    "sqlite",
                    f"{where} was written by a newer treadle (schema {version}, this one knows "
                    f"{SCHEMA_VERSION}); upgrade treadle to read it",
                )
            if where != ":memory:":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            db.execute("PRAGMA foreign_keys=ON")
            # Under the write lock, the version read again: of two processes opening an old file,
            # one upgrades it and the other then finds it upgraded.
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version < SCHEMA_VERSION and db.table("messages").exists():
                    self._upgrade(db, version)
                for name, spec in _TABLES.items():
                    self._create_table(db, name, spec)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            # Lock waits from now on are _begin()'s short tries (opening used SQLite's own wait).
            db.execute(f"PRAGMA busy_timeout={round(_BUSY_PAUSE * 1000)}")
        except CheckpointBackendError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise CheckpointBackendError(
                "sqlite", f"cannot open {where}: {exc}; is it an SQLite database?"
            ) from exc
        return db

    def _upgrade(self, db: sqlite_utils.Database, version: int) -> None:
        """Bring a file written at schema ``version`` to the current layout, inside the caller's
        transaction.

        Schema 1 stored one message per row of ``messages`` (``role``, ``content``); each becomes
        a run of one, which reads back the same.
        """
        if version >= 2:
            return
        conn = db.conn
        conn.execute("ALTER TABLE messages RENAME TO messages_v1")
        self._create_table(db, "messages", _TABLES["messages"])
        rows = conn.execute("SELECT session_id, seq, role, content FROM messages_v1")
        while batch := rows.fetchmany(10_000):
            conn.executemany(
                "INSERT INTO messages (session_id, seq, count, messages) VALUES (?,?,1,?)",
                [
                    (session_id, seq, dumps([{"role": role, "content": content}]))
                    for session_id, seq, role, content in batch
                ],
            )
        conn.execute("DROP TABLE messages_v1")

    def _create_table(self, db: sqlite_utils.Database, name: str, spec: Mapping[str, Any]) -> None:
        table = db.table(name)
        if table.exists():
            missing = set(spec["columns"]) - set(table.columns_dict)
            if missing:
                raise CheckpointBackendError(
                    "sqlite",
                    f"{self.path} has a table {name!r} that treadle did not create (it lacks "
                    f"{', '.join(sorted(missing))}); use another file",
                )
            return
        sql = db.create_table_sql(
            name,
            spec["columns"],
            pk=spec["pk"],
            not_null=spec["not_null"],
            foreign_keys=spec.get("foreign_keys", []),
        ).rstrip()
        # WITHOUT ROWID: the primary key is the table, so a step's commit touches one page of
        # each table instead of the table and its key index (half the WAL traffic).
        db.execute(sql.removesuffix(";") + " WITHOUT ROWID")

    async def aclose(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            await thread.aclose()  # the thread closes the connection
        self._db = None
        self._codec.forget()

    # -- writes ------------------------------------------------------------------------------------

    def _write_transaction(self, session_ids: Sequence[str]) -> AbstractContextManager[StepTx]:
        return self._transaction(write=True)

    # -- reads -------------------------------------------------------------------------------------

    def _load_sync(self, session_id: str, step: int | None) -> Checkpoint | None:
        with self._transaction(write=False) as tx:
            return load_step(self._codec, tx, session_id, step)

    def _list_sessions_sync(self) -> list[str]:
        db = self._require_db()
        rows = db.execute("SELECT session_id FROM sessions ORDER BY session_id").fetchall()
        return [row[0] for row in rows]

    def _list_steps_sync(self, session_id: str) -> list[StepInfo]:
        db = self._require_db()
        cursor = db.execute(
            "SELECT step, created_at, ran_nodes, skipped_nodes, updated_channels FROM steps "
            "WHERE session_id = ? ORDER BY step",
            (session_id,),
        )
        return [
            StepInfo(session_id, step, created, _names(ran), _names(skipped), _names(updated))
            for step, created, ran, skipped, updated in cursor
        ]

    # -- maintenance -------------------------------------------------------------------------------

    def _delete_sync(self, session_id: str) -> bool:
        self._codec.forget(session_id)
        with self._transaction(write=True) as tx:
            conn = tx.conn
            conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM steps WHERE session_id = ?", (session_id,))
            cursor = conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
            return bool(cursor.rowcount)

    def _prune_sync(self, session_id: str | None, cutoff: int | None, keep_last: int | None) -> int:
        sessions = [session_id] if session_id is not None else self._list_sessions_sync()
        removed = 0
        for sid in sessions:
            with self._transaction(write=True) as tx:
                removed += prune_session(
                    self._codec, tx, sid, cutoff_ms=cutoff, keep_last=keep_last
                )
        return removed

    # -- inspection --------------------------------------------------------------------------------

    def _storage_sync(self) -> dict[str, int]:
        db = self._require_db()
        return {name: db.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in _TABLES}

    async def row_counts(self) -> dict[str, int]:
        """How many rows each table holds (``sessions``, ``steps``, ``messages``)."""
        return await self._run(self._storage_sync)
