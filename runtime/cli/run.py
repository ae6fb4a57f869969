"""``treadle run MODULE:ATTR``: run a graph with live progress, resumable from its checkpoints."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import (
    PipeSafeStdOutSink,
    UsageError,
    add_checkpointer_option,
    add_input_options,
    checkpointer_arg,
    load_app,
    parse_input,
    run_session,
)
from .view import add_view_options, check_view, open_live_view, workflow_events_url


def add_parser(commands: Any) -> None:
    run = commands.add_parser("run", help="run a graph or workflow given as MODULE:ATTR")
    run.add_argument(
        "target",
        help="MODULE:ATTR naming an App, a GraphBuilder, a Workflow or a function returning one",
    )
    add_input_options(run)
    run.add_argument(
        "--session", default=None, metavar="ID", help="session id (default: MODULE:ATTR itself)"
    )
    run.add_argument("--fresh", action="store_true", help="delete the stored session first")
    add_checkpointer_option(run)
    run.add_argument(
        "--jsonl",
        default=None,
        metavar="FILE",
        help="also write every event to this JSON Lines file",
    )
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
    from ..events.bus import EventBus
    from ..execution.runner import AppRunner
    from ..graph.app import App

    app = load_app(args.target, workflows=True)
    check_view(args, app)
    state = parse_input(args.input, args.message)
    session_id = args.target if args.session is None else args.session
    if not session_id:
        raise UsageError("--session needs a non-empty session id")
    sinks: list[Any] = [PipeSafeStdOutSink()]
    if args.jsonl:
        jsonl = JsonLinesSink(args.jsonl)
        try:
            jsonl.open()  # now, so a path that cannot be written fails before anything runs
        except OSError as exc:
            raise UsageError(f"--jsonl cannot write {args.jsonl}: {exc.strerror}") from exc
        sinks.append(jsonl)
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
    args.progress.opening(session_id)
    async with AppRunner(
        app,
        checkpointer=checkpointer_arg(args.checkpointer),
        event_bus=bus,
        lifecycle_events=server is not None,
    ) as runner:
        if server is not None:
            print(
                f"serving events at {server.url(session_id)} (every session: {server.url()})",
                flush=True,
            )
            if args.view:
                open_live_view(app, server.url(session_id), args)
        if args.fresh:
            await runner.checkpoints.delete_session(session_id)
        await run_session(runner, session_id, state, args.progress)
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
