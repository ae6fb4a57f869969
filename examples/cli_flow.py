"""A graph module to run from the command line (docs/cli.md). From this directory:

    treadle run cli_flow:app --message "storage"   # an App
    treadle run cli_flow:builder                    # a GraphBuilder, compiled for you
    treadle run cli_flow:build                      # a function returning one, called for you

Run as a script (``python examples/cli_flow.py``), it runs such commands against itself in the
working directory (so ``treadle.db`` lands there) and prints each one's output after a ``$`` line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from treadle import END, START, GraphBuilder, Message, NodeContext, NodePartial, StateSnapshot


async def research(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    topic = snapshot.extra.get("topic") or (
        snapshot.messages[-1].content if snapshot.messages else ""
    )
    return NodePartial(extra={"topic": topic, "notes": len(topic)})


async def summarize(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    summary = f"{snapshot.extra['topic']}: {snapshot.extra['notes']} notes"
    return NodePartial(messages=[Message.assistant(summary)])


def build() -> GraphBuilder:
    return (
        GraphBuilder()
        .add_node("research", research)
        .add_node("summarize", summarize)
        .add_edge(START, "research")
        .add_edge("research", "summarize")
        .add_edge("summarize", END)
    )


builder = build()
app = builder.compile()

COMMANDS = [
    ["run", "cli_flow:app", "--message", "storage"],
    ["run", "cli_flow:app"],  # the same session again: it is complete, nothing re-runs
    ["run", "cli_flow:app", "--fresh", "--input", '{"extra": {"topic": "scheduling"}}'],
    ["run", "cli_flow:app", "--input", "storage"],  # not JSON: refused, nothing runs
    ["sessions", "list"],
    ["sessions", "history", "cli_flow:app"],
    ["sessions", "show", "nope"],
]


def main() -> None:
    # The commands import cli_flow from this file's directory, wherever they run.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent), "NO_COLOR": "1"}
    for args in COMMANDS:
        print("$ treadle " + " ".join(f"'{a}'" if " " in a or "{" in a else a for a in args))
        done = subprocess.run(
            [sys.executable, "-m", "treadle", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            check=False,
        )
        print(done.stdout, end="")
        if done.returncode:
            print(f"(exit code {done.returncode})")


if __name__ == "__main__":
    main()
