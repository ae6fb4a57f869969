"""``treadle view MODULE:ATTR``: write a graph's HTML page (static, or live over a WebSocket)."""

from __future__ import annotations

import argparse
import os
from typing import Any
from urllib.parse import quote

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


def add_view_options(parser: argparse.ArgumentParser) -> None:
    """``--view`` (and ``--mermaid-js``) of ``treadle run``, beside its ``--ws PORT``."""
    parser.add_argument(
        "--view", action="store_true", help="with --ws: open the run's live page in the browser"
    )
    add_page_options(parser)


def check_view(args: argparse.Namespace, source: Any) -> None:
    """Refuse ``--view`` without a WebSocket to follow, before anything runs.

    A workflow starts its bus inside its run, so its page needs the port before: a fixed one.
    """
    from ..graph.app import App

    if not args.view:
        return
    if args.ws is None:
        raise ValueError("--view needs --ws PORT: the page follows the run over that WebSocket")
    if args.ws == 0 and not isinstance(source, App):
        raise ValueError("--view with a workflow needs a fixed port: --ws PORT, not 0")


def open_live_view(source: Any, url: str, args: argparse.Namespace) -> None:
    """Write the run's live page and open it (the page retries until the server is up, and
    replays what it missed with ``from_seq``)."""
    page = view_mermaid(
        source,
        live=url,
        mermaid_js=args.mermaid_js,
        token=args.ws_token,
        title=f"treadle run {args.target}",
    )
    print(f"live view: {page}", flush=True)


def workflow_events_url(port: int, workflow: Any) -> str:
    """Where a workflow run's events will be served: its session is ``workflow:<name>``."""
    return f"ws://127.0.0.1:{port}/sessions/{quote(f'workflow:{workflow.name}', safe='')}/events"
