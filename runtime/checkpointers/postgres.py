"""The PostgreSQL checkpointer: versioned migrations, JSONB rows, the delta-encoded step history, and
session leases so that two processes never run one session.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from importlib import resources
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import outcome
import trio

from ..errors import (
    CheckpointBackendError,
    CheckpointerError,
    SessionLeased,
)
from ..graph.state import Message
from .base import BatchingStore
from .checkpoint import UNCHECKED, Checkpoint, Expected, StepInfo, mask_url
from .codec import (
    Draft,
    StepCodec,
    draft_steps,
    dumps,
    load_step,
    messages_json,
    prune_session,
)
from .connection import ConnectionThread
from .pg_statement import BIGINT, FLOAT8, TEXT, PreparedStatement, execute_together
from .sql import ROW_COLUMNS, RUN, SqlStepTx, dump_names, message_runs

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("treadle.checkpointer")

T = TypeVar("T")


def _driver() -> ModuleType:
    """psycopg, imported on first use: it is an optional dependency (``treadle[postgres]``)."""
    try:
        import psycopg
    except ImportError as exc:
        raise CheckpointBackendError(
            "postgres", "the psycopg driver is not installed: pip install 'treadle[postgres]'"
        ) from exc
    return psycopg


def _db_error() -> type[Exception]:
    error: type[Exception] = _driver().Error
    return error


def _sql(template: str, *names: str) -> Any:
    """``template`` with ``{}`` slots filled by quoted identifiers."""
    from psycopg import sql

    return sql.SQL(template).format(*(sql.Identifier(name) for name in names))


_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_PUT_ROW = (
    f"INSERT INTO steps ({ROW_COLUMNS}) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s::json) "
    "ON CONFLICT (session_id, step) DO UPDATE SET created_at = EXCLUDED.created_at, "
    "kind = EXCLUDED.kind, base_step = EXCLUDED.base_step, root_step = EXCLUDED.root_step, "
    "messages_start = EXCLUDED.messages_start, messages_len = EXCLUDED.messages_len, "
    "ran_nodes = EXCLUDED.ran_nodes, skipped_nodes = EXCLUDED.skipped_nodes, "
    "updated_channels = EXCLUDED.updated_channels, body = EXCLUDED.body"
)
# The message log's rows (runs of messages, see .sql) travel as one JSON array of runs that the
# server splits: one parameter whatever the count (a new session may hold 100,000 messages). Every
# run but the last holds RUN messages. Positions from the head's log_end on are never stored (a
# write that did not commit left nothing, and deleting a session deletes its log), so a plain
# insert is enough.
_RUN_ROWS = (
    f"SELECT %(start)s + (t.i - 1) * {RUN}, least({RUN}, %(count)s - (t.i - 1) * {RUN})::int, "
    "t.run FROM json_array_elements(%(runs)s::json) WITH ORDINALITY AS t(run, i)"
)
_APPEND_MESSAGES = (
    "INSERT INTO messages (session_id, seq, count, messages) "
    f"SELECT %(session_id)s, r.* FROM ({_RUN_ROWS}) AS r"
)
# A drafted step in one statement: take the session's write lock, move the head from the draft's
# base to the step (a compare-and-set on the session row, rechecked on the row's newest version if
# another writer changed it meanwhile), append its messages and insert its row, each only if the
# head moved. If the stored head is no longer the draft's base, the step row's session_id comes out
# NULL and the NOT NULL constraint fails the statement, and so the transaction: nothing is written,
# and the step is stored the long way (read, then write).
_DRAFT_HEAD = (
    "WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock(%(lock)s)), "
    "head AS (UPDATE sessions SET latest_step = %(step)s, token = %(token)s, "
    "log_end = %(log_end)s, updated_at = %(created_at)s FROM lock "
    "WHERE session_id = %(session_id)s "
    "AND latest_step = %(base_step)s AND token = %(base_token)s AND log_end = %(start)s "
    "RETURNING session_id)"
)
_DRAFT_LOG = (
    ", log AS (INSERT INTO messages (session_id, seq, count, messages) "
    f"SELECT head.session_id, r.* FROM head, ({_RUN_ROWS}) AS r)"
)
_DRAFT_RUN = (
    ", log AS (INSERT INTO messages (session_id, seq, count, messages) "
    "SELECT head.session_id, %(start)s, %(count)s::int, %(run)s::json FROM head)"
)
_DRAFT_ROW = (
    f" INSERT INTO steps ({ROW_COLUMNS}) "
    "SELECT head.session_id, %(step)s, %(created_at)s, %(kind)s, %(row_base_step)s, "
    "%(root_step)s, %(messages_start)s, %(messages_len)s, %(ran_nodes)s::jsonb, "
    "%(skipped_nodes)s::jsonb, %(updated_channels)s::jsonb, %(body)s::json "
    "FROM (VALUES (1)) AS one LEFT JOIN head ON true "
    "ON CONFLICT (session_id, step) DO UPDATE SET created_at = EXCLUDED.created_at, "
    "kind = EXCLUDED.kind, base_step = EXCLUDED.base_step, root_step = EXCLUDED.root_step, "
    "messages_start = EXCLUDED.messages_start, messages_len = EXCLUDED.messages_len, "
    "ran_nodes = EXCLUDED.ran_nodes, skipped_nodes = EXCLUDED.skipped_nodes, "
    "updated_channels = EXCLUDED.updated_channels, body = EXCLUDED.body"
)
# The first step of a session not stored yet: the head is created instead of moved. If the session
# has a head meanwhile, nothing is inserted, and the step row's session_id comes out NULL as above.
_DRAFT_NEW_HEAD = (
    "WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock(%(lock)s)), "
    "head AS (INSERT INTO sessions (session_id, latest_step, token, log_end, created_at, "
    "updated_at) SELECT %(session_id)s, %(step)s, %(token)s, %(log_end)s, %(created_at)s, "
    "%(created_at)s FROM lock ON CONFLICT (session_id) DO NOTHING RETURNING session_id)"
)
_PUT_DRAFT = _DRAFT_HEAD + _DRAFT_LOG + _DRAFT_ROW
_PUT_DRAFT_RUN = _DRAFT_HEAD + _DRAFT_RUN + _DRAFT_ROW
""":data:`_PUT_DRAFT` for a step that appends at most :data:`RUN` messages: one row of the log, its
JSON array sent as it is stored instead of an array of runs for the server to split."""
_PUT_DRAFT_NO_LOG = _DRAFT_HEAD + _DRAFT_ROW
""":data:`_PUT_DRAFT` for a step that appends no messages: no JSON to parse, no empty insert."""


def _draft_statement(draft: Draft) -> str:
    """Which statement stores ``draft``: the name of its prepared form, a key of
    :data:`_DRAFT_STATEMENTS` (the cheapest that holds the messages it appends; one that creates
    the head for a new session's first step)."""
    count = len(draft.encoded.log_messages)
    verb = "put" if draft.base is not None else "new"
    if not count:
        return f"treadle_{verb}_step"
    return f"treadle_{verb}_run" if count <= RUN else f"treadle_{verb}_draft"


_DRAFT_STATEMENTS: Final = {
    "treadle_put_step": _PUT_DRAFT_NO_LOG,
    "treadle_put_run": _PUT_DRAFT_RUN,
    "treadle_put_draft": _PUT_DRAFT,
    "treadle_new_step": _DRAFT_NEW_HEAD + _DRAFT_ROW,
    "treadle_new_run": _DRAFT_NEW_HEAD + _DRAFT_RUN + _DRAFT_ROW,
    "treadle_new_draft": _DRAFT_NEW_HEAD + _DRAFT_LOG + _DRAFT_ROW,
}


_PUT_DRAFT_TYPES: Final = {
    **dict.fromkeys(
        (
            "session_id", "token", "base_token", "run", "runs", "kind",
            "ran_nodes", "skipped_nodes", "updated_channels", "body",
        ),
        TEXT,
    ),
    **dict.fromkeys(
        (
            "lock", "step", "log_end", "created_at", "base_step", "start", "count",
            "row_base_step", "root_step", "messages_start", "messages_len",
        ),
        BIGINT,
    ),
}  # fmt: skip
"""The parameters of :data:`_PUT_DRAFT` with their types, for running it as a prepared statement."""


def _draft_params(cp: Checkpoint, draft: Draft, lock: int) -> dict[str, int | str | None]:
    """The parameters of :data:`_PUT_DRAFT` that store ``cp`` as drafted, under the write lock
    ``lock``."""
    encoded, row = draft.encoded, draft.encoded.row
    count = len(encoded.log_messages)
    return {
        "lock": lock,
        "session_id": cp.session_id,
        "step": cp.step,
        "token": draft.token,
        "log_end": draft.log_end + len(encoded.log_messages),
        "created_at": cp.created_at,
        "base_step": draft.base.step if draft.base is not None else None,
        "base_token": draft.base.token if draft.base is not None else None,
        "start": draft.log_end,
        "count": count,
        "run": messages_json(encoded.log_messages) if 0 < count <= RUN else None,
        "runs": _runs_json(draft.log_end, encoded.log_messages) if count > RUN else None,
        "kind": row.kind,
        "row_base_step": row.base_step,
        "root_step": row.root_step,
        "messages_start": row.messages_start,
        "messages_len": row.messages_len,
        "ran_nodes": dump_names(row.ran_nodes),
        "skipped_nodes": dump_names(row.skipped_nodes),
        "updated_channels": dump_names(row.updated_channels),
        "body": row.body,
    }


def _runs_json(start: int, messages: Sequence[Message]) -> str:
    """The message log's new rows from ``start`` on, as the JSON array :data:`_RUN_ROWS` splits."""
    return "[" + ",".join(text for _, _, text in message_runs(start, messages)) + "]"


_BEGIN_SNAPSHOT: Final = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
# A lease's row, as taken or renewed by its owner (the tail of an INSERT on session_leases).
_LEASE_ROW: Final = (
    "(session_id, owner, expires_at) "
    "SELECT %(session_id)s, %(owner)s, now() + make_interval(secs => %(ttl)s) {} "
    "ON CONFLICT (session_id) DO UPDATE SET owner = EXCLUDED.owner, "
    "acquired_at = now(), heartbeat_at = now(), expires_at = EXCLUDED.expires_at"
)
# Take a session's lease: its session lock, and its row only if the lock was free. Returns whether
# the lock was got and, if not, who holds the lease (read before the statement's own write: a WITH's
# writes are not visible to the statement's reads).
_TAKE_LEASE: Final = (
    "WITH got AS MATERIALIZED (SELECT pg_try_advisory_lock(%(key)s) AS ok), "
    "taken AS (INSERT INTO session_leases " + _LEASE_ROW.format("FROM got WHERE got.ok") + ") "
    "SELECT got.ok, (SELECT owner FROM session_leases WHERE session_id = %(session_id)s) FROM got"
)

_IS_STORED: Final = "SELECT EXISTS (SELECT 1 FROM sessions WHERE session_id = %(session_id)s)"
# A session lock that a failed _TAKE_LEASE may have got (see _drop_session_lock).
_DROP_LOCK: Final = "SELECT pg_advisory_unlock(%(key)s)"
# Give up session locks (leases), their keys a JSON array: one parameter however many there are.
_DROP_LOCKS: Final = (
    "SELECT count(pg_advisory_unlock(key::bigint)) "
    "FROM json_array_elements_text(%(keys)s::json) AS key"
)
# Give up leases: their rows and their session locks (a runner closing gives up all of its
# leases at once). When the rows cannot be deleted the statement fails; PostgreSQL 15 has run the
# unlocks by then (a WITH's DELETE is finished after the main query), an order its manual does not
# promise, so _DROP_LOCKS is then sent as well.
_GIVE_UP_LEASES: Final = (
    "WITH gone AS (DELETE FROM session_leases WHERE owner = %(owner)s AND session_id IN "
    "(SELECT json_array_elements_text(%(session_ids)s::json))) " + _DROP_LOCKS
)
_LEASE_TYPES: Final = {
    "key": BIGINT,
    "session_id": TEXT,
    "owner": TEXT,
    "ttl": FLOAT8,
    "session_ids": TEXT,
    "keys": TEXT,
}


def _drop_session_lock(
    conn: psycopg.Connection[tuple[Any, ...]], params: Mapping[str, object]
) -> None:
    """Give up the session lock of a :data:`_TAKE_LEASE` (run with ``params``) that failed: it
    may have got the lock before failing (waiting on the lease row past ``lock_timeout``, or
    cancelled), and a session-level lock outlives its statement and its transaction. A no-op if it
    was not got (the server only warns); best effort, as closing the connection frees it anyway."""
    with contextlib.suppress(Exception):
        if not conn.closed and not conn.broken:
            conn.execute(_DROP_LOCK, params)


def _by_session(pair: tuple[Checkpoint, Draft]) -> str:
    return pair[0].session_id


def _is_head_moved(exc: BaseException) -> bool:
    """Whether ``exc`` is :data:`_PUT_DRAFT`'s refusal (the step row's session_id left NULL)."""
    diag = getattr(exc, "diag", None)
    return (
        getattr(exc, "sqlstate", None) == "23502"
        and diag is not None
        and diag.table_name == "steps"
        and diag.column_name == "session_id"
    )


def migrations() -> list[tuple[int, str, str]]:
    """The shipped migrations as ``(version, file name, SQL)``, in order."""
    folder = resources.files(__package__ or "treadle.runtime.checkpointers").joinpath(
        "migrations/postgres"
    )
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


@functools.lru_cache(maxsize=4096)  # a sync step asks for its session's key once per step
def _lock_key(kind: str, schema: str, name: str) -> int:
    """A signed 64-bit advisory-lock key; 64 bits make collisions between sessions negligible."""
    digest = hashlib.blake2b(f"treadle\0{kind}\0{schema}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _split_schema(url: str) -> tuple[str, str | None]:
    """Remove treadle's own ``schema=`` query parameter (libpq would reject it)."""
    parts = urlsplit(url)
    if not parts.query:
        return url, None
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in pairs if k == "schema"), None)
    rest = [(k, v) for k, v in pairs if k != "schema"]
    return urlunsplit(parts._replace(query=urlencode(rest))), schema


