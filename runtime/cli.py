"""The ``treadle`` command line: ``demo``, ``run``, ``sessions`` and ``graph``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

import trio

from .errors import TreadleError

_DEMO_SESSION = "demo"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``treadle`` and ``python -m treadle``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command_fn"):
        parser.print_help()
        return 2
    try:
        result: int = trio.run(args.command_fn, args)
    except KeyboardInterrupt:
        print("treadle: interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130
    except (TreadleError, ValueError, OSError, LookupError) as exc:
        print(f"treadle: {exc}", file=sys.stderr)
        return 1
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="treadle", description=__doc__)
    commands = parser.add_subparsers(title="commands")

    demo = commands.add_parser("demo", help="run the bundled example graph on SQLite")
    demo.add_argument("--checkpointer", default=None, help="checkpointer URL (default: SQLite)")
    demo.add_argument("--session", default=_DEMO_SESSION, help="session id (default: demo)")
    demo.add_argument("--fresh", action="store_true", help="delete the session first")
    demo.set_defaults(command_fn=_demo)

    run = commands.add_parser("run", help="run a graph given as MODULE:ATTR")
    run.add_argument("target", help="MODULE:ATTR naming an App (or a GraphBuilder)")
    run.add_argument(
        "--input", default=None, help="initial state as JSON (or a plain user message)"
    )
    run.add_argument("--session", default="run", help="session id (default: run)")
    run.add_argument("--checkpointer", default=None, help="checkpointer URL (default: SQLite)")
    run.add_argument("--jsonl", default=None, help="also write every event to this JSON Lines file")
    run.set_defaults(command_fn=_run)

    sessions = commands.add_parser("sessions", help="inspect stored sessions")
    sessions.add_argument("action", choices=["list", "show", "history", "delete", "prune"])
    sessions.add_argument("session", nargs="?", help="session id (show, history, delete)")
    sessions.add_argument("--checkpointer", default=None, help="checkpointer URL (default: SQLite)")
    sessions.add_argument("--keep-last", type=int, default=None, help="prune: steps to keep")
    sessions.add_argument(
        "--older-than", type=float, default=None, help="prune: remove steps older than N seconds"
    )
    sessions.set_defaults(command_fn=_sessions)

    graph = commands.add_parser("graph", help="print a graph definition")
    graph.add_argument("target", help="MODULE:ATTR naming an App (or a GraphBuilder)")
    graph.add_argument("--format", choices=["json"], default="json")
    graph.set_defaults(command_fn=_graph)
    return parser


def _checkpointer(url: str | None) -> Any:
    from .checkpoint import CheckpointerType

    return url if url is not None else CheckpointerType.SQLITE


async def _demo(args: argparse.Namespace) -> int:
    from ..sinks.stdout import StdOutSink
    from .bus import EventBus
    from .demo import build_demo
    from .runner import AppRunner
    from .session import Resumed
    from .state import VersionedState

    app = build_demo()
    bus = EventBus([StdOutSink()])
    async with AppRunner(
        app, checkpointer=_checkpointer(args.checkpointer), event_bus=bus
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
    _print_state(final, view.step)
    return 0


async def _run(args: argparse.Namespace) -> int:
    from ..sinks.jsonl import JsonLinesSink
    from ..sinks.stdout import StdOutSink
    from .bus import EventBus
    from .runner import AppRunner
    from .session import Completed, Resumed

    app = _load_app(args.target)
    state = _parse_input(args.input)
    sinks: list[Any] = [StdOutSink()]
    if args.jsonl:
        sinks.append(JsonLinesSink(args.jsonl))
    bus = EventBus(sinks)
    async with AppRunner(
        app, checkpointer=_checkpointer(args.checkpointer), event_bus=bus
    ) as runner:
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
    _print_state(final, view.step)
    return 0


async def _sessions(args: argparse.Namespace) -> int:
    from .checkpoint import resolve_checkpointer
    from .checkpointer_actor import CheckpointerActor

    actor = CheckpointerActor(resolve_checkpointer(_checkpointer(args.checkpointer)))
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        try:
            return await _session_action(actor, args)
        finally:
            nursery.cancel_scope.cancel()


async def _session_action(actor: Any, args: argparse.Namespace) -> int:
    from .errors import CheckpointNotFound

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


async def _graph(args: argparse.Namespace) -> int:
    app = _load_app(args.target)
    graph = app.graph
    described = {
        "graph_hash": app.graph_metadata().graph_hash,
        "nodes": list(graph.nodes),
        "edges": [[src, dst] for src, dsts in graph.edges.items() for dst in dsts],
        "joins": [[list(join.sources), join.target] for join in graph.joins],
        "conditional_edges": [
            {"source": edge.source, "path_map": list(edge.path_map or ())}
            for edge in graph.conditional_edges
        ],
    }
    print(json.dumps(described, indent=2))
    return 0


def _load_app(target: str) -> Any:
    from .app import App
    from .graph import GraphBuilder

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{target!r} is not MODULE:ATTR (for example 'myflows:app')")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, GraphBuilder):
        obj = obj.compile()
    if callable(obj) and not isinstance(obj, App):
        obj = obj()
    if not isinstance(obj, App):
        raise ValueError(f"{target} is a {type(obj).__name__}, not a compiled App")
    return obj


def _parse_input(raw: str | None) -> Any:
    from .state import Message, VersionedState

    if raw is None:
        return VersionedState()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return VersionedState.with_user_message(raw)
    if isinstance(value, str):
        return VersionedState.with_user_message(value)
    if not isinstance(value, dict):
        raise ValueError("--input must be a JSON object with 'messages' and/or 'extra', or text")
    messages = [Message(m["role"], m["content"]) for m in value.get("messages", [])]
    return VersionedState(messages=messages, extra=value.get("extra", {}))


def _print_state(state: Any, step: int) -> None:
    print(f"\nfinal state after step {step}:")
    for message in state.messages:
        print(f"  [{message.role}] {message.content}")
    for key, value in sorted(state.extra.items()):
        print(f"  extra[{key!r}] = {json.dumps(value)}")
    for error in state.errors:
        print(f"  error: {error.error}")
