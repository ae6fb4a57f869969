"""Live events over WebSocket: a run served by a ``WebSocketSink``, read by ``open_event_stream``.

One task runs a small graph (a fan-out of three workers and a summary) with lifecycle events on and
a ``WebSocketSink`` on loopback with a token; a second task follows the session with
``treadle.open_event_stream`` and prints each event as it arrives, until the session's
``STREAM_END``. A third reader joins after the run has finished and asks for ``from_seq=3``: the
server replays the session from its buffer. Run it with ``python examples/websocket_stream.py``.
"""

from __future__ import annotations

import trio

from treadle import (
    END,
    START,
    AppRunner,
    Event,
    EventBus,
    GraphBuilder,
    MemorySink,
    NodeContext,
    NodePartial,
    StateSnapshot,
    VersionedState,
    WebSocketSink,
    open_event_stream,
)

TOKEN = "let-me-in"


async def work(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    await trio.sleep(0.01 * (1 + len(ctx.node_id)))
    await ctx.emit("progress", f"{ctx.node_id} did its part")
    return NodePartial(extra={ctx.node_id: True})


async def summary(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    done = sorted(k for k in snapshot.extra if snapshot.extra[k] is True)
    await ctx.emit("summary", f"{len(done)} parts done")
    return NodePartial(extra={"parts": len(done)})


def build():  # type: ignore[no-untyped-def]
    builder = GraphBuilder().add_node("summary", summary)
    workers = ["a", "bb", "ccc"]
    for name in workers:
        builder.add_node(name, work).add_edge(START, name)
    return builder.add_edge(workers, "summary").add_edge("summary", END).compile()


async def follow(url: str, ready: trio.Event, seen: list[Event]) -> None:
    async with open_event_stream(url, token=TOKEN) as events:
        ready.set()
        async for event in events:
            seen.append(event)


async def main() -> None:
    server = WebSocketSink(token=TOKEN)  # 127.0.0.1, a free port
    memory = MemorySink()
    bus = EventBus([memory, server])
    async with AppRunner(build(), event_bus=bus, lifecycle_events=True) as runner:
        url = server.url("job")
        print(f"serving {url}")
        live: list[Event] = []
        async with trio.open_nursery() as nursery:
            ready = trio.Event()
            nursery.start_soon(follow, url, ready, live)
            await ready.wait()  # connected: it will see the run from its first event
            await runner.create_session("job", VersionedState())
            final = await runner.run_until_complete("job")
        for event in live:
            print(f"live: #{event.seq} {event.scope}: {event.message}")
        print(f"final extra: {dict(sorted(final.extra.items()))}")
        sent = [e for e in memory.snapshot() if e.session_id == "job"]
        print(
            f"the live reader saw all {len(sent)} events once, in order: {len(live) == len(sent)}"
        )

        # After the run: replay from seq 3 (still held by the server, 10,000 events per session).
        async with open_event_stream(url, token=TOKEN, from_seq=3) as events:
            replayed = [event.seq async for event in events]
        print(f"replayed from seq 3: {replayed[0]}..{replayed[-1]} ({len(replayed)} events)")
        stats = server.statistics()
        print(f"server: {stats.accepted} connections, {stats.dropped} events dropped")


if __name__ == "__main__":
    trio.run(main)
