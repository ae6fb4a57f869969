"""The work queue's SQL (table ``session_queue``, migration 0002): enqueue, claim, heartbeat,
recover the sessions of dead workers, record outcomes. Each function runs on a psycopg connection
in a checkpointer's connection thread (:meth:`PostgresCheckpointer.run_sync`).
"""

from __future__ import annotations

import datetime
import json
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import attrs

from ..checkpointers.checkpoint import Checkpointer
from ..checkpointers.postgres import PostgresCheckpointer
from ..errors import CheckpointerError
from ..graph.state import VersionedState

if TYPE_CHECKING:
    import psycopg

    Conn: TypeAlias = psycopg.Connection[tuple[Any, ...]]

QueueStatus: TypeAlias = Literal["pending", "running", "completed", "failed", "paused"]
STATUSES: Final = ("pending", "running", "completed", "failed", "paused")

# The advisory-lock key a live worker holds on its connection (see the migration).
_LIVENESS_KEY: Final = "hashtextextended('treadle worker ' || current_schema() || ' ' || {}, 0)"
# Whether the liveness lock of the worker named by the SQL expression {} is held by anyone.
_OWNER_ALIVE: Final = (
    "EXISTS (SELECT 1 FROM pg_locks l, LATERAL (SELECT "
    + _LIVENESS_KEY
    + " AS k) key WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid::bigint = (key.k >> 32) & 4294967295 AND l.objid::bigint = key.k & 4294967295)"
)


def channel(schema: str) -> str:
    """The ``LISTEN``/``NOTIFY`` channel that announces pending sessions in ``schema``."""
    return f"treadle_queue {schema}"[:63]


def require_postgres(checkpointer: Checkpointer, what: str) -> PostgresCheckpointer:
    """``checkpointer`` if it is a PostgreSQL one; the work queue lives nowhere else."""
    if isinstance(checkpointer, PostgresCheckpointer):
        return checkpointer
    raise CheckpointerError(
        f"{what} needs a PostgreSQL checkpointer (postgresql://…), the only store several "
        f"processes can share as a work queue; this one is {checkpointer.backend!r}"
    )


@attrs.frozen
class Claim:
    """A session this worker has just claimed: its id, initial state, priority and past attempts."""

    session_id: str
    state: VersionedState
    priority: int
    attempts: int
    enqueued_at: datetime.datetime


@attrs.frozen
class QueueRow:
    """One row of the queue as ``treadle sessions list`` shows it."""

    session_id: str
    status: QueueStatus
    owner: str | None
    priority: int
    attempts: int
    last_error: str | None
    updated_at: datetime.datetime


@attrs.frozen
class Recovered:
    """A running session whose worker died: back to ``pending``, or ``failed`` past its attempts."""

    session_id: str
    dead_owner: str
    status: QueueStatus


def enqueue(
    conn: Conn, schema: str, session_id: str, app: str, state: VersionedState, priority: int
) -> bool:
    """Add a pending session; a paused one becomes pending again; any other existing row is left
    as it is. Whether the row is (now) pending by this call."""
    row = conn.execute(
        "INSERT INTO session_queue (session_id, app, input, priority) VALUES (%s, %s, %s::json, %s) "
        "ON CONFLICT (session_id) DO UPDATE SET status = 'pending', owner = NULL, "
        "priority = EXCLUDED.priority, updated_at = clock_timestamp() "
        "WHERE session_queue.status = 'paused' RETURNING session_id",
        (session_id, app, json.dumps(state.to_json_value()), priority),
    ).fetchone()
    if row is not None:
        conn.execute("SELECT pg_notify(%s, '')", (channel(schema),))
    return row is not None


# The owners whose liveness lock each open connection holds: a session-level lock lasts as long as
# its connection, so once taken it is not asked for again (each claim and heartbeat would read the
# whole of pg_locks, which stalls every backend taking a lock meanwhile). A reconnection is a new
# connection object, on which the lock is taken again.
_LIVE_ON: Final[weakref.WeakKeyDictionary[Any, set[str]]] = weakref.WeakKeyDictionary()


