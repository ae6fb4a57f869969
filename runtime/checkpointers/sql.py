"""The step-table statements the SQL stores share, written once.

SQLite and PostgreSQL hold steps and session heads in the same tables. A store's transaction
subclasses :class:`SqlStepTx`, names its driver's placeholder, its row columns and its upsert of a
step, and says how its driver returns the stored name lists. The message log differs between the
two schemas, so each store writes its own ``append_messages``, ``messages`` and ``delete_steps``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from .codec import Head, StepMeta, StepRow, dumps

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
    put_row: ClassVar[str]
    """Insert or replace one step row: twelve placeholders, in :data:`ROW_COLUMNS` order."""

    _head: ClassVar[str]
    _rows: ClassVar[str]
    _metas: ClassVar[str]
    _dependents: ClassVar[str]
    _set_head: ClassVar[str]
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
        cls._trim = sql("DELETE FROM messages WHERE session_id = ? AND seq < ?")

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

    def trim_messages(self, session_id: str, keep_from: int) -> None:
        self.conn.execute(self._trim, (session_id, keep_from))


@functools.lru_cache(maxsize=4096)
def dump_names(names: tuple[str, ...]) -> str:
    """A name list as stored JSON text. Steps keep naming the same few nodes and channels, so each
    tuple is encoded once."""
    return dumps(list(names))
