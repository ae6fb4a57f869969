"""The graph ``treadle demo`` runs: fan-out to three researchers, a join, and a conditional loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from .execution.context import NodeContext
from .graph.app import App
from .graph.builder import END, START, GraphBuilder
from .graph.partial import NodePartial
from .graph.state import Message, StateSnapshot

TOPICS = ("storage", "scheduling", "streaming")
ROUNDS = 2


async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    round_ = int(snapshot.extra.get("round", 0)) + 1
    await ctx.emit("plan", f"round {round_}: researching {', '.join(TOPICS)}", round=round_)
    return NodePartial(
        messages=[Message.assistant(f"Round {round_}: splitting the question into {len(TOPICS)}.")],
        extra={"round": round_},
    )


def researcher(topic: str) -> Callable[[StateSnapshot, NodeContext], Awaitable[NodePartial]]:
    async def research(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        round_ = snapshot.extra["round"]
        # Researchers of one step run concurrently; their writes merge in frontier order.
        await trio.sleep(0.01 * (len(TOPICS) - TOPICS.index(topic)))
        finding = f"{topic}: {len(topic) * round_} notes"
        await ctx.emit("finding", finding, topic=topic)
        return NodePartial(extra={f"finding.{topic}": finding})

    research.__name__ = f"research_{topic}"
    return research


async def summarize(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    findings = [snapshot.extra[f"finding.{topic}"] for topic in TOPICS]
    summary = "; ".join(findings)
    await ctx.emit("summary", summary)
    return NodePartial(messages=[Message.assistant(f"Summary: {summary}")])


def again(snapshot: StateSnapshot) -> str:
    return "plan" if snapshot.extra["round"] < ROUNDS else END


def build_demo() -> App:
    builder = GraphBuilder().add_node("plan", plan).add_node("summarize", summarize)
    for topic in TOPICS:
        builder.add_node(f"research_{topic}", researcher(topic))
        builder.add_edge("plan", f"research_{topic}")
    builder.add_edge(START, "plan")
    builder.add_edge([f"research_{topic}" for topic in TOPICS], "summarize")
    builder.add_conditional_edges("summarize", again, path_map=["plan", END])
    return builder.compile()