class _PostgresTx(SqlStepTx["psycopg.Connection[tuple[Any, ...]]"]):
    """:class:`~.codec.StepTx` over one psycopg connection, inside a transaction."""

    placeholder = "%s"
    # The body and the message runs are stored as json and handed over as text, as SQLite stores
    # them.
    select_columns = ROW_COLUMNS.removesuffix("body") + "body::text"
    runs_column = "messages::text"
    put_row = _PUT_ROW

    @staticmethod
    def names(stored: Any) -> tuple[str, ...]:
        return tuple(stored)  # jsonb arrays arrive as lists

    def append_messages(self, session_id: str, start: int, messages: Sequence[Message]) -> None:
        # One statement whatever the count: a resumed session may write its whole history at once.
        self.conn.execute(
            _APPEND_MESSAGES,
            {
                "session_id": session_id,
                "start": start,
                "count": len(messages),
                "runs": _runs_json(start, messages),
            },
        )

    def put_draft(self, cp: Checkpoint, draft: Draft, *, lock: int) -> None:
        """Store ``cp`` as drafted, in one statement that takes the write lock ``lock``, if the
        stored head is still the draft's base; otherwise the transaction fails
        (:func:`_is_head_moved`)."""
        self.conn.execute(
            _DRAFT_STATEMENTS[_draft_statement(draft)], _draft_params(cp, draft, lock)
        )

    def delete_steps(self, session_id: str, steps: Sequence[int]) -> None:
        self.conn.execute(
            "DELETE FROM steps WHERE session_id = %s AND step = ANY(%s::bigint[])",
            (session_id, list(steps)),
        )


