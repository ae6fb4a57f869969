"""``treadle demo``: the bundled example graph, end to end, on the embedded SQLite default."""

from __future__ import annotations

import argparse
from typing import Any

from .common import PipeSafeStdOutSink, add_checkpointer_option, checkpointer_arg, run_session, say

_DEMO_SESSION = "demo"
_QUESTION = "How should a workflow engine be built?"


def add_parser(commands: Any) -> None:
    demo = commands.add_parser("demo", help="run the bundled example graph on SQLite")
    add_checkpointer_option(demo)
    demo.add_argument(
        "--session", default=_DEMO_SESSION, metavar="ID", help="session id (default: demo)"
    )
    demo.add_argument("--fresh", action="store_true", help="delete the session first")
    demo.set_defaults(command_fn=demo_command)


async def demo_command(args: argparse.Namespace) -> int:
    from ..demo import build_demo
    from ..events.bus import EventBus
    from ..execution.runner import AppRunner
    from ..graph.state import VersionedState

    args.progress.opening(args.session)
    async with AppRunner(
        build_demo(),
        checkpointer=checkpointer_arg(args.checkpointer),
        event_bus=EventBus([PipeSafeStdOutSink()]),
    ) as runner:
        say(f"treadle demo: {runner.checkpointer.backend} checkpoints")
        if args.fresh:
            await runner.checkpoints.delete_session(args.session)
        start = VersionedState.with_user_message(_QUESTION)
        await run_session(runner, args.session, start, args.progress)
    return 0
