"""``treadle sessions list|show|history|delete|prune``: inspect and maintain stored sessions."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import CheckpointNotFound
from .common import UsageError, add_checkpointer_option, open_store, say

_NEEDS_ID = ("show", "history", "delete")


def add_parser(commands: Any) -> None:
    sessions = commands.add_parser("sessions", help="inspect stored sessions")
    sessions.add_argument("action", choices=["list", "show", "history", "delete", "prune"])
    sessions.add_argument("session", nargs="?", help="session id (show, history, delete, prune)")
    add_checkpointer_option(sessions)
    sessions.add_argument(
        "--keep-last",
        type=int,
        default=None,
        metavar="N",
        help="prune: keep each session's last N steps",
    )
    sessions.add_argument(
        "--older-than",
        type=float,
        default=None,
        metavar="SECONDS",
        help="prune: remove steps older than this",
    )
    sessions.set_defaults(command_fn=sessions_command)


async def sessions_command(args: argparse.Namespace) -> int:
    # Checked before the store is opened: a mistake in the command line costs no connection.
    if args.action in _NEEDS_ID and not args.session:
        raise UsageError(f"'treadle sessions {args.action}' needs a session id")
    if args.action == "prune" and args.keep_last is None and args.older_than is None:
        raise UsageError("'treadle sessions prune' needs --keep-last N or --older-than SECONDS")
    async with open_store(args.checkpointer) as store:
        await _session_action(store, args)
    return 0


async def _session_action(store: Any, args: argparse.Namespace) -> None:
    if args.action == "list":
        await _list(store)
    elif args.action == "prune":
        removed = await store.prune(
            older_than=args.older_than, keep_last=args.keep_last, session_id=args.session
        )
        say(f"pruned {removed} step(s)")
    elif args.action == "show":
        record = await store.load_latest(args.session)
        if record is None:
            raise CheckpointNotFound(args.session)
        say(json.dumps(record.to_json_value(), indent=2, sort_keys=True))
    elif args.action == "history":
        steps = await store.list_steps(args.session)
        if not steps:
            raise CheckpointNotFound(args.session)
        for info in steps:
            say(
                f"step {info.step}: ran {', '.join(info.ran_nodes) or '-'}"
                f"; updated {', '.join(info.updated_channels) or '-'}"
            )
    elif args.action == "delete":
        if not await store.delete_session(args.session):
            raise CheckpointNotFound(args.session)
        say(f"deleted session {args.session!r}")


async def _list(store: Any) -> None:
    """Stored session ids, one a line; on PostgreSQL, queued ones with their queue status and
    owner (``ID  STATUS  owner=…  attempts=N``, and the last error of a retried or failed run)."""
    from ..checkpointers.postgres import PostgresCheckpointer
    from ..workers import queue

    backend = store.checkpointer
    queued = {}
    if isinstance(backend, PostgresCheckpointer):
        queued = await backend.run_sync(queue.rows)
    for session_id in sorted({*await store.list_sessions(), *queued}):
        row = queued.get(session_id)
        if row is None:
            say(session_id)
            continue
        line = f"{session_id}  {row.status}  owner={row.owner or '-'}  attempts={row.attempts}"
        if row.last_error and row.status in ("pending", "failed"):
            line += f"  last_error={row.last_error}"
        say(line)