class PostgresCheckpointer(BatchingStore):
    """Checkpoints in PostgreSQL: the full step history, delta-encoded, shareable by processes.

    ``open()`` connects and applies the shipped migrations (``migrations/postgres/NNNN_*.sql``) in one
    transaction under an advisory lock, recording them in ``schema_migrations``; every table lives in
    ``schema`` (``treadle`` by default; also settable as ``?schema=`` in the URL). The psycopg
    connection lives in its connection thread (:class:`.ConnectionThread`), one call at a time; a
    running session's step, the hot write, is sent from the Trio thread between two of those calls
    instead (a prepared statement driven through libpq's non-blocking API, no thread hop), and so
    are the steps of a group commit (those statements in pipeline mode, one transaction) and the
    leases taken and given up.

    Writers of one session are serialised by a transaction-scoped advisory lock, so of two writers
    expecting the same latest step exactly one wins. A step encoded on the head this store last
    wrote is saved by one statement, in one round trip (a compare-and-set of the head; see
    ``_PUT_DRAFT``); :meth:`save_group` stores several sessions' steps in one transaction. A *lease* (:meth:`acquire_lease`) is a
    session-level advisory lock held by this connection: another process asking for it fails at once
    with ``SessionLeased``, and the server frees it the moment this connection ends, so a crashed
    process never blocks the resume. The ``session_leases`` table names each owner and carries its
    heartbeat (renewed every ``lease_ttl / 3`` seconds by the checkpointer actor) for operators.

    Args:
        url: A ``postgresql://`` (or ``postgres://``) URL; its password never appears in errors.
        schema: The schema holding treadle's tables (created if missing).
        max_chain: The most deltas stored between two snapshots of a session (``None``: 64,
            or one per KiB of the snapshot when that is more; see :class:`StepCodec`).
        connect_timeout: Seconds to wait for the server on ``open()``.
        lease_ttl: Seconds a lease row stays current without a heartbeat.
        lock_timeout: Seconds a statement may wait for a lock (a session's write lock held by a
            hung writer) before it fails; set on the connection (``lock_timeout``).
        statement_timeout: Seconds any statement may run before the server cancels it.
        application_name: How the connection names itself to the server (``pg_stat_activity``);
            a worker names its owner id there.

    A call that is cancelled (a caller's deadline, Ctrl-C, the runner closing) cancels the
    statement on the server (``conn.cancel()``) and waits at most 5 s for it to end; one sent from
    the Trio thread that outlives that has its connection closed, and the next call reconnects.
    When the server ends the connection (a restart), the call in progress fails with
    ``CheckpointBackendError`` and the next call reconnects: at once the first time, then no
    sooner than a backoff that doubles from 0.1 s up to 5 s while the server stays away (calls in
    between fail at once, naming the retry time). Leases held before are taken again on reconnect;
    one that another process took meanwhile is lost, and the next
    save of that session raises ``SessionLeased``.
    """

    backend = "postgres"

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        max_chain: int | None = None,
        connect_timeout: float = 10.0,
        lease_ttl: float = 30.0,
        lock_timeout: float = 10.0,
        statement_timeout: float = 60.0,
        application_name: str = "treadle",
    ) -> None:
        self.url, url_schema = _split_schema(url)
        self.schema = schema or url_schema or "treadle"
        self.connect_timeout = connect_timeout
        self.lease_ttl = lease_ttl
        self.lease_renew_interval = lease_ttl / 3
        self.lock_timeout = lock_timeout
        self.statement_timeout = statement_timeout
        self.application_name = application_name[:63]  # the server's limit
        self._reconnects = 0  # failed reconnection attempts in a row
        self._next_reconnect = 0.0  # time.monotonic() before which no new attempt is made
        self._lost_leases: dict[str, str] = {}
        # Sessions whose lease this store has just taken and found not stored, read in the same
        # round trip after the lock was got: the load that follows needs no round trip. Dropped
        # by that load, and by anything else done to the session meanwhile.
        self._unstored: set[str] = set()
        self._codec = StepCodec(max_chain=max_chain)
        self._thread: ConnectionThread[psycopg.Connection[tuple[Any, ...]]] | None = None
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._leases: dict[str, str] = {}
        self._pipelines = False
        # One step's drafted save, run from the Trio thread (see _save).
        self._put_drafts = {
            name: PreparedStatement(name, sql, _PUT_DRAFT_TYPES)
            for name, sql in _DRAFT_STATEMENTS.items()
        }
        # A lease taken and given up from the Trio thread (see acquire_lease).
        self._take_lease = PreparedStatement("treadle_take_lease", _TAKE_LEASE, _LEASE_TYPES)
        self._is_stored = PreparedStatement("treadle_is_stored", _IS_STORED, _LEASE_TYPES)
        self._drop_lock = PreparedStatement("treadle_drop_lease_lock", _DROP_LOCK, _LEASE_TYPES)
        self._drop_locks = PreparedStatement("treadle_drop_lease_locks", _DROP_LOCKS, _LEASE_TYPES)
        self._give_up_leases = PreparedStatement(
            "treadle_give_up_leases", _GIVE_UP_LEASES, _LEASE_TYPES
        )

    def __repr__(self) -> str:
        return f"PostgresCheckpointer({mask_url(self.url)!r}, schema={self.schema!r})"

    @property
    def masked_url(self) -> str:
        """The URL with its password replaced by ``***``."""
        return mask_url(self.url)

    # -- plumbing ----------------------------------------------------------------------------------

    def _not_open(self) -> CheckpointerError:
        return CheckpointerError(
            f"the PostgreSQL checkpointer for {self.masked_url} is not open: call open() first"
        )

    def _reason(self, exc: BaseException) -> str:
        """The first line of a driver error, with the password masked should libpq echo it."""
        text = str(exc).strip()
        message = text.splitlines()[0] if text else type(exc).__name__
        password = urlsplit(self.url).password
        if password:
            message = message.replace(password, "***")
        return message

    def _error(self, what: str, exc: BaseException) -> CheckpointBackendError:
        return CheckpointBackendError("postgres", f"{what} {self.masked_url}: {self._reason(exc)}")

    def _require_conn(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The connection, reconnected first if the server ended it (in the connection thread)."""
        conn = self._conn
        if conn is None:
            raise self._not_open()
        if conn.closed or conn.broken:
            conn = self._reconnect_sync()
        return conn

    def _reconnect_sync(self) -> psycopg.Connection[tuple[Any, ...]]:
        now = time.monotonic()
        if now < self._next_reconnect:
            raise CheckpointBackendError(
                "postgres",
                f"the connection to {self.masked_url} was lost; the next reconnection attempt is "
                f"in {self._next_reconnect - now:.1f} s",
            )
        try:
            conn = self._open_sync()
        except CheckpointBackendError:
            self._reconnects += 1
            self._next_reconnect = time.monotonic() + min(0.1 * 2 ** (self._reconnects - 1), 5.0)
            raise
        old, self._conn = self._conn, conn
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()
        self._reconnects = 0
        self._codec.forget()  # what it remembered may predate writes made meanwhile
        # The leases ended with the old connection: take them again, or learn who has them now.
        leases, self._leases = self._leases, {}
        for session_id, owner in leases.items():
            try:
                self._acquire_sync(session_id, owner)
            except (SessionLeased, CheckpointBackendError):
                self._lost_leases[session_id] = owner
        self._unstored.clear()
        return conn

    @contextmanager
    def _transaction(self, lock_sessions: Sequence[str] = ()) -> Iterator[_PostgresTx]:
        """A transaction holding the write locks of ``lock_sessions`` (taken in sorted order, so
        that two batches never wait on each other in a cycle)."""
        conn = self._require_conn()
        try:
            with conn.transaction():
                self._lock_for_writing(conn, lock_sessions)
                yield _PostgresTx(conn)
        except _db_error() as exc:
            raise self._error("query failed on", exc) from exc

    def _lock_for_writing(
        self, conn: psycopg.Connection[tuple[Any, ...]], session_ids: Sequence[str]
    ) -> None:
        for session_id in session_ids:
            if session_id in self._lost_leases:
                found = conn.execute(
                    "SELECT owner FROM session_leases WHERE session_id = %s", (session_id,)
                ).fetchone()
                raise SessionLeased(session_id, found[0] if found else "another connection")
        for session_id in sorted(set(session_ids)):
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s)", (_lock_key("write", self.schema, session_id),)
            )

    @contextmanager
    def _pipelined_transaction(
        self, lock_sessions: Sequence[str], begin: str = "BEGIN"
    ) -> Iterator[_PostgresTx]:
        """:meth:`_transaction` in pipeline mode, for saves: ``BEGIN``, the locks and the first
        read (the stored head) reach the server in one round trip, the writes and ``COMMIT`` in a
        second, where a plain transaction waits for each statement in turn."""
        conn = self._require_conn()
        driver = _driver()
        try:
            try:
                with conn.pipeline():
                    conn.execute(begin)
                    self._lock_for_writing(conn, lock_sessions)
                    yield _PostgresTx(conn)
                    conn.execute("COMMIT")
            except BaseException:
                # An error inside the block, or one the server reported at a sync point: whatever
                # was sent since BEGIN is undone (a failed COMMIT has already rolled back).
                if conn.info.transaction_status != driver.pq.TransactionStatus.IDLE:
                    with contextlib.suppress(driver.Error):
                        conn.execute("ROLLBACK")
                raise
        except driver.Error as exc:
            raise self._error("query failed on", exc) from exc

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self, nursery: trio.Nursery) -> None:
        """Connect and migrate in a new connection thread, which runs in ``nursery``."""
        if self._thread is not None:
            return
        thread = ConnectionThread(
            "treadle-pg", self._open_sync, self._close_sync, interrupt=self._cancel_statement
        )
        self._conn = await nursery.start(thread.run)
        self._thread = thread

    def _cancel_statement(self) -> None:
        # Called from the Trio thread while the connection thread waits on the server: libpq's
        # cancel request is made for exactly that (it opens its own short connection).
        conn = self._conn
        if conn is not None and not conn.closed:
            conn.cancel()

    def _open_sync(self) -> psycopg.Connection[tuple[Any, ...]]:
        # Waits on the server are bounded there too: a lock held by a hung writer, or a statement
        # that never ends, fails the call instead of blocking the connection thread for ever.
        options = (
            f"-c lock_timeout={max(1, round(self.lock_timeout * 1000))} "
            f"-c statement_timeout={max(1, round(self.statement_timeout * 1000))}"
        )
        try:
            conn: psycopg.Connection[tuple[Any, ...]] = _driver().connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, round(self.connect_timeout)),
                application_name=self.application_name,
                options=options,
            )
        except _db_error() as exc:
            raise CheckpointBackendError(
                "postgres",
                f"cannot connect to {self.masked_url}: {self._reason(exc)}; check that the server "
                "is running and the URL is right",
            ) from exc
        # Pipeline mode needs libpq 14 or newer (psycopg's binary build ships one).
        self._pipelines = _driver().Pipeline.is_supported()
        try:
            self._migrate(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, _db_error()):
                raise self._error("cannot prepare the schema on", exc) from exc
            raise
        return conn

    def _migrate(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        with conn.transaction():
            # Two processes opening a fresh database at once must not both create the tables.
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s)", (_lock_key("migrate", self.schema, ""),)
            )
            conn.execute(_sql("CREATE SCHEMA IF NOT EXISTS {}", self.schema))
            conn.execute(_sql("SET search_path TO {}", self.schema))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            shipped = migrations()
            newest = max((v for v, _, _ in shipped), default=0)
            if applied and max(applied) > newest:
                raise CheckpointBackendError(
                    "postgres",
                    f"schema {self.schema!r} on {self.masked_url} was migrated by a newer treadle "
                    f"(version {max(applied)}, this one knows {newest}); upgrade treadle",
                )
            for version, name, text in shipped:
                if version in applied:
                    continue
                conn.execute(text.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )

    def _close_sync(self, first: psycopg.Connection[tuple[Any, ...]]) -> None:
        # The connection thread's last act, however it stops: give up our leases, then close the
        # connection in use (a reconnection may have replaced the first one).
        conn = self._conn if self._conn is not None else first
        if conn is not first:
            first.close()
        leases, self._leases = self._leases, {}
        self._lost_leases.clear()
        try:
            if leases and not conn.closed:
                conn.execute(
                    "DELETE FROM session_leases WHERE session_id = ANY(%s) AND owner = ANY(%s)",
                    (list(leases), list(set(leases.values()))),
                )
        except _db_error():
            pass  # closing the connection frees the locks anyway
        finally:
            conn.close()
            self._conn = None

    async def aclose(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            # The thread gives up the leases and closes the connection in use, then forgets it; a
            # thread still in a job past its grace does so when the job ends, so the connection
            # is not forgotten here first.
            await thread.aclose()
        self._codec.forget()

    # -- writes ------------------------------------------------------------------------------------

    def _write_transaction(self, session_ids: Sequence[str]) -> AbstractContextManager[_PostgresTx]:
        if self._pipelines:
            return self._pipelined_transaction(session_ids)
        return self._transaction(session_ids)

    @contextmanager
    def _drafted_transaction(self, count: int) -> Iterator[_PostgresTx]:
        """Where ``count`` drafted steps are stored (:meth:`_PostgresTx.put_draft`, one statement
        each, which takes its session's write lock itself). One step's statement is a transaction
        of its own: one round trip, no ``BEGIN`` or ``COMMIT``. Several go in one transaction,
        pipelined when the driver can."""
        if count > 1:
            with self._write_transaction(()) as tx:
                yield tx
            return
        conn = self._require_conn()
        try:
            yield _PostgresTx(conn)
        except _db_error() as exc:
            raise self._error("query failed on", exc) from exc

    def _ready(self, cp: Checkpoint, draft: Draft | None, expected: Expected) -> Draft | None:
        """``draft`` if ``cp`` can be stored by its one statement (:meth:`_PostgresTx.put_draft`):
        it builds on the step the writer expects, and the session's lease is not lost."""
        if draft is None or cp.session_id in self._lost_leases:
            return None
        base_step = draft.base.step if draft.base is not None else None
        if expected is not UNCHECKED and expected != base_step:
            return None  # the long way raises the conflict (or recognises a committed retry)
        return draft

    def _save_drafted(self, cps: Sequence[Checkpoint], drafts: Sequence[Draft]) -> bool:
        """Store ``cps`` as drafted in one transaction: ``BEGIN``, the locks, one statement per
        step and ``COMMIT`` in one round trip. False, with nothing written, if a stored head is no
        longer the draft's base."""
        for cp, draft in zip(cps, drafts, strict=True):
            self._codec.wrote(cp.session_id, cp.step, draft.token)
        try:
            with self._drafted_transaction(len(cps)) as tx:
                # In session order: two processes' groups then take the rows in the same order.
                for cp, draft in sorted(zip(cps, drafts, strict=True), key=_by_session):
                    tx.put_draft(cp, draft, lock=_lock_key("write", self.schema, cp.session_id))
        except CheckpointBackendError as exc:
            if exc.__cause__ is not None and _is_head_moved(exc.__cause__):
                return False
            raise
        for draft in drafts:
            self._codec.remember(draft.encoded.tip)
        return True

    def _no_longer_unstored(self, cps: Sequence[Checkpoint]) -> None:
        """Forget that the sessions of ``cps`` had nothing stored: they are being stored now."""
        if self._unstored:  # empty but for the instant after a lease is taken
            self._unstored.difference_update(cp.session_id for cp in cps)

    def _save_sync(
        self,
        cps: Sequence[Checkpoint],
        drafts: Sequence[Draft | None],
        expected: Sequence[Expected] | None,
        *,
        short_way: bool = True,
    ) -> None:
        # The short way when every step is drafted on the stored head; else (or if the head moved
        # meanwhile) the long way: read the head, check, encode again if needed, write.
        checks = expected if expected is not None else [UNCHECKED] * len(cps)
        ready = [self._ready(cp, d, e) for cp, d, e in zip(cps, drafts, checks, strict=True)]
        if short_way and all(ready):
            try:
                if self._save_drafted(cps, [d for d in ready if d is not None]):
                    return
            except BaseException:
                self._forget([cp.session_id for cp in cps])
                raise
        super()._save_sync(cps, drafts, expected)

    async def _save(
        self, cps: Sequence[Checkpoint], expected: Sequence[Expected] | None = None
    ) -> None:
        # One step drafted on the stored head is stored from here, with no thread hop; anything
        # else, or that step if the head moved meanwhile, in the connection thread.
        self._no_longer_unstored(cps)
        drafts = draft_steps(self._codec, cps)
        short_way = True
        if len(cps) == 1:
            draft = self._ready(cps[0], drafts[0], UNCHECKED if expected is None else expected[0])
            if draft is not None:
                stored = await self._save_drafted_here([cps[0]], [draft])
                if stored:
                    return
                short_way = stored is None
        await self._run(lambda: self._save_sync(cps, drafts, expected, short_way=short_way))

    async def _save_drafted_here(
        self, cps: Sequence[Checkpoint], drafts: Sequence[Draft]
    ) -> bool | None:
        """Store ``cps`` as drafted (:data:`_PUT_DRAFT` or a cheaper variant each, see
        :func:`_draft_statement`), from the Trio thread, between two calls of the connection
        thread: one statement, or several in one transaction and one round trip
        (:func:`.execute_together`). False, with nothing written, if a stored head is no longer
        its draft's base; ``None``, with nothing sent, if the connection needs the thread (to
        reconnect)."""
        if self._thread is None:
            raise self._not_open()
        async with self._thread.between_calls():
            conn = self._conn
            if conn is None or conn.closed:
                return None
            calls = []
            # In session order: two processes' groups then take the rows in the same order.
            for cp, draft in sorted(zip(cps, drafts, strict=True), key=_by_session):
                self._codec.wrote(cp.session_id, cp.step, draft.token)
                lock = _lock_key("write", self.schema, cp.session_id)
                calls.append(
                    (self._put_drafts[_draft_statement(draft)], _draft_params(cp, draft, lock))
                )
            try:
                grace = self._thread.cancel_grace
                if len(calls) == 1:
                    statement, params = calls[0]
                    await statement.execute(conn, params, cancel_grace=grace)
                else:
                    await execute_together(conn, calls, cancel_grace=grace)
            except trio.BusyResourceError:
                return None  # the thread is closing the connection
            except _db_error() as exc:
                self._forget([cp.session_id for cp in cps])
                if _is_head_moved(exc):
                    return False
                raise self._error("query failed on", exc) from exc
            except BaseException:
                self._forget([cp.session_id for cp in cps])
                raise
        for draft in drafts:
            self._codec.remember(draft.encoded.tip)
        return True

    def _save_group_sync(
        self,
        cps: Sequence[Checkpoint],
        drafts: Sequence[Draft | None],
        expected: Sequence[Expected],
        *,
        stored: Sequence[int] = (),
        together_first: bool = False,
    ) -> list[outcome.Outcome[None]]:
        """Each step's outcome: those at the positions ``stored`` are already stored; the others
        are stored alone (the short way if drafted, else the long way), after trying the drafted
        ones in one transaction if ``together_first``."""
        outcomes: list[outcome.Outcome[None] | None] = [None] * len(cps)
        for i in stored:
            outcomes[i] = outcome.Value(None)
        ready = [self._ready(cp, d, e) for cp, d, e in zip(cps, drafts, expected, strict=True)]
        together = [i for i, draft in enumerate(ready) if draft is not None]
        if together_first and len(together) > 1:
            group = [cps[i] for i in together]
            try:
                done = self._save_drafted(group, [d for d in ready if d is not None])
            except Exception as exc:
                # Each is tried again alone below, so that one session's failure is its own.
                log.debug("a group commit of %d steps failed: %s", len(group), exc)
                self._forget([cp.session_id for cp in group])
            else:
                if done:
                    for i in together:
                        outcomes[i] = outcome.Value(None)
        for i, cp in enumerate(cps):
            if outcomes[i] is None:
                outcomes[i] = outcome.capture(self._save_sync, [cp], [drafts[i]], [expected[i]])
        return [o for o in outcomes if o is not None]

    async def save_group(
        self, cps: Sequence[Checkpoint], expected_steps: Sequence[Expected]
    ) -> list[outcome.Outcome[None]]:
        """Store the steps of several sessions (one each), each checked against its entry of
        ``expected_steps``, and return each one's outcome (the checkpointer actor's group commit).

        Steps drafted on their stored heads go out together, from the Trio thread: one
        transaction, one commit, one round trip. Any other step, and every step of a group whose
        transaction fails, is stored alone, in the connection thread, so one session's failure (a
        conflict, a lost lease, an error) is never another's.
        """
        self._no_longer_unstored(cps)
        drafts = draft_steps(self._codec, cps)
        ready = [
            self._ready(cp, d, e) for cp, d, e in zip(cps, drafts, expected_steps, strict=True)
        ]
        together = [i for i, draft in enumerate(ready) if draft is not None]
        stored: bool | None = None
        if len(together) > 1 and self._pipelines:  # pipeline mode needs libpq 14 or newer
            stored = False
            try:
                stored = await self._save_drafted_here(
                    [cps[i] for i in together], [d for d in ready if d is not None]
                )
            except Exception as exc:
                # Each is tried again alone, so that one session's failure is its own.
                log.debug("a group commit of %d steps failed: %s", len(together), exc)
        if stored and len(together) == len(cps):
            return [outcome.Value(None) for _ in cps]
        return await self._run(
            lambda: self._save_group_sync(
                cps,
                drafts,
                expected_steps,
                stored=together if stored else (),
                # Not sent from here (the connection needs the thread to reconnect, or libpq
                # has no pipeline mode): the group is tried in the thread.
                together_first=stored is None,
            )
        )

    # -- reads -------------------------------------------------------------------------------------

    def _load_sync(self, session_id: str, step: int | None) -> Checkpoint | None:
        # One snapshot for every read. Pipelined, the first read goes with BEGIN: a session that
        # is not stored (a new one) costs two round trips, not four.
        if self._pipelines:
            with self._pipelined_transaction((), _BEGIN_SNAPSHOT) as tx:
                return load_step(self._codec, tx, session_id, step)
        with self._transaction() as tx:
            tx.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return load_step(self._codec, tx, session_id, step)

    async def load_latest(self, session_id: str) -> Checkpoint | None:
        if session_id in self._unstored:
            # Found not stored as its lease was taken, and nothing written since: no round trip.
            self._unstored.discard(session_id)
            await trio.lowlevel.checkpoint()
            return None
        return await super().load_latest(session_id)

    def _list_sessions_sync(self) -> list[str]:
        with self._transaction() as tx:
            rows = tx.conn.execute("SELECT session_id FROM sessions ORDER BY session_id")
            return [row[0] for row in rows]

    def _list_steps_sync(self, session_id: str) -> list[StepInfo]:
        with self._transaction() as tx:
            cursor = tx.conn.execute(
                "SELECT step, created_at, ran_nodes, skipped_nodes, updated_channels FROM steps "
                "WHERE session_id = %s ORDER BY step",
                (session_id,),
            )
            return [
                StepInfo(session_id, step, created, ran, skipped, updated)
                for step, created, ran, skipped, updated in cursor
            ]

    # -- maintenance -------------------------------------------------------------------------------

    def _delete_sync(self, session_id: str) -> bool:
        self._codec.forget(session_id)
        self._unstored.discard(session_id)
        with self._transaction([session_id]) as tx:
            # No foreign keys (schema 4): the session's rows go in the same transaction as its head.
            tx.conn.execute("DELETE FROM steps WHERE session_id = %s", (session_id,))
            tx.conn.execute("DELETE FROM messages WHERE session_id = %s", (session_id,))
            cursor = tx.conn.execute(
                "DELETE FROM sessions WHERE session_id = %s RETURNING session_id", (session_id,)
            )
            return cursor.fetchone() is not None

    def _prune_sync(self, session_id: str | None, cutoff: int | None, keep_last: int | None) -> int:
        sessions = [session_id] if session_id is not None else self._list_sessions_sync()
        removed = 0
        for sid in sessions:
            with self._transaction([sid]) as tx:
                removed += prune_session(
                    self._codec, tx, sid, cutoff_ms=cutoff, keep_last=keep_last
                )
        return removed

    # -- leases ------------------------------------------------------------------------------------

    def _acquire_sync(self, session_id: str, owner: str) -> None:
        conn = self._require_conn()
        held = self._leases.get(session_id)
        if held is not None and held != owner:
            raise SessionLeased(session_id, held)
        params = self._lease_params(session_id, owner)
        self._unstored.discard(session_id)
        try:
            if held is not None:
                conn.execute("INSERT INTO session_leases " + _LEASE_ROW.format(""), params)
            elif self._pipelines:
                # One round trip: the lock, the row if the lock was free, else who has the lease;
                # then, in a statement of its own (a snapshot taken once the lock is got), whether
                # the session is stored, which the load that follows need not ask again.
                with conn.pipeline():
                    taking = conn.execute(_TAKE_LEASE, params)
                    stored = conn.execute(_IS_STORED, params)
                got, is_stored = taking.fetchone(), stored.fetchone()
                self._check_taken(session_id, got)
                if is_stored is not None and not is_stored[0]:
                    self._unstored.add(session_id)
            else:
                self._check_taken(session_id, conn.execute(_TAKE_LEASE, params).fetchone())
        except _db_error() as exc:
            if held is None:
                _drop_session_lock(conn, params)
            raise self._error("cannot take the lease of a session on", exc) from exc
        self._leases[session_id] = owner

    @staticmethod
    def _check_taken(session_id: str, got: tuple[Any, ...] | None) -> None:
        """Raise unless :data:`_TAKE_LEASE` answered ``got`` the lock."""
        if got is None or not got[0]:
            found = got[1] if got is not None else None
            raise SessionLeased(session_id, found or "another connection")

    async def acquire_lease(self, session_id: str, owner: str) -> None:
        """Claim ``session_id`` for ``owner`` (idempotent for the same owner).

        Taken from the Trio thread in one round trip (no thread hop), unless the lease is held
        already (its row is renewed) or the connection must be made again first: then in the
        connection thread.

        Raises:
            SessionLeased: Another connection (another process) holds it.
        """
        thread = self._thread
        if thread is None:
            raise self._not_open()
        async with thread.between_calls():
            taken = await self._take_lease_here(session_id, owner, thread.cancel_grace)
        if not taken:
            await self._run(lambda: self._acquire_sync(session_id, owner))

    def _lease_params(self, session_id: str, owner: str) -> dict[str, int | float | str | None]:
        """The parameters of :data:`_TAKE_LEASE` (and :data:`_IS_STORED`, :data:`_DROP_LOCK`)."""
        return {
            "session_id": session_id,
            "owner": owner,
            "ttl": self.lease_ttl,
            "key": _lock_key("lease", self.schema, session_id),
        }

    async def _take_lease_here(self, session_id: str, owner: str, grace: float) -> bool:
        """:meth:`_acquire_sync` for a lease not held yet, from the Trio thread; False, with
        nothing sent, where it is for the connection thread to do."""
        conn = self._conn
        if session_id in self._leases or conn is None or conn.closed or conn.broken:
            return False
        params = self._lease_params(session_id, owner)
        calls = [(self._take_lease, params)]
        if self._pipelines:
            # Whether the session is stored, in the same round trip (see _acquire_sync).
            calls.append((self._is_stored, params))
        self._unstored.discard(session_id)
        try:
            results = await execute_together(conn, calls, cancel_grace=grace)
        except trio.BusyResourceError:
            return False  # the connection is in use by another thread: the long way waits
        except BaseException as exc:
            await self._drop_locks_here(conn, self._drop_lock, params, grace)
            if isinstance(exc, _db_error()):
                raise self._error("cannot take the lease of a session on", exc) from exc
            raise
        [(got, holder)] = results[0]
        if got != "t":
            raise SessionLeased(session_id, holder or "another connection")
        if len(results) > 1 and results[1] == [("f",)]:
            self._unstored.add(session_id)
        self._leases[session_id] = owner
        return True

    async def _drop_locks_here(
        self,
        conn: psycopg.Connection[Any],
        statement: PreparedStatement,
        params: Mapping[str, int | float | str | None],
        grace: float,
    ) -> None:
        """Give up session locks with ``statement`` (:data:`_DROP_LOCK`, :data:`_DROP_LOCKS`) from
        the Trio thread, after a take that failed or was cancelled, or a release that was
        cancelled: shielded, at most ``grace`` seconds; best effort, as :func:`_drop_session_lock`."""
        with trio.move_on_after(grace, shield=True):
            with contextlib.suppress(Exception):
                if not conn.closed and not conn.broken:
                    await statement.execute(conn, params, cancel_grace=grace)

    async def release_lease(self, session_id: str, owner: str) -> None:
        """Give up ``owner``'s lease of ``session_id``; nothing happens if it is not held."""
        await self.release_leases([session_id], owner)

    async def release_leases(self, session_ids: Iterable[str], owner: str) -> None:
        """Give up ``owner``'s leases of ``session_ids`` (those it does not hold are skipped), in
        one round trip from the Trio thread however many there are."""
        thread = self._thread
        if thread is None:
            raise self._not_open()
        async with thread.between_calls():
            mine = []
            for session_id in session_ids:
                self._unstored.discard(session_id)
                if self._lost_leases.get(session_id) == owner:
                    del self._lost_leases[session_id]
                if self._leases.get(session_id) == owner:
                    del self._leases[session_id]
                    mine.append(session_id)
            conn = self._conn
            if not mine or conn is None or conn.closed or conn.broken:
                # None held here; or the connection is gone, and with it the session locks that
                # were the leases (the server freed them when it ended; their rows stay until the
                # next holders rewrite them).
                return
            params = {
                "owner": owner,
                "session_ids": dumps(mine),
                "keys": dumps([_lock_key("lease", self.schema, sid) for sid in mine]),
            }
            grace = thread.cancel_grace
            try:
                await self._give_up_leases.execute(conn, params, cancel_grace=grace)
                return
            except trio.BusyResourceError:
                pass  # the connection is in use by another thread: given up in the thread
            except _db_error() as exc:
                # The rows could not be deleted (an operator's transaction holds one past
                # lock_timeout, say). The session locks, which are the leases, are given up all
                # the same; the rows stay until the next holders rewrite them, as after a crash.
                try:
                    await self._drop_locks.execute(conn, params, cancel_grace=grace)
                except _db_error():
                    raise self._error("cannot release the lease of a session on", exc) from exc
                log.warning("leases given up, their rows left behind: %s", self._reason(exc))
                return
            except BaseException:
                # Cancelled before the statement went out, or while it ran: the leases are
                # forgotten here, so their session locks go now (unlocking one already given up
                # does nothing), else they would stay held until the connection ends.
                await self._drop_locks_here(conn, self._drop_locks, params, grace)
                raise
        try:
            await self._run(lambda: self._give_up_sync(params))
        except BaseException:
            await self._drop_locks_after(thread, mine)
            raise

    async def _drop_locks_after(
        self,
        thread: ConnectionThread[psycopg.Connection[tuple[Any, ...]]],
        session_ids: list[str],
    ) -> None:
        """After a release in the connection thread that was cancelled or failed: give up the
        session locks of ``session_ids`` from the Trio thread (those not taken again meanwhile:
        unlocking one of those would give up the new lease), shielded, at most the cancel grace."""
        grace = thread.cancel_grace
        with trio.move_on_after(grace, shield=True):
            with contextlib.suppress(Exception):
                async with thread.between_calls():
                    free = [sid for sid in session_ids if sid not in self._leases]
                    conn = self._conn
                    if free and conn is not None:
                        keys = [_lock_key("lease", self.schema, sid) for sid in free]
                        params = {"keys": dumps(keys)}
                        await self._drop_locks_here(conn, self._drop_locks, params, grace)

    def _give_up_sync(self, params: dict[str, Any]) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            return
        try:
            conn.execute(_GIVE_UP_LEASES, params)
        except _db_error() as exc:
            try:
                conn.execute(_DROP_LOCKS, params)  # the locks alone, as release_leases does
            except _db_error():
                raise self._error("cannot release the lease of a session on", exc) from exc
            log.warning("leases given up, their rows left behind: %s", self._reason(exc))

    def _renew_sync(self) -> None:
        if not self._leases:
            return
        conn = self._require_conn()
        try:
            conn.execute(
                "UPDATE session_leases SET heartbeat_at = now(), "
                "expires_at = now() + make_interval(secs => %s) "
                "WHERE session_id = ANY(%s) AND owner = ANY(%s)",
                (self.lease_ttl, list(self._leases), list(set(self._leases.values()))),
            )
        except _db_error() as exc:
            raise self._error("cannot renew session leases on", exc) from exc

    async def renew_leases(self) -> None:
        """Extend the expiry of every lease held here (the checkpointer actor's heartbeat)."""
        await self._run(self._renew_sync)

    def held_leases(self) -> dict[str, str]:
        """The sessions this checkpointer holds leases on, with their owners."""
        return dict(self._leases)

    # -- other tables ------------------------------------------------------------------------------

    async def run_sync(self, fn: Callable[[psycopg.Connection[tuple[Any, ...]]], T]) -> T:
        """Run ``fn(conn)`` on this checkpointer's connection, in its thread, between its other
        calls (the work queue shares the connection that holds the session leases).

        ``conn`` is in autocommit mode with ``search_path`` at :attr:`schema`; a lost connection is
        reconnected first, as for every call.

        Raises:
            CheckpointBackendError: ``fn`` raised a driver error, or the server cannot be reached.
        """

        def call() -> T:
            conn = self._require_conn()
            try:
                return fn(conn)
            except _db_error() as exc:
                raise self._error("query failed on", exc) from exc

        return await self._run(call)

    # -- inspection --------------------------------------------------------------------------------

    def _sizes_sync(self) -> dict[str, dict[str, int]]:
        conn = self._require_conn()
        sizes: dict[str, dict[str, int]] = {}
        for table in ("sessions", "steps", "messages"):
            rows, data = conn.execute(
                _sql("SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0) FROM {} t", table)
            ).fetchone() or (0, 0)
            qualified = '"{}"."{}"'.format(self.schema.replace('"', '""'), table)
            total = conn.execute(
                "SELECT pg_total_relation_size(%s::regclass)", (qualified,)
            ).fetchone()
            sizes[table] = {
                "rows": int(rows),
                "row_bytes": int(data),
                "relation_bytes": int(total[0]) if total else 0,
            }
        return sizes

    async def storage(self) -> dict[str, dict[str, int]]:
        """Per table: ``rows``, ``row_bytes`` (the rows' data) and ``relation_bytes`` (on disk,
        indexes and TOAST included)."""
        return await self._run(self._sizes_sync)
