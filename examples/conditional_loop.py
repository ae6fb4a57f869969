"""Loops: a conditional edge with a ``path_map``, a frontier command, and version gating.

``tick`` counts to 3 in a typed state slot, looping through a conditional edge; the ``messages``
channel keeps a rolling window through a custom reducer. ``dedupe`` then loops on itself with
``Replace([...])``, removing one duplicate per step; once a step changes nothing, the next step
version-gates it (it would see the same state again), so it is skipped and the session completes.
"""

from __future__ import annotations

import trio

from treadle import (
    END,
    START,
    AppRunner,
    Completed,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    Replace,
    StateKey,
    StateSnapshot,
    VersionedState,
    reducer,
)

COUNT = StateKey("loop", "count", 1, value_type=int)  # stored as extra["loop:count:v1"]
LIMIT = 3


def keep_last_two(current: tuple[Message, ...], update: tuple[Message, ...]) -> tuple[Message, ...]:
    return (current + update)[-2:]


async def tick(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    count = (snapshot.get_typed(COUNT) or 0) + 1
    partial = NodePartial(messages=[Message.assistant(f"tick {count}")])
    return partial.with_typed_extra(COUNT, count)


def again_or_stop(snapshot: StateSnapshot) -> str:
    # Evaluated on the state after the barrier of the step in which tick ran.
    return "again" if snapshot.require_typed(COUNT) < LIMIT else "stop"


async def dedupe(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    items = list(snapshot.extra["items"])
    for i, item in enumerate(items):
        if item in items[:i]:
            del items[i]
            return NodePartial(extra={"items": items}, frontier=Replace(["dedupe"]))
    # Nothing left to remove: write nothing, route to itself anyway; version gating ends the loop.
    return NodePartial(frontier=Replace(["dedupe"]))


app = (
    GraphBuilder()
    .add_node("tick", tick)
    .add_node("dedupe", dedupe)
    .add_edge(START, "tick")
    .add_conditional_edges("tick", again_or_stop, path_map={"again": "tick", "stop": "dedupe"})
    .add_edge("dedupe", END)  # needed to compile; Replace overrides it at run time
    .with_reducer("messages", reducer(keep_last_two, label="keep_last_two"))
    .compile()
)


async def main() -> None:
    start = VersionedState(extra={"items": ["a", "b", "a", "c", "b"]})
    async with AppRunner(app) as runner:
        await runner.create_session("loop", start)
        while True:
            result = await runner.run_step("loop")
            assert isinstance(result, Completed)
            r = result.report
            print(
                f"step {r.step}: ran {list(r.ran_nodes)} skipped {list(r.skipped_nodes)} "
                f"updated {list(r.updated_channels)} -> next {list(r.next_frontier)}"
            )
            if r.completed:
                break
        final = (await runner.get_session("loop")).state
        # The same loop in one call: run_steps runs steps until the session completes, a step
        # pauses, or stop() is true before a step.
        await runner.create_session("again", start)
        whole = await runner.run_steps("again")
        assert isinstance(whole, Completed)
    print("count:", final.require_typed(COUNT))
    print("items:", list(final.extra["items"]))
    print("messages:", [m.content for m in final.messages])
    print(f"versions: messages={final.messages_version} extra={final.extra_version}")
    print(f"run_steps: last step {whole.report.step}, completed {whole.report.completed}")


if __name__ == "__main__":
    trio.run(main)
