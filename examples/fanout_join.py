"""Fan-out, a deterministic merge, and a join whose sources finish in different steps.

``plan`` fans out to three researchers that run concurrently and finish in the reverse of their
frontier order; their writes still merge in frontier order. ``summarize`` waits, through a join edge,
for ``web``, ``papers`` and ``code_read``, which runs one step later than the others.
"""

from __future__ import annotations

import trio

from treadle import (
    END,
    START,
    AppRunner,
    Completed,
    EventBus,
    GraphBuilder,
    MemorySink,
    Message,
    NodeContext,
    NodePartial,
    StateSnapshot,
    VersionedState,
)


async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    return NodePartial(
        messages=[Message.assistant("plan: ask web, papers and code")],
        extra={"status": "researching"},
    )


def researcher(name: str, delay: float) -> object:
    async def research(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        await trio.sleep(delay)  # later in the frontier = shorter delay = finishes earlier
        await ctx.emit("finished", name)
        return NodePartial(
            messages=[Message.assistant(f"{name}: found something")],
            extra={f"finding.{name}": f"{name} notes", "lead": name},  # "lead": one key, 3 writers
        )

    return research


async def code_read(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    return NodePartial(extra={"finding.code": "code notes"})


async def summarize(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    found = sorted(key for key in snapshot.extra if key.startswith("finding."))
    return NodePartial(
        messages=[Message.assistant(f"summary of {', '.join(found)}")],
        extra={"status": None},  # None deletes the key
    )


app = (
    GraphBuilder()
    .add_node("plan", plan)
    .add_node("web", researcher("web", 0.03))
    .add_node("papers", researcher("papers", 0.02))
    .add_node("code_fetch", researcher("code_fetch", 0.01))
    .add_node("code_read", code_read)
    .add_node("summarize", summarize)
    .add_edge(START, "plan")
    .add_edge("plan", "web")
    .add_edge("plan", "papers")
    .add_edge("plan", "code_fetch")
    .add_edge("code_fetch", "code_read")
    .add_edge(["web", "papers", "code_read"], "summarize")  # join edge
    .add_edge("summarize", END)
    .compile()
)


async def main() -> None:
    memory = MemorySink()
    async with AppRunner(app, event_bus=EventBus([memory]), concurrency_limit=8) as runner:
        await runner.create_session("fanout", VersionedState.with_user_message("research treadle"))
        while True:
            result = await runner.run_step("fanout")
            assert isinstance(result, Completed)
            r = result.report
            print(f"step {r.step}: ran {list(r.ran_nodes)} -> next {list(r.next_frontier)}")
            if r.completed:
                break
        final = (await runner.get_session("fanout")).state
    finished = [event.message for event in memory.snapshot() if event.scope == "finished"]
    print("finishing order:", finished)
    print("messages (frontier order):")
    for message in final.messages:
        print(f"  {message.role}: {message.content}")
    print(f"extra['lead'] = {final.extra['lead']!r} (last writer in frontier order)")
    print(f"'status' in extra: {'status' in final.extra}")

    # The same graph, one node at a time and in one call: the same final state.
    again, events = await app.invoke_with_channel(
        VersionedState.with_user_message("research treadle"), concurrency_limit=1
    )
    async with events:
        count = len([event async for event in events])
    print(f"concurrency_limit=1 gives the same state: {again == final} ({count} events)")


if __name__ == "__main__":
    trio.run(main)
