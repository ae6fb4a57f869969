"""The step-table statements the SQL stores share, written once.

SQLite and PostgreSQL hold steps, session heads and message logs in the same tables. A store's
transaction subclasses :class:`SqlStepTx`, names its driver's placeholder, its row columns and its
upsert of a step, and says how its driver returns the stored name lists; each store writes its own
``append_messages`` (with :func:`message_runs`) and ``delete_steps``.

A session's message log is stored in *runs*: a row of ``messages`` holds ``count`` consecutive
messages from position ``seq`` on, as one JSON array. A step's write appends its own messages as
one small row; a state that starts with many messages is stored in rows of :data:`RUN` messages,
each encoded at once, instead of one row (one index entry, one key check) per message.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

from ..graph.state import Message
from .codec import Head, StepMeta, StepRow, dumps, messages_json

RUN: Final = 1000
"""The most messages one row of the message log holds. Reading positions ``[start, end)`` looks at
the rows whose ``seq`` lies in ``(start - RUN, end)`` only, so this bound is part of the format."""

ROW_COLUMNS = (
    "session_id, step, created_at, kind, base_step, root_step, messages_start, messages_len, "
    "ran_nodes, skipped_nodes, updated_channels, body"
)
"""The columns of a step row, in :class:`StepRow` order."""


class Connection(Protocol):
    """What both drivers' connections offer: ``execute`` returning an iterable cursor."""

    def execute(self, query: Any, params: Sequence[Any] = ..., /) -> Any: ...


C = TypeVar("C", bound=Connection)


class SqlStepTx(Generic[C]):
    """:class:`~.codec.StepTx` over one SQL connection, inside a transaction.

    Statements are written with ``?`` placeholders and rewritten once per subclass for its driver.
    """

    placeholder: ClassVar[str] = "?"
    select_columns: ClassVar[str] = ROW_COLUMNS
    """The step columns as read back (a store may cast one)."""
    runs_column: ClassVar[str] = "messages"
    """The message log's ``messages`` column as read back: JSON text."""
    put_row: ClassVar[str]
    """Insert or replace one step row: twelve placeholders, in :data:`ROW_COLUMNS` order."""

    _head: ClassVar[str]
    _rows: ClassVar[str]
    _metas: ClassVar[str]
    _dependents: ClassVar[str]
    _set_head: ClassVar[str]
    _runs: ClassVar[str]
    _trim: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)

        def sql(text: str) -> str:
            return text.replace("?", cls.placeholder)

        cls._head = sql("SELECT latest_step, token, log_end FROM sessions WHERE session_id = ?")
        cls._rows = sql(
            f"SELECT {cls.select_columns} FROM steps WHERE session_id = ? AND step BETWEEN ? AND ?"
        )
        cls._metas = sql(
            "SELECT step, created_at, base_step, messages_start FROM steps "
            "WHERE session_id = ? ORDER BY step"
        )
        cls._dependents = sql(
            f"SELECT {cls.select_columns} FROM steps "
            "WHERE session_id = ? AND step > ? AND base_step = ?"
        )
        cls._set_head = sql(
            "INSERT INTO sessions (session_id, latest_step, token, log_end, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET "
            "latest_step = excluded.latest_step, token = excluded.token, "
            "log_end = excluded.log_end, updated_at = excluded.updated_at"
        )
        cls._runs = sql(
            f"SELECT seq, count, {cls.runs_column} FROM messages "
            "WHERE session_id = ? AND seq > ? AND seq < ? ORDER BY seq"
        )
        # A run that reaches into the kept positions stays whole.
        cls._trim = sql(
            "DELETE FROM messages WHERE session_id = ? AND seq < ? AND seq + count <= ?"
        )

    def __init__(self, conn: C) -> None:
        self.conn = conn

    @staticmethod
    def names(stored: Any) -> tuple[str, ...]:
        """A name list (``ran_nodes`` and the like) as the driver returns it."""
        raise NotImplementedError

    def row(self, values: Sequence[Any]) -> StepRow:
        names = self.names
        return StepRow(
            session_id=values[0],
            step=values[1],
            created_at=values[2],
            kind=values[3],
            base_step=values[4],
            root_step=values[5],
            messages_start=values[6],
            messages_len=values[7],
            ran_nodes=names(values[8]),
            skipped_nodes=names(values[9]),
            updated_channels=names(values[10]),
            body=values[11],
        )

    def head(self, session_id: str) -> Head | None:
        found = self.conn.execute(self._head, (session_id,)).fetchone()
        return None if found is None else Head(found[0], found[1], found[2])

    def rows(self, session_id: str, lo: int, hi: int) -> dict[int, StepRow]:
        cursor = self.conn.execute(self._rows, (session_id, lo, hi))
        return {values[1]: self.row(values) for values in cursor}

    def metas(self, session_id: str) -> list[StepMeta]:
        return [StepMeta(*values) for values in self.conn.execute(self._metas, (session_id,))]

    def dependents(self, session_id: str, step: int) -> list[StepRow]:
        cursor = self.conn.execute(self._dependents, (session_id, step, step))
        return [self.row(values) for values in cursor]

    def put_rows(self, rows: Sequence[StepRow]) -> None:
        for r in rows:
            self.conn.execute(
                self.put_row,
                (
                    r.session_id,
                    r.step,
                    r.created_at,
                    r.kind,
                    r.base_step,
                    r.root_step,
                    r.messages_start,
                    r.messages_len,
                    dump_names(r.ran_nodes),
                    dump_names(r.skipped_nodes),
                    dump_names(r.updated_channels),
                    r.body,
                ),
            )

    def set_head(self, session_id: str, head: Head, *, updated_at: int) -> None:
        self.conn.execute(
            self._set_head,
            (session_id, head.latest_step, head.token, head.log_end, updated_at, updated_at),
        )

    def messages(self, session_id: str, start: int, count: int) -> list[dict[str, Any]]:
        if count == 0:
            return []
        end = start + count
        cursor = self.conn.execute(self._runs, (session_id, start - RUN, end))
        return slice_runs(start, end, cursor)

    def trim_messages(self, session_id: str, keep_from: int) -> None:
        self.conn.execute(self._trim, (session_id, keep_from, keep_from))


def message_runs(start: int, messages: Sequence[Message]) -> list[tuple[int, int, str]]:
    """``messages``, to be stored from log position ``start`` on, as rows of the message log:
    ``(seq, count, JSON array)``, each run of at most :data:`RUN` messages."""
    return [
        (start + i, len(run), messages_json(run))
        for i in range(0, len(messages), RUN)
        for run in (messages[i : i + RUN],)
    ]


def slice_runs(start: int, end: int, runs: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """The messages at positions ``[start, end)``, from the stored runs ``(seq, count, JSON
    text)`` that overlap them, in order. A missing run ends the list early (the caller compares
    its length with what the step holds)."""
    found: list[dict[str, Any]] = []
    for seq, count, text in runs:
        at = start + len(found)  # the next position wanted
        if seq + count <= at:
            continue
        if seq > at:
            break  # positions at..seq are missing
        found.extend(json.loads(text)[at - seq : end - seq])
    return found


@functools.lru_cache(maxsize=4096)
def dump_names(names: tuple[str, ...]) -> str:
    """A name list as stored JSON text. Steps keep naming the same few nodes and channels, so each
    tuple is encoded once."""
    return dumps(list(names))
