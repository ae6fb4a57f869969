"""``treadle submit MODULE:ATTR --session ID``: put a session in the PostgreSQL work queue."""

from __future__ import annotations

import argparse
from typing import Any

from .common import UsageError, add_input_options, load_app, parse_input, say


def add_parser(commands: Any) -> None:
    submit = commands.add_parser(
        "submit", help="queue a session for `treadle worker` processes (PostgreSQL)"
    )
    submit.add_argument("target", help="MODULE:ATTR naming the App or GraphBuilder to run")
    submit.add_argument("--session", required=True, metavar="ID", help="session id")
    add_input_options(submit)
    submit.add_argument(
        "--priority", type=int, default=0, help="higher runs first (default 0; ties: oldest first)"
    )
    add_queue_option(submit)
    submit.set_defaults(command_fn=submit_command)


async def submit_command(args: argparse.Namespace) -> int:
    from ..execution.runner import AppRunner

    app = load_app(args.target)
    state = parse_input(args.input, args.message)
    if not args.session:
        raise UsageError("--session needs a non-empty session id")
    async with AppRunner(app, checkpointer=worker_checkpointer(args.checkpointer)) as runner:
        if await runner.enqueue(args.session, state, priority=args.priority):
            say(f"queued session {args.session!r}")
        else:
            say(f"session {args.session!r} is already queued; left as it is")
    return 0


def add_queue_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpointer",
        default=None,
        metavar="URL",
        help="postgresql://… holding the queue (?schema=NAME to choose the schema; "
        "default: TREADLE_POSTGRES_URL, then DATABASE_URL)",
    )


def worker_checkpointer(url: str | None) -> Any:
    """``--checkpointer`` for the queue commands: a URL, or the PostgreSQL default
    (``TREADLE_POSTGRES_URL``, then ``DATABASE_URL``)."""
    from ..checkpointers.checkpoint import CheckpointerType

    return url if url is not None else CheckpointerType.POSTGRES
