"""The graph the iterative-session tests, the crash child and the benchmark share."""

from __future__ import annotations

from typing import Any

from treadle import END, START, GraphBuilder, Message, NodePartial


def accumulator_app(*, fail_on: int | None = None) -> Any:
    """``acc`` adds the input ``extra["x"]`` to ``extra["sum"]`` and emits it; ``post`` copies
    the sum to ``extra["last"]`` and appends a message. With ``fail_on``, ``acc`` raises while the
    input is that value.
    """

    async def acc(snapshot: Any, ctx: Any) -> NodePartial:
        x = snapshot.extra.get("x", 0)
        if fail_on is not None and x == fail_on:
            raise RuntimeError(f"acc refuses x={x}")
        total = snapshot.extra.get("sum", 0) + x
        await ctx.emit("acc", f"sum={total}", total=total)
        return NodePartial(extra={"sum": total})

    async def post(snapshot: Any, ctx: Any) -> NodePartial:
        total = snapshot.extra.get("sum", 0)
        return NodePartial(extra={"last": total}, messages=[Message.assistant(f"sum {total}")])

    return (
        GraphBuilder()
        .add_node("acc", acc)
        .add_node("post", post)
        .add_edge(START, "acc")
        .add_edge("acc", "post")
        .add_edge("post", END)
        .compile()
    )
