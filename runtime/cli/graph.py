"""``treadle graph MODULE:ATTR``: print a graph's definition."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import load_app


def add_parser(commands: Any) -> None:
    graph = commands.add_parser("graph", help="print a graph definition")
    graph.add_argument("target", help="MODULE:ATTR naming an App (or a GraphBuilder)")
    graph.add_argument("--format", choices=["json"], default="json")
    graph.set_defaults(command_fn=graph_command)


async def graph_command(args: argparse.Namespace) -> int:
    app = load_app(args.target)
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
