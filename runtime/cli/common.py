"""What several commands share: the store, ``MODULE:ATTR``, ``--input``, the run loop, printing."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ...sinks.stdout import StdOutSink
from ..errors import TreadleError
from ..events.types import Event


class UsageError(TreadleError):
    """The command line itself is wrong (a missing or malformed argument); exit code 2."""


@attrs.define
class Progress:
    """What a command has stored so far, so that ``main`` can name it when Ctrl-C arrives.

    ``main`` fills in the ``--checkpointer`` URL; a command that runs a session calls
    :meth:`opening` as soon as it knows the session id and :meth:`stored` after each step the store
    holds.
    """

    checkpointer: str | None = None
    session_id: str | None = None
    step: int | None = None
    volatile: bool = False

    def opening(self, session_id: str) -> None:
        self.session_id = session_id

    def stored(self, step: int) -> None:
        self.step = step


def add_checkpointer_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpointer",
        default=None,
        metavar="URL",
        help="sqlite:///path.db, postgresql://…, json:///dir or memory:// "
        "(default: TREADLE_SQLITE_URL, else sqlite:///treadle.db)",
    )


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """``--input JSON`` or ``--message TEXT``: the initial state (see :func:`parse_input`)."""
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--input",
        default=None,
        metavar="JSON",
        help='initial state: {"messages": [{"role": …, "content": …}], "extra": {…}}',
    )
    start.add_argument(
        "--message", default=None, metavar="TEXT", help="initial state: one user message"
    )


def checkpointer_arg(url: str | None) -> Any:
    """The ``--checkpointer`` value, or the embedded SQLite default."""
    from ..checkpointers.checkpoint import CheckpointerType

    return url if url is not None else CheckpointerType.SQLITE


@asynccontextmanager
async def open_store(url: str | None) -> AsyncIterator[Any]:
    """A running :class:`CheckpointerActor` on ``--checkpointer`` (or the default), for reading
    and maintaining stored sessions without a graph."""
    from ..checkpointers.actor import CheckpointerActor
    from ..checkpointers.checkpoint import resolve_checkpointer

    actor = CheckpointerActor(resolve_checkpointer(checkpointer_arg(url)))
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        try:
            yield actor
        finally:
            nursery.cancel_scope.cancel(reason="the command is done with the store")


def load_app(target: str, *, workflows: bool = False) -> Any:
    """The compiled ``App`` that ``MODULE:ATTR`` names: an ``App``, a ``GraphBuilder`` (compiled)
    or a factory (called with no arguments) returning either; with ``workflows=True`` a
    ``Workflow`` (or a factory's) is returned as it is.

    Raises:
        UsageError: ``target`` is not ``MODULE:ATTR``, cannot be imported, or names something else.
    """
    from ..graph.app import App
    from ..graph.builder import GraphBuilder
    from ..workflow import Workflow

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{target!r} is not MODULE:ATTR (for example 'myflows:app')")
    if os.getcwd() not in sys.path:
        # Modules in the working directory come first, as `python -m` finds them.
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import module {module_name!r}: {exc}") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    if callable(obj) and not isinstance(obj, App | GraphBuilder | Workflow):
        obj = obj()
    if isinstance(obj, GraphBuilder):
        obj = obj.compile()
    if workflows and isinstance(obj, Workflow):
        return obj
    if not isinstance(obj, App):
        kinds = "an App, a GraphBuilder, a Workflow" if workflows else "an App, a GraphBuilder"
        raise UsageError(
            f"{target} is an object of type {type(obj).__name__}: name {kinds} or a function "
            "returning one"
        )
    return obj


_INPUT_SHAPE = '{"messages": [{"role": "user", "content": "…"}], "extra": {"key": value}}'


def parse_input(raw: str | None, message: str | None = None) -> Any:
    """The initial ``VersionedState`` from ``--input JSON`` or ``--message TEXT`` (at most one).

    ``--input`` must be a JSON object with at most the keys ``messages`` (a list of objects with
    string ``role`` and ``content``) and ``extra`` (an object); anything else is a
    :class:`UsageError` naming what is wrong.
    """
    from ..graph.state import Message, VersionedState

    if message is not None:
        return VersionedState.with_user_message(message)
    if raw is None:
        return VersionedState()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--input is not JSON ({exc.msg} at character {exc.pos}); give {_INPUT_SHAPE}, "
            "or use --message TEXT for a plain user message"
        ) from None
    if not isinstance(value, dict):
        raise UsageError(
            f"--input must be a JSON object like {_INPUT_SHAPE}, not {_json_kind(value)}; "
            "use --message TEXT for a plain user message"
        )
    unknown = sorted(set(value) - {"messages", "extra"})
    if unknown:
        raise UsageError(
            f"--input has unknown key {unknown[0]!r}: only 'messages' and 'extra' are allowed"
        )
    messages = value.get("messages", [])
    if not isinstance(messages, list):
        raise UsageError(f"--input 'messages' must be a list, not {_json_kind(messages)}")
    parsed = []
    for i, item in enumerate(messages):
        if not isinstance(item, dict) or set(item) != {"role", "content"}:
            raise UsageError(
                f"--input messages[{i}] must be an object with exactly 'role' and 'content'"
            )
        role, content = item["role"], item["content"]
        if not isinstance(role, str) or not role or not isinstance(content, str):
            raise UsageError(
                f"--input messages[{i}] needs a non-empty string 'role' and a string 'content'"
            )
        parsed.append(Message(role, content))
    extra = value.get("extra", {})
    if not isinstance(extra, dict):
        raise UsageError(f"--input 'extra' must be an object, not {_json_kind(extra)}")
    return VersionedState(messages=parsed, extra=extra)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


class PipeSafeStdOutSink(StdOutSink):
    """The stdout sink of the commands: it stops writing once stdout's reader has gone
    (``treadle run … | head``); the command's own next line then ends the command quietly."""

    reader_gone = False

    def handle(self, event: Event) -> None:
        if self.reader_gone:
            return
        try:
            super().handle(event)
        except BrokenPipeError:
            self.reader_gone = True


def say(text: str = "") -> None:
    """Print a line of progress now, even when stdout is a pipe: in one write, so a sink printing
    events from its worker thread cannot land in the middle of the line."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def run_session(runner: Any, session_id: str, state: Any, progress: Progress) -> None:
    """Open (or resume) ``session_id`` and run it to the end, one line per step.

    Each step is stored before :meth:`AppRunner.run_step` returns (``durability="sync"``), so
    ``progress`` always names a step the store holds.
    """
    from ..execution.session import Completed, Resumed

    progress.volatile = runner.checkpoints.volatile
    init = await runner.create_session(session_id, state)
    start = init.step if isinstance(init, Resumed) else 0
    progress.stored(start)
    if isinstance(init, Resumed):
        say(f"resumed session {session_id!r} at step {start}")
    else:
        say(f"started session {session_id!r}")
    view = await runner.get_session(session_id)
    if view.completed:
        say(f"session {session_id!r} is already complete (--fresh starts it over)")
    while not view.completed:
        result = await runner.run_step(session_id)
        if not isinstance(result, Completed):  # run_step without interrupts never pauses
            raise TypeError(f"unexpected step result {result!r}")
        report = result.report
        progress.stored(report.step)
        say(
            f"step {report.step}: ran {', '.join(report.ran_nodes) or '-'}"
            f"; next {', '.join(report.next_frontier) or '-'}"
        )
        view = await runner.get_session(session_id)
    # Ends the session's event stream (STREAM_END) and returns the final state.
    final = await runner.run_until_complete(session_id)
    print_state(final, view.step)


def print_state(state: Any, step: int) -> None:
    """A final state as the commands print it."""
    say(f"\nfinal state after step {step}:")
    for message in state.messages:
        say(f"  [{message.role}] {message.content}")
    for key, value in sorted(state.extra.items()):
        say(f"  extra[{key!r}] = {json.dumps(value)}")
    for error in state.errors:
        say(f"  error: {error.error}")
