"""Entry point of ``treadle`` and ``python -m treadle``: builds the parser from the command modules
and turns user mistakes into one line and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from ..errors import TreadleError
from . import demo, events, graph, run, sessions, view

# Each command module adds its own sub-parser; a new command is a module and one entry here.
COMMANDS = (demo, run, sessions, graph, view, events)


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
    parser = argparse.ArgumentParser(
        prog="treadle", description="Run and inspect treadle graphs and their stored sessions."
    )
    commands = parser.add_subparsers(title="commands")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser
