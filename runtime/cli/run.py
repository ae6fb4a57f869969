"""``treadle run MODULE:ATTR``: run a graph with live progress, resumable from its checkpoints."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import checkpointer_arg, load_app, parse_input, print_state
from .view import add_view_options, check_view, open_live_view, workflow_events_url


def add_parser(commands: Any) -> None:
    run = commands.add_parser("run", help="run a graph or workflow given as MODULE:ATTR")
    run.add_argument("target", help="MODULE:ATTR naming an App, a GraphBuilder or a Workflow")
    run.add_argument(
        "--input", default=None, help="initial state as JSON (or a plain user message)"
    )
    run.add_argument("--session", default="run", help="session id (default: run)")
    run.add_argument("--checkpointer", default=None, help="checkpointer URL (default: SQLite)")
    run.add_argument("--jsonl", default=None, help="also write every event to this JSON Lines file")
    run.add_argument(
        "--ws",
        type=int,
        default=None,
        metavar="PORT",
        help="serve the run's events (with lifecycle events) over WebSocket on 127.0.0.1:PORT "
        "(0: a free port); follow them with `treadle events URL`",
    )
    run.add_argument("--ws-token", default=None, help="require this token from WebSocket clients")
    add_view_options(run)
    run.add_argument(
        "--executor",
        choices=["sequential", "threaded", "async"],
        default="sequential",
        help="for a Workflow: how its tasks run (default: sequential)",
    )
    run.add_argument(
        "--state-store",
        default=None,
        help="for a Workflow: a .json or SQLite file; completed tasks are not re-run",
    )
    run.set_defaults(command_fn=run_command)


async def run_command(args: argparse.Namespace) -> int:
    from ...sinks.jsonl import JsonLinesSink
    from ...sinks.stdout import StdOutSink
    from ..app import App
    from ..bus import EventBus
    from ..runner import AppRunner
    from ..session import Completed, Resumed

    app = load_app(args.target, workflows=True)
    check_view(args, app)
    sinks: list[Any] = [StdOutSink()]
    if args.jsonl:
        sinks.append(JsonLinesSink(args.jsonl))
    server = None
    if args.ws is not None:
        from ...sinks.websocket import WebSocketSink

        server = WebSocketSink(port=args.ws, token=args.ws_token)
        sinks.append(server)
    bus = EventBus(sinks)
    if not isinstance(app, App):
        if args.view:
            open_live_view(app, workflow_events_url(args.ws, app), args)
        return await _run_workflow(app, args, bus)
    state = parse_input(args.input)
    async with AppRunner(
        app,
        checkpointer=checkpointer_arg(args.checkpointer),
        event_bus=bus,
        lifecycle_events=server is not None,
    ) as runner:
        if server is not None:
            print(
                f"serving events at {server.url(args.session)} (every session: {server.url()})",
                flush=True,
            )
            if args.view:
                open_live_view(app, server.url(args.session), args)
        init = await runner.create_session(args.session, state)
        if isinstance(init, Resumed):
            print(f"resumed session {args.session!r} at step {init.step}")
        while True:
            result = await runner.run_step(args.session)
            assert isinstance(result, Completed)
            report = result.report
            if report.ran_nodes or report.skipped_nodes:
                print(
                    f"step {report.step}: ran {', '.join(report.ran_nodes) or '-'}"
                    f"; next {', '.join(report.next_frontier) or '-'}"
                )
            if report.completed:
                break
        final = await runner.run_until_complete(args.session)
        view = await runner.get_session(args.session)
    print_state(final, view.step)
    return 0


async def _run_workflow(workflow: Any, args: argparse.Namespace, bus: Any) -> int:
    """Run a ``Workflow`` with its task events on ``bus``; print each task's outcome."""
    from ..errors import WorkflowExecutionError
    from ..workflow import JSONStateStore, SQLiteStateStore

    store: Any = None
    if args.state_store:
        path = args.state_store
        store = JSONStateStore(path) if path.endswith(".json") else SQLiteStateStore(path)
    try:
        # Task events only: a task that fails is a node that completed, so node.* would mislead.
        await workflow.run_async(args.executor, state_store=store, event_bus=bus)
    except WorkflowExecutionError as exc:
        print(f"treadle: {exc}: {exc.__cause__}", file=sys.stderr)
        status = 1
    else:
        status = 0
    for t in workflow.tasks:
        print(f"{t.name}: {t.status.value}")
    return status
