"""Back-pressure and drops: slow and stuck readers lose their oldest events, never slow the run;
a lossless reader (``overflow="block"``) loses nothing, and the run waits for it instead.

Each sink and subscriber has its own bounded buffer (``capacity``). When it is full the oldest
event is dropped and counted; ``STREAM_END`` is never dropped. The run below is timed on trio's
virtual clock, so the example is instant and its numbers are exact.
Run it with ``python examples/streaming_backpressure.py``.
"""

from __future__ import annotations

import trio
import trio.testing

from treadle import (
    END,
    START,
    STREAM_END_SCOPE,
    AppRunner,
    EventBus,
    EventStream,
    GraphBuilder,
    MemorySink,
    NodeContext,
    StateSnapshot,
    VersionedState,
)

TICKS = 200


async def sensor(snapshot: StateSnapshot, ctx: NodeContext) -> None:
    for i in range(TICKS):
        await ctx.emit("reading", f"tick {i}", value=i)
        await trio.sleep(0.01)


app = (
    GraphBuilder()
    .add_node("sensor", sensor)
    .add_edge(START, "sensor")
    .add_edge("sensor", END)
    .compile()
)


async def slow_reader(stream: EventStream, received: list[str]) -> None:
    """Takes 0.1 s per event while events arrive every 0.01 s: most are dropped."""
    async for event in stream:
        received.append(event.scope)
        await trio.sleep(0.1)


async def timed_run(*, with_readers: bool) -> float:
    memory = MemorySink()
    async with AppRunner(app, event_bus=EventBus([memory], capacity=1024)) as runner:
        await runner.create_session("s", VersionedState())
        received: list[str] = []
        if with_readers:
            slow = runner.event_stream(session_id="s", capacity=16)
            stuck = runner.event_stream(session_id="s", capacity=16)  # never read during the run
        async with trio.open_nursery() as nursery:
            if with_readers:
                nursery.start_soon(slow_reader, slow, received)
            start = trio.current_time()
            await runner.run_until_complete("s")
            elapsed = trio.current_time() - start
    total = len(memory.snapshot())
    print(f"run took {elapsed:.2f} s of virtual time; the memory sink holds {total} events")
    if with_readers:
        got, lost = len(received), slow.dropped
        print(f"slow reader: received {got}, dropped {lost}, together {got + lost}")
        print(f"slow reader's last event: {received[-1]}")
        print(f"stuck reader: dropped {stuck.dropped} (= {total} - its capacity of 16)")
        late = [event async for event in stuck]  # reading only now
        print(f"stuck reader, read late: {len(late)} events, ending with {late[-1].scope}")
        assert late[-1].scope == STREAM_END_SCOPE
    return elapsed


async def lossless_run() -> None:
    """The same slow reader, subscribed with overflow="block": it gets every event, and the
    run is held back to its pace once 16 events wait unread."""
    async with AppRunner(app) as runner:
        await runner.create_session("s", VersionedState())
        lossless = runner.event_stream(session_id="s", capacity=16, overflow="block")
        received: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_reader, lossless, received)
            start = trio.current_time()
            await runner.run_until_complete("s")
            elapsed = trio.current_time() - start
    print(f"lossless reader: received {len(received)}, dropped {lossless.dropped}")
    print(f"the run waited for it: {elapsed:.2f} s of virtual time")


async def main() -> None:
    alone = await timed_run(with_readers=False)
    crowded = await timed_run(with_readers=True)
    # Both runs sum the same 200 sleeps from different start times: compare to the microsecond.
    print(f"same virtual time with slow readers: {round(alone, 6) == round(crowded, 6)}")
    await lossless_run()


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
