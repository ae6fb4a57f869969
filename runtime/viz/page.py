"""The self-contained HTML page: the diagram drawn by Mermaid, optionally live over a WebSocket."""

from __future__ import annotations

import html
import json
import re
import tempfile
import webbrowser
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from .diagram import describe
from .mermaid import node_ids, render

MERMAID_CDN: Final = "https://cdn.jsdelivr.net/npm/mermaid@12/dist/mermaid.min.js"
"""Where the page loads Mermaid from unless ``mermaid_js`` says otherwise."""

MAX_EVENTS: Final = 50
"""How many of the last events the live page lists."""

_PLACEHOLDER: Final = re.compile(r"__TREADLE_([A-Z]+)__")
# Sequences that would end or confuse an inline <script> element, written the way JavaScript
# reads them back unchanged inside strings, regular expressions and template literals.
_SCRIPT_UNSAFE: Final = re.compile(r"<(?=/script|!--)", re.IGNORECASE)


def mermaid_page(
    source: object,
    live: str | None = None,
    mermaid_js: str | Path | None = None,
    token: str | None = None,
    *,
    orientation: str = "TD",
    statuses: Mapping[str, object] | None = None,
    title: str | None = None,
) -> str:
    """The HTML text :func:`view_mermaid` writes (see there)."""
    diagram = describe(source, statuses)
    text = render(diagram, orientation)
    if live is not None and urlsplit(live).scheme not in ("ws", "wss"):
        raise ValueError(
            f"live={live!r} is not a WebSocket URL; pass ws://HOST:PORT/sessions/ID/events"
        )
    script, where = _mermaid_script(mermaid_js)
    ids = node_ids(diagram.nodes)
    config = {
        "title": title or ("treadle live view" if live else "treadle graph"),
        "source": text,
        "ids": {name: ids[name] for name in diagram.nodes},
        "live": live,
        "token": token,
        "maxEvents": MAX_EVENTS,
        # Mermaid refuses text over 50,000 characters and more than 500 edges by default.
        "maxTextSize": max(50_000, 2 * len(text)),
        "maxEdges": max(500, 2 * diagram.edge_count),
        "useMaxWidth": len(diagram.nodes) <= 100,
        # SVG text labels draw a large graph several times faster than HTML ones.
        "htmlLabels": len(diagram.nodes) <= 500,
        "mermaidSource": where,
    }
    values = {
        "TITLE": html.escape(str(config["title"])),
        "CONFIG": _script_json(config),
        "MERMAID": script,
    }
    template = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def view_mermaid(
    source: object,
    path: str | Path | None = None,
    open_browser: bool = True,
    live: str | None = None,
    mermaid_js: str | Path | None = None,
    token: str | None = None,
    *,
    orientation: str = "TD",
    statuses: Mapping[str, object] | None = None,
    title: str | None = None,
) -> Path:
    """Write the graph as one self-contained HTML page, open it in the browser, return its path.

    Args:
        source: An ``App`` or a ``GraphBuilder``.
        path: Where to write the page; a new temporary ``.html`` file when ``None``.
        open_browser: Open the page with :mod:`webbrowser` after writing it.
        live: ``ws://host:port/sessions/ID/events`` of a :class:`WebSocketSink`: the page then
            colours each node from the session's lifecycle events (pending, running, completed,
            failed), shows the step and the last events, and after a dropped connection
            reconnects with ``from_seq`` so it misses nothing. Without it the page is static.
        mermaid_js: Mermaid's ``mermaid.min.js``: a local file is inlined (the page then works
            offline), an ``http(s)`` URL is loaded; ``None`` loads it from a CDN.
        token: The sink's token, sent as ``?token=`` (browsers cannot set headers on a
            WebSocket); it is written into the page.
        orientation: ``TD``, ``TB``, ``BT``, ``LR`` or ``RL``.
        statuses: Initial node colours, as for :func:`export_mermaid`.
        title: The page's title.

    Raises:
        ValueError: ``live`` is not a ``ws://`` URL, ``mermaid_js`` is neither a URL nor a file,
            or :func:`export_mermaid` refuses the arguments.
    """
    page = mermaid_page(
        source,
        live,
        mermaid_js,
        token,
        orientation=orientation,
        statuses=statuses,
        title=title,
    )
    if path is None:
        with tempfile.NamedTemporaryFile(prefix="treadle-", suffix=".html", delete=False) as f:
            target = Path(f.name)
    else:
        target = Path(path)
    target.write_text(page, encoding="utf-8")
    target = target.resolve()
    if open_browser:
        webbrowser.open(target.as_uri())
    return target


def _mermaid_script(mermaid_js: str | Path | None) -> tuple[str, str]:
    """The ``<script>`` element that loads Mermaid, and where it comes from (for error text)."""
    if mermaid_js is None:
        return f'<script src="{MERMAID_CDN}"></script>', MERMAID_CDN
    if isinstance(mermaid_js, str) and urlsplit(mermaid_js).scheme in ("http", "https"):
        return f'<script src="{html.escape(mermaid_js)}"></script>', mermaid_js
    local = Path(mermaid_js)
    if not local.is_file():
        raise ValueError(
            f"mermaid_js={str(mermaid_js)!r} is neither an http(s) URL nor a file; "
            "pass the path of a mermaid.min.js or its URL"
        )
    code = _SCRIPT_UNSAFE.sub(r"\\x3C", local.read_text(encoding="utf-8"))
    return f"<script>\n{code}\n</script>", str(local)


def _script_json(value: object) -> str:
    """JSON that can sit inside a ``<script>`` element whatever strings it holds."""
    # ASCII only: a node name may hold lone surrogates, which UTF-8 cannot write.
    text = json.dumps(value, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
