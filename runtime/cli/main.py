"""Entry point of ``treadle`` and ``python -m treadle``: builds the parser from the command modules
and turns how a command ended into an exit code, with user mistakes and Ctrl-C as one line."""

from __future__ import annotations

import argparse
import collections
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import NoReturn

import trio

from ...actors.errors import ActorGone
from ..errors import TreadleError
from . import demo, events, graph, run, sessions, submit, view, worker
from .common import Progress, UsageError, open_store

# Each command module adds its own sub-parser; a new command is a module and one entry here.
COMMANDS = (demo, run, sessions, graph, view, events, submit, worker)

# Exit codes (docs/cli.md lists them).
EXIT_FAILED = (
    1  # the command could not do its work: unknown session, unreachable store, failed node
)
EXIT_USAGE = 2  # the command line is wrong
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports a process ended by SIGINT
EXIT_BROKEN_PIPE = 141  # stdout's reader went away (`| head`), as a shell reports SIGPIPE

# Errors a user can cause and fix: shown as one line. Anything else is a bug and keeps its traceback.
USER_ERRORS = (TreadleError, OSError, ValueError)

# How long an interrupted command may spend asking the store which step it holds.
_STORED_STEP_LIMIT = 3.0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``treadle`` and ``python -m treadle``; returns the exit code.

    Errors users cause print one line on stderr (``--verbose`` adds the traceback); Ctrl-C prints
    the step the store holds and returns 130. Anything else is a bug and raises.
    """
    try:
        return _main(argv)
    finally:
        if argv is None and threading.current_thread() is threading.main_thread():
            # Called with the process's own arguments, so the process exits next: a late Ctrl-C
            # would only kill the interpreter while it exits (no line, no exit code of ours).
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _main(argv: Sequence[str] | None) -> int:
    progress = Progress()
    verbose = False
    held = _HeldLog()
    logger = logging.getLogger("treadle")
    logger.addHandler(held)
    propagate, logger.propagate = logger.propagate, False
    try:
        parser = _parser()
        args = parser.parse_args(argv)
        if not hasattr(args, "command_fn"):
            parser.print_help()
            return EXIT_USAGE
        verbose = args.verbose
        progress.checkpointer = getattr(args, "checkpointer", None)
        args.progress = progress
        result: int = trio.run(_interruptible, args.command_fn, args)
        held.report()
        return result
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as error:
        if verbose:
            held.report()
        code = _exit_code(error, verbose=verbose, progress=progress)
        if code is None:
            raise
        return code
    finally:
        logger.removeHandler(held)
        logger.propagate = propagate


async def _interruptible(
    command: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace
) -> int:
    """Run ``command`` with Ctrl-C turned into cancellation, then report it as ``KeyboardInterrupt``.

    The command winds down through its own ``finally`` blocks and shielded writes at its next
    checkpoint, instead of a ``KeyboardInterrupt`` raised at whatever bytecode was running (which
    can leave a coroutine made but never awaited, and a warning on stderr). A second Ctrl-C while
    it winds down raises at once. A command that handles Ctrl-C itself (``worker``) opens its own
    receiver, which takes the signal instead.
    """
    if threading.current_thread() is not threading.main_thread():
        return await command(args)  # only the main thread can take signals
    command_scope = trio.CancelScope()

    async def watch(signals: AsyncIterator[int]) -> None:
        async for _ in signals:
            if command_scope.cancel_called:
                raise KeyboardInterrupt
            command_scope.cancel(reason="Ctrl-C")

    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, signals)
            try:
                with command_scope:
                    result = await command(args)
            except Exception as error:
                if command_scope.cancel_called:
                    raise KeyboardInterrupt from error  # what the cancellation made it raise
                raise
            finally:
                nursery.cancel_scope.cancel()
    if command_scope.cancelled_caught:
        raise KeyboardInterrupt
    return result


class _HeldLog(logging.Handler):
    """Holds treadle's log records while a command runs. A command that succeeds prints them at
    its end, one line each; one that fails prints them only with ``--verbose``: what the runtime
    logs while it winds down after an error or Ctrl-C echoes that error, whose line stays alone."""

    def __init__(self, limit: int = 100) -> None:
        super().__init__(logging.WARNING)
        self.records: collections.deque[logging.LogRecord] = collections.deque(maxlen=limit)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def report(self) -> None:
        for record in self.records:
            _say_error(f"{record.levelname.lower()}: {record.getMessage()}")
        self.records.clear()


def _exit_code(error: BaseException, *, verbose: bool, progress: Progress) -> int | None:
    """The exit code for ``error`` after printing its one line, or ``None`` for a bug.

    Errors raised inside nurseries arrive wrapped in exception groups, often beside the errors they
    caused elsewhere (an actor gone, a cancelled wait); the group is judged by its leaves.
    """
    leaves = _leaves(error)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C cannot cut the line
        _say_error(_interrupted(progress))
        return EXIT_INTERRUPTED
    if any(isinstance(leaf, BrokenPipeError) for leaf in leaves):
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    if not all(isinstance(leaf, USER_ERRORS) for leaf in leaves):
        return None
    if verbose:
        traceback.print_exception(error)
    # An actor that went away is the echo of the error that made it go: name the cause.
    cause = sorted(leaves, key=lambda leaf: isinstance(leaf, ActorGone))[0]
    _say_error(str(cause) or type(cause).__name__)
    return EXIT_USAGE if isinstance(cause, UsageError) else EXIT_FAILED


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for sub in error.exceptions for leaf in _leaves(sub)]
    return [error]


def _interrupted(progress: Progress) -> str:
    session_id = progress.session_id
    if session_id is None:
        return "interrupted"
    if progress.volatile:
        return f"interrupted at step {progress.step} of session {session_id!r}; memory:// keeps nothing"
    try:
        step = trio.run(_stored_step, progress.checkpointer, session_id)
    except BaseException:  # the store is not answering: say what was last confirmed
        return (
            f"interrupted; session {session_id!r} is stored at step {progress.step} or later "
            "(the store did not answer to tell which)"
        )
    if step is None:
        return f"interrupted before session {session_id!r} stored a step"
    return f"interrupted; session {session_id!r} is stored at step {step}: run the same command to resume"


async def _stored_step(checkpointer: str | None, session_id: str) -> int | None:
    # The step confirmed last may be one behind: the save of the next can commit as Ctrl-C lands.
    with trio.fail_after(_STORED_STEP_LIMIT):
        async with open_store(checkpointer) as store:
            record = await store.load_latest(session_id)
    return None if record is None else int(record.step)


def _say_error(text: str) -> None:
    try:
        print(f"treadle: {' '.join(text.split())}", file=sys.stderr, flush=True)
    except OSError:
        pass  # stderr is gone too: the exit code is all that is left


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class _Parser(argparse.ArgumentParser):
    """Reports a malformed command line as one line (argparse prints usage and the error)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"treadle: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="treadle", description="Run and inspect treadle graphs and their stored sessions."
    )
    commands = parser.add_subparsers(title="commands")
    for command in COMMANDS:
        command.add_parser(commands)
    for command_parser in commands.choices.values():
        command_parser.add_argument(
            "--verbose", "-v", action="store_true", help="show the traceback of an error"
        )
    return parser
