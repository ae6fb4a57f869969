"""JSON serialisation: event JSON, JSON Lines files, reading events back, LLM token chunks.

A node streams an LLM-style answer chunk by chunk. Events go to a JSON Lines file and to a worker
thread that serialises them itself (``blocking_iter``); both read back equal to the originals.
The runner uses treadle's ``MockClock`` so timestamps are reproducible.
Run it with ``python examples/streaming_json.py``; it writes ``run.jsonl`` and ``thread.jsonl``.
"""

from __future__ import annotations

import json
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
    LLMEvent,
    MemorySink,
    MockClock,
    NodeContext,
    NodePartial,
    StateSnapshot,
    VersionedState,
    canonical_order,
)

RUN = Path("run.jsonl")
THREAD = Path("thread.jsonl")


async def answer(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    await ctx.emit("prompt", "asking the model", tokens=7, tags=["demo", "json"])
    for chunk in ("Tre", "adle ", "streams"):
        await ctx.emit_llm_chunk(chunk, stream_id="answer-1")
    await ctx.emit_llm_final(" events.", stream_id="answer-1")
    return NodePartial(extra={"answer": "Treadle streams events."})


app = (
    GraphBuilder()
    .add_node("answer", answer)
    .add_edge(START, "answer")
    .add_edge("answer", END)
    .compile()
)


def write_from_thread(stream: EventStream, path: Path) -> int:
    """Runs in a worker thread: blocking iteration, one compact JSON line per event."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for event in stream.blocking_iter():
            out.write(event.to_json_string() + "\n")
            count += 1
    return count


async def main() -> list[Event]:
    memory = MemorySink()
    bus = EventBus([memory, JsonLinesSink(RUN)])
    clock = MockClock(start_seconds=1_700_000_000.0)
    async with AppRunner(app, event_bus=bus, clock=clock) as runner:
        stream = runner.event_stream(session_id="llm")
        await runner.create_session("llm", VersionedState())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, write_from_thread, stream, THREAD)
            await runner.run_until_complete("llm")
    return memory.snapshot()


def show(events: list[Event]) -> None:
    prompt = events[0]
    print("one event as JSON:")
    print(prompt.to_json_pretty())
    print("compact:", prompt.to_json_string())
    chunks = [e for e in events if isinstance(e, LLMEvent)]
    print("LLM scopes:", [e.scope for e in chunks])
    print("answer:", "".join(e.chunk for e in chunks))
    for path in (RUN, THREAD):
        lines = path.read_text(encoding="utf-8").splitlines()
        back = [Event.from_json(line) for line in lines]
        print(f"{path}: {len(lines)} lines, read back equal: {back == events}")
    # Plain json tools work too: every line is one JSON object of the same shape.
    first = json.loads(RUN.read_text(encoding="utf-8").splitlines()[1])
    print("keys:", sorted(first), "metadata keys:", sorted(first["metadata"]))
    print("canonical order is the emission order here:", canonical_order(events) == events)


if __name__ == "__main__":
    show(trio.run(main))
