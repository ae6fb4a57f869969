"""``treadle graph MODULE:ATTR``: print a graph's definition as JSON or as Mermaid text."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..viz.mermaid import ORIENTATIONS, export_mermaid
from .common import load_app


def add_parser(commands: Any) -> None:
    graph = commands.add_parser("graph", help="print a graph definition (JSON or Mermaid)")
    graph.add_argument("target", help="MODULE:ATTR naming an App, a GraphBuilder or a Workflow")
    graph.add_argument("--format", choices=["json", "mermaid"], default="json")
    graph.add_argument(
        "--orientation", choices=ORIENTATIONS, default="TD", help="Mermaid direction (default TD)"
    )
    graph.set_defaults(command_fn=graph_command)


async def graph_command(args: argparse.Namespace) -> int:
    source = load_app(args.target, workflows=True)
    if args.format == "mermaid":
        sys.stdout.write(export_mermaid(source, orientation=args.orientation))
        return 0
    task_graph = getattr(source, "task_graph", None)
    if task_graph is not None:
        tasks = [
            {"name": t.name, "depends_on": list(t.depends_on), "status": t.status.value}
            for t in task_graph()
        ]
        print(json.dumps({"workflow": source.name, "tasks": tasks}, indent=2))
        return 0
    app = source
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
