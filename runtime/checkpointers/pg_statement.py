"""One PostgreSQL statement run from the Trio thread through libpq's non-blocking API (``psycopg.pq``):
no thread hop, prepared once per connection, cancelled on the server when its caller is cancelled.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import trio

if TYPE_CHECKING:
    import psycopg
    from psycopg import pq

BIGINT: Final = 20
TEXT: Final = 25
"""Parameter types (``pg_type`` OIDs); values travel as text."""

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


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
        types: Each placeholder's type (:data:`BIGINT`, :data:`TEXT`; a parameter's value is
            sent as text and read as that type).
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
        params: Mapping[str, int | str | None],
        *,
        cancel_grace: float,
    ) -> None:
        """Run the statement on ``conn`` with ``params`` and wait for it to end.

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
        from psycopg import errors  # psycopg is optional: imported once a connection exists

        await trio.lowlevel.checkpoint_if_cancelled()
        # psycopg's own lock, as its methods take it: a thread that uses the connection anyway
        # (closing it) waits for the statement instead of interleaving with it.
        if not conn.lock.acquire(blocking=False):
            raise trio.BusyResourceError(f"{conn!r} is in use by another thread")
        try:
            encoding = conn.info.encoding
            values = [
                None if value is None else str(value).encode(encoding)
                for value in map(params.get, self.params)
            ]
            if self._prepared_on is None or self._prepared_on() is not conn:
                await self._prepare(conn, encoding, cancel_grace)
                await trio.lowlevel.checkpoint_if_cancelled()  # cancelled as it prepared
            try:
                conn.pgconn.send_query_prepared(self.name, values)
                await _finish(conn, encoding, cancel_grace)
            except errors.InvalidSqlStatementName:
                # Dropped meanwhile: psycopg sends DEALLOCATE ALL after a rollback. Nothing ran.
                await self._prepare(conn, encoding, cancel_grace)
                conn.pgconn.send_query_prepared(self.name, values)
                await _finish(conn, encoding, cancel_grace)
        finally:
            conn.lock.release()

    async def _prepare(self, conn: psycopg.Connection[Any], encoding: str, grace: float) -> None:
        self._prepared_on = None
        conn.pgconn.send_prepare(self.name, self.sql, self.types)
        await _finish(conn, encoding, grace)
        self._prepared_on = weakref.ref(conn)


async def _finish(conn: psycopg.Connection[Any], encoding: str, cancel_grace: float) -> None:
    """Send what libpq holds, read every result, and raise the first error among them."""
    try:
        results = await _flush_and_read(conn.pgconn)
    except trio.Cancelled:
        try:
            conn.cancel()
        except Exception:
            pass  # the bounded wait below still holds
        with trio.move_on_after(cancel_grace, shield=True):
            try:
                ended = _first_error(await _flush_and_read(conn.pgconn)) is None
            except Exception:
                ended = False
            if ended:
                return
            raise
        conn.close()  # still running: nothing may read its results for the next statement
        raise
    error = _first_error(results)
    if error is not None:
        from psycopg import errors

        raise errors.error_from_result(error, encoding=encoding)


def _first_error(results: list[pq.abc.PGresult]) -> pq.abc.PGresult | None:
    from psycopg.pq import ExecStatus

    for result in results:
        if result.status == ExecStatus.FATAL_ERROR:
            return result
    return None


async def _flush_and_read(pgconn: pq.abc.PGconn) -> list[pq.abc.PGresult]:
    """Wait until libpq has sent everything it holds, then collect results until the last."""
    fd = pgconn.socket
    while pgconn.flush():
        await trio.lowlevel.wait_writable(fd)
    results: list[pq.abc.PGresult] = []
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                return results
            results.append(result)
        await trio.lowlevel.wait_readable(fd)
