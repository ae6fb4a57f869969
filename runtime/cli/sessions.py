"""``treadle sessions list|show|history|delete|prune``: inspect and maintain stored sessions."""

from __future__ import annotations

import argparse
import json
from typing import Any

import trio

from .common import checkpointer_arg


def add_parser(commands: Any) -> None:
    sessions = commands.add_parser("sessions", help="inspect stored sessions")
    sessions.add_argument("action", choices=["list", "show", "history", "delete", "prune"])
    sessions.add_argument("session", nargs="?", help="session id (show, history, delete)")
    sessions.add_argument("--checkpointer", default=None, help="checkpointer URL (default: SQLite)")
    sessions.add_argument("--keep-last", type=int, default=None, help="prune: steps to keep")
    sessions.add_argument(
        "--older-than", type=float, default=None, help="prune: remove steps older than N seconds"
    )
    sessions.set_defaults(command_fn=sessions_command)


async def sessions_command(args: argparse.Namespace) -> int:
    from ..checkpoint import resolve_checkpointer
    from ..checkpointer_actor import CheckpointerActor

    actor = CheckpointerActor(resolve_checkpointer(checkpointer_arg(args.checkpointer)))
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        try:
            return await _session_action(actor, args)
        finally:
            nursery.cancel_scope.cancel()


async def _session_action(actor: Any, args: argparse.Namespace) -> int:
    from ..errors import CheckpointNotFound

    if args.action == "list":
        for session_id in await actor.list_sessions():
            print(session_id)
        return 0
    if args.action == "prune":
        removed = await actor.prune(
            older_than=args.older_than, keep_last=args.keep_last, session_id=args.session
        )
        print(f"pruned {removed} step(s)")
        return 0
    if not args.session:
        raise ValueError(f"'treadle sessions {args.action}' needs a session id")
    if args.action == "show":
        record = await actor.load_latest(args.session)
        if record is None:
            raise CheckpointNotFound(args.session)
        print(json.dumps(record.to_json_value(), indent=2, sort_keys=True))
    elif args.action == "history":
        steps = await actor.list_steps(args.session)
        if not steps:
            raise CheckpointNotFound(args.session)
        for info in steps:
            print(
                f"step {info.step}: ran {', '.join(info.ran_nodes) or '-'}"
                f"; updated {', '.join(info.updated_channels) or '-'}"
            )
    elif args.action == "delete":
        if not await actor.delete_session(args.session):
            raise CheckpointNotFound(args.session)
        print(f"deleted session {args.session!r}")
    return 0
