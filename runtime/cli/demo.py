"""``treadle demo``: the bundled example graph, end to end, on the embedded SQLite default."""

from __future__ import annotations

import argparse
from typing import Any

from .common import checkpointer_arg, print_state

_DEMO_SESSION = "demo"


def add_parser(commands: Any) -> None:
    demo = commands.add_parser("demo", help="run the bundled example graph on SQLite")
    demo.add_argument("--checkpointer", default=None, help="checkpointer URL (default: SQLite)")
    demo.add_argument("--session", default=_DEMO_SESSION, help="session id (default: demo)")
    demo.add_argument("--fresh", action="store_true", help="delete the session first")
    demo.set_defaults(command_fn=demo_command)


async def demo_command(args: argparse.Namespace) -> int:
    from ...sinks.stdout import StdOutSink
    from ..bus import EventBus
    from ..demo import build_demo
    from ..runner import AppRunner
    from ..session import Resumed
    from ..state import VersionedState

    app = build_demo()
    bus = EventBus([StdOutSink()])
    async with AppRunner(
        app, checkpointer=checkpointer_arg(args.checkpointer), event_bus=bus
    ) as runner:
        print(f"treadle demo: {runner.checkpointer.backend} checkpoints")
        if args.fresh:
            await runner.checkpoints.delete_session(args.session)
        start = VersionedState.with_user_message("How should a workflow engine be built?")
        init = await runner.create_session(args.session, start)
        if isinstance(init, Resumed):
            print(f"resumed session {args.session!r} at step {init.step}")
        else:
            print(f"started session {args.session!r}")
        final = await runner.run_until_complete(args.session)
        view = await runner.get_session(args.session)
    print_state(final, view.step)
    return 0
