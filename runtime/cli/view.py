"""``treadle view MODULE:ATTR``: write a graph's HTML page (static, or live over a WebSocket)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..viz.mermaid import ORIENTATIONS
from ..viz.page import view_mermaid
from .common import load_app


def add_parser(commands: Any) -> None:
    view = commands.add_parser("view", help="write (and open) a graph's page in the browser")
    view.add_argument("target", help="MODULE:ATTR naming an App, a GraphBuilder or a Workflow")
    add_page_options(view)
    view.add_argument("--live", default=None, help="ws://HOST:PORT/sessions/ID/events to follow")
    view.add_argument("--token", default=None, help="the WebSocket sink's token, if it has one")
    view.add_argument("--out", default=None, help="where to write the page (default: a temp file)")
    view.add_argument("--no-open", action="store_true", help="write the page, open no browser")
    view.add_argument(
        "--orientation", choices=ORIENTATIONS, default="TD", help="Mermaid direction (default TD)"
    )
    view.set_defaults(command_fn=view_command)


def add_page_options(parser: argparse.ArgumentParser) -> None:
    """``--mermaid-js``, shared by the commands that write a page."""
    parser.add_argument(
        "--mermaid-js",
        default=os.environ.get("TREADLE_MERMAID_JS"),
        help="a local mermaid.min.js to inline (works offline) or its URL "
        "(default: $TREADLE_MERMAID_JS, else a CDN)",
    )


async def view_command(args: argparse.Namespace) -> int:
    path = view_mermaid(
        load_app(args.target, workflows=True),
        path=args.out,
        open_browser=not args.no_open,
        live=args.live,
        mermaid_js=args.mermaid_js,
        token=args.token,
        orientation=args.orientation,
        title=args.target,
    )
    print(path)
    return 0
