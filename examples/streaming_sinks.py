"""Several sinks and a live subscriber on one run: stdout, memory, a JSON Lines file, a stream.

Run it with ``python examples/streaming_sinks.py``; it writes ``events.jsonl`` in the working
directory.
"""

from __future__ import annotations

from pathlib import Path

import trio

from treadle import (
    END,
    START,
    AppRunner,
    Event,
    EventBus,
    EventStream,
    GraphBuilder,
    JsonLinesSink,
    MemorySink,
    NodeContext,
    NodePartial,
    StateSnapshot,
    StdOutSink,
    VersionedState,
)

JSONL = Path("events.jsonl")


async def fetch(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    await ctx.emit("fetch", "downloaded 3 rows", rows=3)
    return NodePartial(extra={"rows": [4, 8, 15]})


async def clean(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    rows = snapshot.extra["rows"]
    for row in rows:
        await ctx.emit("clean", f"row {row} ok")
    return NodePartial(extra={"total": sum(rows)})


async def report(snapshot: StateSnapshot, ctx: NodeContext) -> None:
    await ctx.emit("report", f"total is {snapshot.extra['total']}")


app = (
    GraphBuilder()
    .add_node("fetch", fetch)
    .add_node("clean", clean)
    .add_node("report", report)
    .add_edge(START, "fetch")
    .add_edge("fetch", "clean")
    .add_edge("clean", "report")
    .add_edge("report", END)
    .compile()
)


async def watch(stream: EventStream, seen: list[Event]) -> None:
    """A live subscriber: it reads while the run goes on; the stream ends after STREAM_END."""
    async for event in stream:
        seen.append(event)


async def main() -> None:
    memory = MemorySink()
    # Every sink gets its own buffer and actor: stdout, memory and a JSON Lines file at once.
    bus = EventBus([StdOutSink(), memory, JsonLinesSink(JSONL)])
    seen: list[Event] = []
    async with AppRunner(app, event_bus=bus) as runner:
        stream = runner.event_stream(session_id="etl")  # subscribe before the run starts
        await runner.create_session("etl", VersionedState.with_user_message("go"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, stream, seen)
            final = await runner.run_until_complete("etl")
    # Leaving the runner flushed every sink and closed the file.
    print(f"total: {final.extra['total']}")
    print(f"memory sink: {len(memory.snapshot())} events")
    print(f"subscriber: {len(seen)} events, last {seen[-1].scope}")
    lines = (await trio.Path(JSONL).read_text(encoding="utf-8")).splitlines()
    print(
        f"{JSONL}: {len(lines)} lines, same events: {[Event.from_json(x) for x in lines] == seen}"
    )
    for health in bus.sink_health():
        print(f"sink {health.sink}: {health.state}, errors={health.error_count}")


if __name__ == "__main__":
    trio.run(main)
