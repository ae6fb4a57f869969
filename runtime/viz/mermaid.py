"""Mermaid flowchart text for a graph: sanitised ids, escaped labels, dashed conditional edges."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from ..graph.builder import END, START
from .diagram import STATUSES, Diagram, describe

ORIENTATIONS: Final = ("TD", "TB", "BT", "LR", "RL")

STATUS_STYLES: Final = {
    "pending": "fill:#6c757d,stroke:#495057,color:#ffffff",
    "running": "fill:#fd7e14,stroke:#c96512,color:#ffffff",
    "completed": "fill:#28a745,stroke:#1e7e34,color:#ffffff",
    "failed": "fill:#dc3545,stroke:#a71d2a,color:#ffffff",
    "skipped": "fill:#e9ecef,stroke:#adb5bd,color:#495057,stroke-dasharray:4 3",
    "retrying": "fill:#fd7e14,stroke:#a71d2a,color:#ffffff,stroke-width:3px",
}
"""The ``classDef`` of each status; the first four are SPEC 8's colours."""

_TERMINAL_STYLE: Final = "fill:#343a40,stroke:#343a40,color:#ffffff"
_JOIN_STYLE: Final = "fill:#ffffff,stroke:#343a40,color:#343a40"
_ID_SAFE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
# Printable ASCII that needs no escape inside a quoted label; the rest of ASCII is written as a
# Mermaid entity code (``#35;``), so quotes, brackets, ``#``, ``;``, ``%%``, ``|`` and ``<`` can't
# end a label, start a comment or directive or become markup, ``$$`` can't start KaTeX, and ``:``
# can't make Mermaid read a label as a ``style ...:#...;`` statement.
_LABEL_SAFE: Final = _ID_SAFE | frozenset(" _-.,/'!?+=@~^*")
_NAMED: Final = {'"': "#quot;", "&": "#amp;", "<": "#lt;", ">": "#gt;", "#": "#35;"}


def export_mermaid(
    source: object, orientation: str = "TD", statuses: Mapping[str, object] | None = None
) -> str:
    """Mermaid ``flowchart`` text for an ``App`` or a ``GraphBuilder``.

    Static edges are solid arrows, conditional edges dashed arrows to each declared ``path_map``
    target (labelled with the router value, or the router's name), a join is drawn as a small
    ``join`` node its sources lead into; START and END are terminals. Every status has a
    ``classDef`` (SPEC colours: completed green, failed red, running orange, pending grey) and
    ``statuses`` (node name to status, ``TaskStatus`` values or strings) assigns them. The same
    graph and statuses always give the same text.

    Raises:
        TypeError: ``source`` is not a graph.
        ValueError: an unknown ``orientation``, or ``statuses`` naming an unknown node or status.
    """
    return render(describe(source, statuses), orientation)


def save_mermaid(
    source: object,
    path: str | Path,
    orientation: str = "TD",
    statuses: Mapping[str, object] | None = None,
) -> Path:
    """Write :func:`export_mermaid` text to ``path`` and return it as a ``Path``.

    A ``.md`` path gets a fenced ```` ```mermaid ```` block (rendered by Markdown viewers that know
    Mermaid); any other suffix the bare text (``.mmd`` is customary).
    """
    target = Path(path)
    text = export_mermaid(source, orientation, statuses)
    if target.suffix.lower() == ".md":
        text = f"```mermaid\n{text}```\n"
    target.write_text(text, encoding="utf-8")
    return target


def render(diagram: Diagram, orientation: str = "TD") -> str:
    """The text for an already built :class:`Diagram`."""
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation {orientation!r} is not one of {', '.join(ORIENTATIONS)}")
    ids = node_ids(diagram.nodes)
    lines = [f"flowchart {orientation}"]
    used = {n for edge in diagram.edges for n in edge} | {c.source for c in diagram.conditionals}
    used |= {c.target for c in diagram.conditionals if c.target is not None}
    used |= {n for j in diagram.joins for n in (*j.sources, j.target)}
    if START in used:
        lines.append(f'    {ids[START]}(["START"]):::terminal')
    lines.extend(f'    {ids[name]}["{escape_label(name)}"]' for name in diagram.nodes)
    if END in used:
        lines.append(f'    {ids[END]}(["END"]):::terminal')
    lines.extend(f'    j_{i}(("join")):::join' for i in range(len(diagram.joins)))
    open_routers = [c for c in diagram.conditionals if c.target is None]
    for i in range(len(open_routers)):
        lines.append(f'    q_{i}{{{{"any node"}}}}:::join')
    lines.extend(f"    {ids[src]} --> {ids[dst]}" for src, dst in diagram.edges)
    open_index = 0
    for edge in diagram.conditionals:
        if edge.target is None:
            target = f"q_{open_index}"
            open_index += 1
        else:
            target = ids[edge.target]
        arrow = f'-.->|"{escape_label(edge.label)}"|' if edge.label else "-.->"
        lines.append(f"    {ids[edge.source]} {arrow} {target}")
    for i, join in enumerate(diagram.joins):
        lines.extend(f"    {ids[src]} --- j_{i}" for src in join.sources)
        lines.append(f"    j_{i} --> {ids[join.target]}")
    lines.append(f"    classDef terminal {_TERMINAL_STYLE}")
    lines.append(f"    classDef join {_JOIN_STYLE}")
    lines.extend(f"    classDef {status} {STATUS_STYLES[status]}" for status in STATUSES)
    for status in STATUSES:
        named = sorted(ids[n] for n, s in diagram.statuses.items() if s == status)
        if named:
            lines.append(f"    class {','.join(named)} {status}")
    return "\n".join(lines) + "\n"


def node_ids(names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Mermaid ids for ``names`` plus START and END: ``n_`` and an injective encoding of the name.

    Letters and digits stay, ``_`` becomes ``__`` and any other character ``_<hex>_``, so
    ``a-b``, ``a_b`` and ``a b`` stay three nodes; the prefix keeps ids clear of keywords such as
    ``end`` and of the ``o``/``x`` edge endings.
    """
    ids = {name: "n_" + _encode_id(name) for name in names}
    ids[START] = "t_start"
    ids[END] = "t_end"
    return ids


def _encode_id(name: str) -> str:
    if name.isascii() and name.isalnum():
        return name
    return "".join(c if c in _ID_SAFE else "__" if c == "_" else f"_{ord(c):x}_" for c in name)


def escape_label(text: str) -> str:
    """``text`` made safe inside a quoted Mermaid label (``"..."``), shown unchanged once rendered.

    Printable non-ASCII (accents, CJK, emoji) stays as it is; other characters become Mermaid
    entity codes (``#quot;``, ``#35;``, ``#59;``...).
    """
    if all(c in _LABEL_SAFE for c in text):
        return text
    return "".join(_escape_char(c) for c in text)


def _escape_char(c: str) -> str:
    if c in _LABEL_SAFE:
        return c
    named = _NAMED.get(c)
    if named is not None:
        return named
    if ord(c) < 128 or unicodedata.category(c)[0] in "CZ":
        return f"#{ord(c)};"
    return c
