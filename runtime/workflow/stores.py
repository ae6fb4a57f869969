"""Workflow state stores: per-task records (JSON file, SQLite, PostgreSQL) that make re-runs resume."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import attrs

from ..errors import CheckpointBackendError

log = logging.getLogger("treadle.workflow.store")

_STATUSES: Final = frozenset({"pending", "running", "completed", "failed", "skipped", "retrying"})


@attrs.frozen
class TaskRecord:
    """One task's stored state; ``result`` is a JSON value (meaningful when ``status`` is
    ``"completed"``, including falsy results such as ``0`` or ``None``)."""

    task_name: str
    status: str
    attempts: int = 0
    result: Any = None
    error: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    timestamp: str = attrs.field(factory=lambda: _now())


def _now() -> str:
    return datetime.now(UTC).isoformat()


def encode_result(task_name: str, value: Any) -> str:
    """``value`` as JSON text; a value JSON cannot hold exactly is an error naming the task."""
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the result of task {task_name!r} cannot be stored as JSON ({exc}); return JSON "
            "values (dict, list, str, int, float, bool, None) or run without a state store"
        ) from None


class StateStore:
    """Where a workflow keeps its tasks' records between runs, namespaced by workflow name.

    Subclasses implement :meth:`load`, :meth:`save` and :meth:`clear`; they are called from a
    worker thread, one call at a time per store.
    """

    def load(self, workflow: str) -> dict[str, TaskRecord]:
        raise NotImplementedError

    def save(self, workflow: str, record: TaskRecord) -> None:
        raise NotImplementedError

    def clear(self, workflow: str) -> None:
        """Forget every record of ``workflow`` (its next run starts from scratch)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; the store reopens on next use."""


def _record_from(name: str, raw: object) -> TaskRecord | None:
    if not isinstance(raw, dict) or raw.get("status") not in _STATUSES:
        return None
    attempts = raw.get("attempts", 0)
    return TaskRecord(
        task_name=name,
        status=raw["status"],
        attempts=attempts if isinstance(attempts, int) else 0,
        result=raw.get("result"),
        error=raw.get("error") if isinstance(raw.get("error"), str) else None,
        started_at=raw.get("started_at"),
        completed_at=raw.get("completed_at"),
        timestamp=str(raw.get("timestamp") or ""),
    )


class JSONStateStore(StateStore):
    """One human-readable JSON file: ``{"format": ..., "workflows": {name: {task: record}}}``.

    Every save rewrites the file atomically (a unique temporary file, fsync, rename). A file that
    cannot be parsed is reported (logged at ERROR, kept as ``<name>.corrupt``, and described in
    :attr:`corruption`) and treated as empty; a damaged entry is skipped the same way, so its task
    runs again.

    Args:
        file_path: The file (``store_path`` is accepted as FlowWeaver's documented name).
    """

    FORMAT: Final = "treadle-workflow-state-v1"

    def __init__(
        self, file_path: str | os.PathLike[str] = "workflow_state.json", **kwargs: Any
    ) -> None:
        path = kwargs.pop("store_path", file_path)
        kwargs.pop("pretty_print", None)
        if kwargs:
            raise TypeError(f"JSONStateStore got unexpected arguments: {', '.join(kwargs)}")
        self.file_path = Path(path)
        self.corruption: str | None = None
        self._lock = threading.Lock()
        self._data: dict[str, Any] | None = None

    @property
    def store_path(self) -> Path:
        return self.file_path

    def _read(self) -> dict[str, Any]:
        if self._data is not None:
            return self._data
        data: dict[str, Any] = {"format": self.FORMAT, "workflows": {}}
        try:
            text = self.file_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._data = data
            return data
        except (OSError, UnicodeDecodeError) as exc:
            self._corrupt(f"cannot be read ({exc})")
            self._data = data
            return data
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            self._corrupt(f"is not valid JSON ({exc})")
        else:
            if isinstance(parsed, dict) and isinstance(parsed.get("workflows"), dict):
                data = parsed
            else:
                self._corrupt("does not hold a treadle workflow state object")
        self._data = data
        return data

    def _corrupt(self, reason: str) -> None:
        backup = self.file_path.with_name(self.file_path.name + ".corrupt")
        try:
            self.file_path.replace(backup)
        except OSError:
            backup = self.file_path
        self.corruption = f"state file {str(self.file_path)!r} {reason}; kept as {str(backup)!r}"
        log.error("%s; treating it as empty, so every task runs again", self.corruption)

    def load(self, workflow: str) -> dict[str, TaskRecord]:
        with self._lock:
            self._data = None  # another process may have written since
            tasks = self._read()["workflows"].get(workflow)
            if not isinstance(tasks, dict):
                return {}
            records: dict[str, TaskRecord] = {}
            for name, raw in tasks.items():
                record = _record_from(name, raw)
                if record is None:
                    log.error(
                        "state file %r: the entry of task %r in workflow %r is damaged; "
                        "the task will run again",
                        str(self.file_path), name, workflow,
                    )  # fmt: skip
                    continue
                records[name] = record
            return records

    def save(self, workflow: str, record: TaskRecord) -> None:
        entry = attrs.asdict(record)
        del entry["task_name"]
        if record.status == "completed":
            json.loads(encode_result(record.task_name, record.result))  # reject non-JSON early
        with self._lock:
            data = self._read()
            data["workflows"].setdefault(workflow, {})[record.task_name] = entry
            self._write(data)

    def clear(self, workflow: str) -> None:
        with self._lock:
            self._data = None
            data = self._read()
            if data["workflows"].pop(workflow, None) is not None:
                self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        self.file_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.file_path.name + ".", dir=self.file_path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, ensure_ascii=False, allow_nan=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.file_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# -- SQL stores ---------------------------------------------------------------------------------

_COLUMNS: Final = (
    "workflow", "task_name", "status", "attempts", "result", "error", "started_at",
    "completed_at", "timestamp",
)  # fmt: skip

_DDL: Final = """
CREATE TABLE IF NOT EXISTS tasks (
    workflow TEXT NOT NULL,
    task_name TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    started_at TEXT,
    completed_at TEXT,
    timestamp TEXT NOT NULL,
    PRIMARY KEY (workflow, task_name)
)
"""

_UPSERT: Final = (
    f"INSERT INTO tasks ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT (workflow, task_name) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[2:])
)
_SELECT: Final = f"SELECT {', '.join(_COLUMNS[1:])} FROM tasks WHERE workflow = ?"
_DELETE: Final = "DELETE FROM tasks WHERE workflow = ?"


def _row(workflow: str, record: TaskRecord) -> tuple[Any, ...]:
    # The result column holds JSON text, so a stored ``None`` is the text 'null', never SQL NULL:
    # every falsy result survives.
    result = (
        encode_result(record.task_name, record.result) if record.status == "completed" else None
    )
    return (
        workflow, record.task_name, record.status, record.attempts, result, record.error,
        record.started_at, record.completed_at, record.timestamp,
    )  # fmt: skip


def _from_row(row: tuple[Any, ...]) -> TaskRecord | None:
    name, status, attempts, result, error, started, completed, stamp = row
    if status not in _STATUSES:
        return None
    try:
        value = json.loads(result) if result is not None else None
    except ValueError:
        return None
    return TaskRecord(
        task_name=name, status=status, attempts=attempts or 0, result=value, error=error,
        started_at=started, completed_at=completed, timestamp=stamp,
    )  # fmt: skip


def _records(rows: list[tuple[Any, ...]], where: str, workflow: str) -> dict[str, TaskRecord]:
    records: dict[str, TaskRecord] = {}
    for row in rows:
        record = _from_row(tuple(row))
        if record is None:
            log.error(
                "%s: the row of task %r in workflow %r is damaged; the task will run again",
                where, row[0], workflow,
            )  # fmt: skip
            continue
        records[record.task_name] = record
    return records


class SQLiteStateStore(StateStore):
    """A SQLite file with a ``tasks`` table (one row per workflow and task) operators can query.

    Args:
        db_path: The database file (``store_path`` is accepted as FlowWeaver's documented name).
    """

    def __init__(
        self, db_path: str | os.PathLike[str] = "workflow_state.db", **kwargs: Any
    ) -> None:
        path = kwargs.pop("store_path", db_path)
        if kwargs:
            raise TypeError(f"SQLiteStateStore got unexpected arguments: {', '.join(kwargs)}")
        self.db_path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @property
    def store_path(self) -> Path:
        return self.db_path

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                self.db_path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.db_path, timeout=30, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_DDL)
                conn.commit()
                self._conn = conn
            yield self._conn

    def load(self, workflow: str) -> dict[str, TaskRecord]:
        with self._connection() as conn:
            rows = conn.execute(_SELECT, (workflow,)).fetchall()
        return _records(rows, str(self.db_path), workflow)

    def save(self, workflow: str, record: TaskRecord) -> None:
        row = _row(workflow, record)
        with self._connection() as conn:
            conn.execute(_UPSERT, row)
            conn.commit()

    def clear(self, workflow: str) -> None:
        with self._connection() as conn:
            conn.execute(_DELETE, (workflow,))
            conn.commit()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class PostgresStateStore(StateStore):
    """The same ``tasks`` table in PostgreSQL (psycopg 3), for workflows run on several machines.

    Args:
        url: A ``postgresql://`` URL.
        schema: The schema holding the table (created if missing); ``None`` uses the search path.
    """

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self._lock = threading.Lock()
        self._conn: Any = None

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        try:
            import psycopg
        except ImportError:  # pragma: no cover - an optional dependency
            raise CheckpointBackendError(
                "postgres", "psycopg is not installed; pip install 'treadle[postgres]'"
            ) from None
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
                    if self.schema is not None:
                        ident = psycopg.sql.Identifier(self.schema)
                        conn.execute(
                            psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident)
                        )
                        conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(ident))
                    conn.execute(_DDL)
                    self._conn = conn
                yield self._conn
            except psycopg.OperationalError as exc:
                self._conn = None
                raise CheckpointBackendError(
                    "postgres", f"workflow state store at {_redact(self.url)} failed: {exc}"
                ) from exc

    def load(self, workflow: str) -> dict[str, TaskRecord]:
        with self._connection() as conn:
            rows = conn.execute(_SELECT.replace("?", "%s"), (workflow,)).fetchall()
        return _records(rows, _redact(self.url), workflow)

    def save(self, workflow: str, record: TaskRecord) -> None:
        row = _row(workflow, record)
        with self._connection() as conn:
            conn.execute(_UPSERT.replace("?", "%s"), row)

    def clear(self, workflow: str) -> None:
        with self._connection() as conn:
            conn.execute(_DELETE.replace("?", "%s"), (workflow,))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _redact(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, _ = head.partition("://")
    return f"{scheme}://…@{tail}"
