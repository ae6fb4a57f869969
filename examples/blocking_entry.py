"""From plain Python, without async: build, validate and run a graph with ``treadle.run``.

Plain ``def`` nodes run inline on the Trio thread; ``thread=True`` moves a blocking one into a
worker thread. ``treadle.run`` starts Trio, runs a fresh session to completion and returns the state.
"""

from __future__ import annotations

import time
from collections import Counter

import treadle
from treadle import (
    END,
    START,
    EventBus,
    GraphBuilder,
    GraphCompileError,
    Message,
    NodeContext,
    NodePartial,
    NodeRunError,
    StateSnapshot,
    StdOutSink,
    VersionedState,
)


def split(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    words = snapshot.messages[-1].content.lower().split()
    ctx.emit_nowait("split", f"{len(words)} words")  # the sync form of ctx.emit
    return NodePartial(extra={"words": words})


def count(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    time.sleep(0.01)  # blocking work: fine in a worker thread, it does not stall other actors
    top = Counter(snapshot.extra["words"]).most_common(2)
    ctx.emit_nowait("count", f"{len(top)} most common words")  # works from the worker thread too
    return NodePartial(extra={"top": [list(pair) for pair in top]})


def report(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    text = ", ".join(f"{word} x{n}" for word, n in snapshot.extra["top"])
    return NodePartial(messages=[Message.assistant(f"most common: {text}")])


def build() -> GraphBuilder:
    return (
        GraphBuilder()
        .add_node("split", split)
        .add_node("count", count, thread=True)
        .add_node("report", report)
        .add_edge(START, "split")
        .add_edge("split", "count")
        .add_edge("count", "report")
        .add_edge("report", END)
    )


def main() -> None:
    # compile() reports the first problem with the graph's shape as a GraphCompileError.
    try:
        build().add_edge("report", "split").compile()
    except GraphCompileError as exc:
        print(f"{type(exc).__name__}: {exc}")

    app = build().compile()
    meta = app.graph_metadata()  # a hash of the definition, independent of insertion order
    print(f"graph: {meta.node_count} nodes, {meta.edge_count} edges")
    print(f"graph hash: {meta.graph_hash[:16]}")
    state = VersionedState.with_user_message("the cat and the hat and the bat")
    # Keyword options go to the AppRunner that treadle.run opens: here, print every event.
    final = treadle.run(
        app, state, session_id="words", event_bus=EventBus([StdOutSink(colour=False)])
    )
    print(final.messages[-1].content)

    # A node that fails (after its retries) surfaces as NodeRunError from treadle.run.
    def broken(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        raise ValueError("no words to count")

    failing = GraphBuilder().add_node("broken", broken).add_edge(START, "broken")
    try:
        treadle.run(failing.add_edge("broken", END).compile(), VersionedState())
    except NodeRunError as exc:
        print(f"NodeRunError: {exc}")


if __name__ == "__main__":
    main()
