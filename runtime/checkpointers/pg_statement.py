"""PostgreSQL statements run from the Trio thread through libpq's non-blocking API (``psycopg.pq``):
no thread hop, prepared once per connection, cancelled on the server when their caller is cancelled.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import trio

if TYPE_CHECKING:
    import psycopg
    from psycopg import pq

BIGINT: Final = 20
TEXT: Final = 25
FLOAT8: Final = 701
"""Parameter types (``pg_type`` OIDs); values travel as text."""

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")

# libpq's result statuses (psycopg.pq.ExecStatus), here so that reading results imports nothing.
_FATAL_ERROR: Final = 7
_PIPELINE_SYNC: Final = 10


class PreparedStatement:
    """A statement with ``%(name)s`` placeholders, prepared on the server under ``name`` the first
    time it runs on a connection (again on a new connection) and executed without a thread.

    The caller must own the connection while :meth:`execute` runs (no other thread or task uses
    it): psycopg's connection is non-blocking under the hood, so the statement is sent, and its
    result read, by waiting on the connection's socket from Trio. The connection is left as
    psycopg expects it: no result pending and, in autocommit mode, no transaction open.

    Args:
        name: The server-side name; unique among the connection's prepared statements.
        query: The SQL, with ``%(name)s`` placeholders (psycopg's named style).
        types: Each placeholder's type (:data:`BIGINT`, :data:`TEXT`, :data:`FLOAT8`; a
            parameter's value is sent as text and read as that type).
    """

    def __init__(self, name: str, query: str, types: Mapping[str, int]) -> None:
        self.name = name.encode()
        self.params: list[str] = []  # the placeholder names, in $1, $2, ... order

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in self.params:
                self.params.append(match.group(1))
            return f"${self.params.index(match.group(1)) + 1}"

        self.sql = _PLACEHOLDER.sub(number, query).encode()
        self.types = [types[param] for param in self.params]
        # The connection the statement is prepared on (a reconnection makes a new one).
        self._prepared_on: weakref.ref[Any] | None = None

    def __repr__(self) -> str:
        return f"<PreparedStatement {self.name.decode()!r}>"

    async def execute(
        self,
        conn: psycopg.Connection[Any],
        params: Mapping[str, int | float | str | None],
        *,
        cancel_grace: float,
    ) -> list[tuple[str | None, ...]]:
        """Run the statement on ``conn`` with ``params``, wait for it to end and return the rows
        it returned (none for a statement that returns none), each value as text.

        Raises:
            psycopg.Error: The server refused the statement (the subclass for its SQLSTATE, with
                its ``diag``), or the connection failed (``OperationalError``; psycopg then sees
                ``conn.broken``).

        Cancellation:
            The server is asked to cancel the statement (``conn.cancel()``), then its end is
            awaited, shielded, at most ``cancel_grace`` seconds: a statement that still succeeded
            returns normally (the cancellation is seen at the caller's next checkpoint), one that
            failed raises the cancellation. One that outlives the grace has its connection
            closed, so that nothing is left half-read; the next user reconnects.
        """
        [rows] = await execute_together(conn, [(self, params)], cancel_grace=cancel_grace)
        return rows

    def _values(
        self, params: Mapping[str, int | float | str | None], encoding: str
    ) -> list[bytes | None]:
        return [
            None if value is None else str(value).encode(encoding)
            for value in map(params.get, self.params)
        ]

    def _is_prepared_on(self, conn: psycopg.Connection[Any]) -> bool:
        return self._prepared_on is not None and self._prepared_on() is conn

    async def _prepare(self, conn: psycopg.Connection[Any], encoding: str, grace: float) -> None:
        from psycopg import errors

        self._prepared_on = None
        conn.pgconn.send_prepare(self.name, self.sql, self.types)
        try:
            await _finish(conn, encoding, grace, pipeline=False)
        except errors.DuplicatePreparedStatement:
            pass  # still there: another statement of its group was the one dropped
        self._prepared_on = weakref.ref(conn)


async def execute_together(
    conn: psycopg.Connection[Any],
    calls: Sequence[tuple[PreparedStatement, Mapping[str, int | float | str | None]]],
    *,
    cancel_grace: float,
) -> list[list[tuple[str | None, ...]]]:
    """Run each ``(statement, params)`` of ``calls`` on ``conn``, in order, in one transaction and
    one round trip, wait for them to end and return each one's rows (values as text). Several go
    in libpq's pipeline mode with one sync point after the last: the statements up to a sync point
    are one implicit transaction, committed there, so that an error in any of them leaves none
    applied.

    Raises and cancels as :meth:`PreparedStatement.execute` does; a cancelled group that still
    committed returns normally, one that failed was rolled back whole.
    """
    from psycopg import errors  # psycopg is optional: imported once a connection exists

    await trio.lowlevel.checkpoint_if_cancelled()
    # psycopg's own lock, as its methods take it: a thread that uses the connection anyway
    # (closing it) waits for the statements instead of interleaving with them.
    if not conn.lock.acquire(blocking=False):
        raise trio.BusyResourceError(f"{conn!r} is in use by another thread")
    try:
        encoding = conn.info.encoding
        sends = [
            (statement.name, statement._values(params, encoding)) for statement, params in calls
        ]
        statements = list(dict.fromkeys(statement for statement, _ in calls))
        unprepared = [s for s in statements if not s._is_prepared_on(conn)]
        if unprepared:
            for statement in unprepared:
                await statement._prepare(conn, encoding, cancel_grace)
            await trio.lowlevel.checkpoint_if_cancelled()  # cancelled as it prepared
        try:
            results = await _send(conn, sends, encoding, cancel_grace)
        except errors.InvalidSqlStatementName:
            # Dropped meanwhile: psycopg sends DEALLOCATE ALL after a rollback. Nothing ran.
            for statement in statements:
                await statement._prepare(conn, encoding, cancel_grace)
            results = await _send(conn, sends, encoding, cancel_grace)
    finally:
        conn.lock.release()
    return [_rows(result, encoding) for result in results]


def _rows(result: pq.abc.PGresult, encoding: str) -> list[tuple[str | None, ...]]:
    """The rows of ``result`` (text format), each value decoded, ``None`` for NULL."""
    columns = range(result.nfields)
    return [
        tuple(
            None if (value := result.get_value(row, column)) is None else value.decode(encoding)
            for column in columns
        )
        for row in range(result.ntuples)
    ]


async def _send(
    conn: psycopg.Connection[Any],
    sends: Sequence[tuple[bytes, list[bytes | None]]],
    encoding: str,
    cancel_grace: float,
) -> list[pq.abc.PGresult]:
    pgconn = conn.pgconn
    if len(sends) == 1:
        pgconn.send_query_prepared(*sends[0])
        return await _finish(conn, encoding, cancel_grace, pipeline=False)
    pgconn.enter_pipeline_mode()
    try:
        for name, values in sends:
            pgconn.send_query_prepared(name, values)
        pgconn.pipeline_sync()
        return await _finish(conn, encoding, cancel_grace, pipeline=True)
    finally:
        if not conn.closed:
            try:
                pgconn.exit_pipeline_mode()
            except Exception:
                # Results left unread (the connection failed): nothing may read them for the
                # next statement; the next user reconnects.
                conn.close()


async def _finish(
    conn: psycopg.Connection[Any], encoding: str, cancel_grace: float, *, pipeline: bool
) -> list[pq.abc.PGresult]:
    """Send what libpq holds, read every result (up to the sync point, in pipeline mode), raise
    the first error among them, else return them (one per statement)."""
    results: list[pq.abc.PGresult] = []  # kept across a cancellation: read once, never again
    try:
        await _flush_and_read(conn.pgconn, results, pipeline)
    except trio.Cancelled:
        try:
            conn.cancel()
        except Exception:
            pass  # the bounded wait below still holds
        with trio.move_on_after(cancel_grace, shield=True):
            try:
                await _flush_and_read(conn.pgconn, results, pipeline)
                ended = _first_error(results) is None
            except Exception:
                ended = False
            if ended:
                return results
            raise
        conn.close()  # still running: nothing may read its results for the next statement
        raise
    error = _first_error(results)
    if error is not None:
        from psycopg import errors

        raise errors.error_from_result(error, encoding=encoding)
    return results


def _first_error(results: list[pq.abc.PGresult]) -> pq.abc.PGresult | None:
    for result in results:
        if result.status == _FATAL_ERROR:
            return result
    return None


async def _flush_and_read(
    pgconn: pq.abc.PGconn, results: list[pq.abc.PGresult], pipeline: bool
) -> None:
    """Wait until libpq has sent everything it holds, then collect results into ``results`` until
    the last: the end of the statement's, or, in pipeline mode, the sync point."""
    fd = pgconn.socket
    while pgconn.flush():
        await trio.lowlevel.wait_writable(fd)
    ended = False  # in pipeline mode: a statement's results just ended
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                if not pipeline:
                    return
                if ended:
                    # Every statement yields a result before its end: the connection failed.
                    from psycopg import errors

                    raise errors.OperationalError(
                        pgconn.get_error_message() or "the connection was lost in a pipeline"
                    )
                ended = True
                continue
            ended = False
            if pipeline and result.status == _PIPELINE_SYNC:
                return
            results.append(result)
        await trio.lowlevel.wait_readable(fd)
