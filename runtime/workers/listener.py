"""The idle worker's ear: a dedicated connection that ``LISTEN``s on the queue's channel, read from
Trio by waiting on its socket (no thread, no polling), reconnected with backoff when it drops."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ..checkpointers.postgres import PostgresCheckpointer

if TYPE_CHECKING:
    import psycopg

_log = logging.getLogger("treadle.worker")


class Listener:
    """Calls ``on_notify()`` for each burst of notifications on ``channel``, and once after every
    (re)connection (notifications sent while it was away are lost, so the worker looks itself).

    Args:
        store: Names the server, schema and connection options.
        channel: The ``LISTEN`` channel.
        on_notify: Called on the Trio thread; must not block.
    """

    def __init__(
        self, store: PostgresCheckpointer, channel: str, on_notify: Callable[[], None]
    ) -> None:
        self.store = store
        self.channel = channel
        self.on_notify = on_notify
        self.notifications = 0  # received so far (tests count them)

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg
        from psycopg import sql

        conn: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(
            self.store.url,
            autocommit=True,
            connect_timeout=max(1, round(self.store.connect_timeout)),
            application_name=f"{self.store.application_name} listen"[:63],
        )
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            conn.close()
            raise
        return conn

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled.

        Cancellation: closes the connection. Errors: a failed connection is logged and retried
        after a backoff that doubles from 0.1 s to 5 s; the worker's fallback poll covers the gap.
        """
        import psycopg

        delay = 0.1
        started = False
        while True:
            try:
                conn = await trio.to_thread.run_sync(self._connect, abandon_on_cancel=True)
            except psycopg.Error as exc:
                _log.warning(
                    "cannot listen for queued sessions on %s: %s", self.store.masked_url, exc
                )
                if not started:
                    started = True
                    task_status.started()
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            try:
                if not started:
                    started = True
                    task_status.started()
                self.on_notify()
                await self._read(conn)
            except (psycopg.Error, OSError) as exc:
                _log.warning(
                    "lost the notification connection to %s: %s", self.store.masked_url, exc
                )
            finally:
                conn.close()

    async def _read(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        pgconn = conn.pgconn
        while True:
            await trio.lowlevel.wait_readable(pgconn.socket)
            pgconn.consume_input()  # raises once the server has closed the connection
            heard = False
            while pgconn.notifies() is not None:
                heard = True
                self.notifications += 1
            if heard:
                self.on_notify()