def take_liveness(conn: Conn, owner: str) -> None:
    """Hold ``owner``'s liveness lock on this connection (taken once; again after a reconnect)."""
    held = _LIVE_ON.get(conn)
    if held is not None and owner in held and not conn.closed:
        return
    key = _LIVENESS_KEY.format("%s")
    conn.execute(
        f"SELECT pg_advisory_lock({key}) WHERE NOT EXISTS (SELECT 1 FROM pg_locks l, "
        f"LATERAL (SELECT {key} AS k) key WHERE l.pid = pg_backend_pid() "
        "AND l.locktype = 'advisory' AND l.objsubid = 1 "
        "AND l.classid::bigint = (key.k >> 32) & 4294967295 "
        "AND l.objid::bigint = key.k & 4294967295)",
        (owner, owner),
    )
    _LIVE_ON.setdefault(conn, set()).add(owner)


# Claims up to %(limit)s pending sessions of %(app)s for %(owner)s, highest priority first, then
# oldest; rows other workers are claiming at the same instant are skipped, not waited for.
_CLAIM: Final = (
    "UPDATE session_queue SET status = 'running', owner = %(owner)s, "
    "claimed_at = clock_timestamp(), heartbeat_at = clock_timestamp(), "
    "updated_at = clock_timestamp() WHERE session_id IN (SELECT session_id FROM session_queue "
    "WHERE status = 'pending' AND app = %(app)s ORDER BY priority DESC, created_at, session_id "
    "FOR UPDATE SKIP LOCKED LIMIT %(limit)s) "
    "RETURNING session_id, input::text, priority, attempts, created_at"
)


def _claims(rows: Sequence[tuple[Any, ...]]) -> list[Claim]:
    claims = [
        Claim(sid, VersionedState.from_json_value(json.loads(text)), priority, attempts, created)
        for sid, text, priority, attempts, created in rows
    ]
    claims.sort(key=lambda c: (-c.priority, c.enqueued_at, c.session_id))
    return claims


def claim(conn: Conn, app: str, owner: str, limit: int) -> list[Claim]:
    """Claim up to ``limit`` pending sessions of ``app`` for ``owner``, highest priority first,
    then oldest; rows other workers are claiming at the same instant are skipped, not waited for.
    """
    take_liveness(conn, owner)
    rows = conn.execute(_CLAIM, {"owner": owner, "app": app, "limit": limit}).fetchall()
    return _claims(rows)


def heartbeat(conn: Conn, owner: str, running: Sequence[str]) -> None:
    """Renew ``owner``'s running rows, and take back those of ``running`` that were put back to
    ``pending`` while this worker could not reach the server (its lease decides who runs them)."""
    take_liveness(conn, owner)
    conn.execute(
        "UPDATE session_queue SET heartbeat_at = clock_timestamp(), status = 'running', "
        "owner = %s WHERE session_id = ANY(%s) "
        "AND (owner = %s AND status = 'running' OR status = 'pending')",
        (owner, list(running), owner),
    )


def recover(
    conn: Conn, schema: str, app: str, lease_ttl: float, max_attempts: int
) -> list[Recovered]:
    """Put back the running sessions of ``app`` whose worker is dead: its liveness lock is free
    (its connection ended) or its heartbeat is older than ``lease_ttl``. Each counts an attempt;
    past ``max_attempts`` it is ``failed``.

    A worker whose heartbeat is stale but whose connection is still open (a hung process) has its
    connection ended (``pg_terminate_backend``): that connection holds its session leases, which
    the next claimer must be able to take.
    """
    rows = conn.execute(
        "WITH dead AS (SELECT session_id, owner FROM session_queue q "
        "WHERE status = 'running' AND app = %s AND (heartbeat_at < clock_timestamp() - "
        "make_interval(secs => %s) OR NOT " + _OWNER_ALIVE.format("q.owner") + ") "
        "FOR UPDATE SKIP LOCKED) "
        "UPDATE session_queue q SET attempts = q.attempts + 1, owner = NULL, "
        "status = CASE WHEN q.attempts + 1 >= %s THEN 'failed' ELSE 'pending' END, "
        "last_error = 'worker ' || dead.owner || ' stopped while running it', "
        "updated_at = clock_timestamp() FROM dead WHERE q.session_id = dead.session_id "
        "RETURNING q.session_id, dead.owner, q.status",
        (app, lease_ttl, max_attempts),
    ).fetchall()
    owners = sorted({owner for _, owner, _ in rows})
    if owners:
        key = _LIVENESS_KEY.format("o.owner")
        conn.execute(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l, unnest(%s::text[]) AS o(owner), "
            f"LATERAL (SELECT {key} AS k) key WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.objsubid = 1 AND l.pid <> pg_backend_pid() "
            "AND l.classid::bigint = (key.k >> 32) & 4294967295 "
            "AND l.objid::bigint = key.k & 4294967295",
            (owners,),
        )
    if any(status == "pending" for _, _, status in rows):
        conn.execute("SELECT pg_notify(%s, '')", (channel(schema),))
    return [Recovered(sid, owner, status) for sid, owner, status in rows]


def finish(conn: Conn, session_id: str, owner: str, status: QueueStatus) -> bool:
    """Record that ``owner`` completed or paused the session; whether it still owned it."""
    owned, _ = finish_and_claim(conn, session_id, owner, status, "", 0)
    return owned


def finish_and_claim(
    conn: Conn, session_id: str, owner: str, status: QueueStatus, app: str, limit: int
) -> tuple[bool, list[Claim]]:
    """:func:`finish`, and :func:`claim` up to ``limit`` sessions of ``app``, in one statement
    (one round trip: a worker that has just finished a session claims the next one with it).
    Whether ``owner`` still owned the session, and the claims."""
    if limit > 0:
        take_liveness(conn, owner)
    rows = conn.execute(
        "WITH done AS (UPDATE session_queue SET status = %(status)s, "
        "updated_at = clock_timestamp(), heartbeat_at = clock_timestamp() "
        "WHERE session_id = %(session_id)s AND owner = %(owner)s AND status = 'running' "
        f"RETURNING session_id), claimed AS ({_CLAIM}) "
        "SELECT false, session_id, NULL, NULL::int, NULL::int, NULL::timestamptz FROM done "
        "UNION ALL SELECT true, * FROM claimed",
        {"status": status, "session_id": session_id, "owner": owner, "app": app, "limit": limit},
    ).fetchall()
    return any(not claimed for claimed, *_ in rows), _claims([row[1:] for row in rows if row[0]])


def fail(
    conn: Conn, schema: str, session_id: str, owner: str, error: str, max_attempts: int
) -> QueueStatus | None:
    """Record a failed run: back to ``pending`` for another worker, or ``failed`` once it has
    failed ``max_attempts`` times. The new status, or ``None`` if ``owner`` no longer owned it."""
    row = conn.execute(
        "UPDATE session_queue SET attempts = attempts + 1, last_error = %s, owner = NULL, "
        "status = CASE WHEN attempts + 1 >= %s THEN 'failed' ELSE 'pending' END, "
        "updated_at = clock_timestamp() WHERE session_id = %s AND owner = %s "
        "AND status = 'running' RETURNING status",
        (error, max_attempts, session_id, owner),
    ).fetchone()
    if row is not None and row[0] == "pending":
        conn.execute("SELECT pg_notify(%s, '')", (channel(schema),))
    return None if row is None else row[0]


def release(conn: Conn, schema: str, session_id: str, owner: str) -> bool:
    """Give a running session back to the queue (a draining worker); no attempt is counted."""
    row = conn.execute(
        "UPDATE session_queue SET status = 'pending', owner = NULL, "
        "updated_at = clock_timestamp() WHERE session_id = %s AND owner = %s "
        "AND status = 'running' RETURNING session_id",
        (session_id, owner),
    ).fetchone()
    if row is not None:
        conn.execute("SELECT pg_notify(%s, '')", (channel(schema),))
    return row is not None


def unfinished(conn: Conn, app: str) -> int:
    """How many sessions of ``app`` are pending or running."""
    row = conn.execute(
        "SELECT count(*) FROM session_queue WHERE app = %s AND status IN ('pending', 'running')",
        (app,),
    ).fetchone()
    return int(row[0]) if row else 0


def rows(conn: Conn) -> dict[str, QueueRow]:
    """Every queued session, by id."""
    cursor = conn.execute(
        "SELECT session_id, status, owner, priority, attempts, last_error, updated_at "
        "FROM session_queue ORDER BY session_id"
    )
    return {row[0]: QueueRow(*row) for row in cursor}
