"""``treadle events URL``: print a remote event stream (a WebSocket event server) line by line."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    events = commands.add_parser(
        "events", help="print the events a `treadle run --ws` (or a WebSocketSink) serves"
    )
    events.add_argument("url", help="ws://HOST:PORT/events or ws://HOST:PORT/sessions/ID/events")
    events.add_argument("--token", default=None, help="the server's token (--ws-token)")
    events.add_argument(
        "--from-seq",
        type=int,
        default=None,
        help="on a session URL, start with this event number (replayed if still held)",
    )
    events.set_defaults(command_fn=events_command)


async def events_command(args: argparse.Namespace) -> int:
    from ...sinks.stdout import StdOutSink
    from ..remote import open_event_stream

    printer = StdOutSink()
    async with open_event_stream(args.url, token=args.token, from_seq=args.from_seq) as events:
        async for event in events:
            printer.handle(event)
        if events.dropped:
            print(f"treadle: the server dropped {events.dropped} events for this slow reader")
    return 0
