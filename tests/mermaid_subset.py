"""A strict reader of the Mermaid flowchart subset treadle writes, for checking export text.

It accepts only what ``export_mermaid`` is meant to emit and raises ``SyntaxError`` on anything
else: ids that Mermaid could misread (keywords such as ``end``, a leading ``o``/``x``), label text
holding a character that could end the label or start markup, edges or classes naming undeclared
nodes. Labels are returned decoded (``#quot;`` back to ``"``).
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass, field

ID = r"[A-Za-z][A-Za-z0-9_]*"
SHAPES = {"[": "]", "([": "])", "((": "))", "{{": "}}"}
NODE = re.compile(
    rf'^    (?P<id>{ID})(?P<open>\[|\(\[|\(\(|\{{\{{)"(?P<label>[^"]*)"'
    rf"(?P<close>\]|\]\)|\)\)|\}}\}})(?::::(?P<cls>{ID}))?$"
)
EDGE = re.compile(
    rf'^    (?P<src>{ID}) (?P<arrow>-->|-\.->|---)(?:\|"(?P<label>[^"]*)"\|)? (?P<dst>{ID})$'
)
CLASS_DEF = re.compile(
    rf"^    classDef (?P<name>{ID}) (?P<props>[a-z-]+:[^,]+(?:,[a-z-]+:[^,]+)*)$"
)
CLASS = re.compile(rf"^    class (?P<ids>{ID}(?:,{ID})*) (?P<name>{ID})$")
HEADER = re.compile(r"^flowchart (TD|TB|BT|LR|RL)$")
KEYWORDS = {
    "end", "graph", "flowchart", "subgraph", "style", "class", "classdef", "click", "linkstyle",
    "direction", "default", "call", "href",
}  # fmt: skip
# What a label may hold once its entity codes are removed: letters, digits, safe punctuation and
# printable non-ASCII.
LABEL_PLAIN = re.compile(r"^[A-Za-z0-9 _\-.,/'!?+=@~^*\u0080-\U0010ffff]*$")
ENTITY = re.compile(r"#(\d+|[a-z]+);")


@dataclass
class Flowchart:
    orientation: str
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)
    """id -> (shape, decoded label)"""
    edges: list[tuple[str, str, str | None, str]] = field(default_factory=list)
    """(source id, arrow, decoded label or None, target id)"""
    class_defs: dict[str, str] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)
    """node id -> class name, from ``:::`` and ``class`` lines"""

    def label_of(self, node_id: str) -> str:
        return self.nodes[node_id][1]

    def id_of(self, label: str, shape: str = "[") -> str:
        [found] = [i for i, (s, text) in self.nodes.items() if text == label and s == shape]
        return found


def decode(label: str) -> str:
    """The text a label shows: entity codes replaced by their characters."""
    plain = ENTITY.sub("", label)
    if not LABEL_PLAIN.match(plain):
        raise SyntaxError(f"label {label!r} holds characters Mermaid may misread")
    if any(unicodedata.category(c)[0] in "CZ" and c != " " for c in plain):
        raise SyntaxError(f"label {label!r} holds a control, format or separator character")

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.isdigit():
            return chr(int(code))
        text = html.unescape(f"&{code};")
        if text == f"&{code};":
            raise SyntaxError(f"unknown entity #{code}; in {label!r}")
        return text

    return ENTITY.sub(one, label)


def _check_id(node_id: str) -> None:
    if node_id.lower() in KEYWORDS or node_id[0] in "ox":
        raise SyntaxError(f"id {node_id!r} may be read as a keyword or an edge ending")


def parse(text: str) -> Flowchart:
    """Read ``text`` back; raise ``SyntaxError`` naming the first line outside the subset."""
    if not text.endswith("\n"):
        raise SyntaxError("the text does not end with a newline")
    lines = text[:-1].split("\n")
    header = HEADER.match(lines[0])
    if header is None:
        raise SyntaxError(f"bad first line {lines[0]!r}")
    chart = Flowchart(orientation=header.group(1))
    used_classes: list[str] = []
    for number, line in enumerate(lines[1:], start=2):
        if (m := NODE.match(line)) is not None:
            node_id = m["id"]
            _check_id(node_id)
            if SHAPES[m["open"]] != m["close"]:
                raise SyntaxError(f"line {number}: mismatched shape {line!r}")
            if node_id in chart.nodes:
                raise SyntaxError(f"line {number}: node {node_id!r} declared twice")
            chart.nodes[node_id] = (m["open"], decode(m["label"]))
            if m["cls"]:
                chart.classes[node_id] = m["cls"]
                used_classes.append(m["cls"])
        elif (m := EDGE.match(line)) is not None:
            for end in (m["src"], m["dst"]):
                if end not in chart.nodes:
                    raise SyntaxError(f"line {number}: edge names undeclared node {end!r}")
            label = None if m["label"] is None else decode(m["label"])
            chart.edges.append((m["src"], m["arrow"], label, m["dst"]))
        elif (m := CLASS_DEF.match(line)) is not None:
            chart.class_defs[m["name"]] = m["props"]
        elif (m := CLASS.match(line)) is not None:
            for node_id in m["ids"].split(","):
                if node_id not in chart.nodes:
                    raise SyntaxError(f"line {number}: class names undeclared node {node_id!r}")
                chart.classes[node_id] = m["name"]
            used_classes.append(m["name"])
        else:
            raise SyntaxError(f"line {number} is outside the subset: {line!r}")
    for name in used_classes:
        if name not in chart.class_defs:
            raise SyntaxError(f"class {name!r} is used but has no classDef")
    return chart
