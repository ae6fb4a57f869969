"""What one ``ctx.emit`` costs, counted rather than timed: the objects an event keeps alive for the
garbage collector, and the Python calls the runtime makes per event. The metadata of an event
emitted without metadata of its own is built only when read, and reads the same as one built at
once.
"""

from __future__ import annotations

import gc
import pickle
import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import attrs
import pytest
import trio

import treadle
from treadle import (
    END,
    START,
    AppRunner,
    EventBus,
    GraphBuilder,
    MemorySink,
    NodeEvent,
    VersionedState,
    is_sentinel,
)
from treadle.runtime.events.stream import Overflow
from treadle.runtime.execution.context import NodeContext
from treadle.runtime.graph.frozen import FrozenDict

RUNTIME = tuple(str(Path(treadle.__file__).parent / room) + "/" for room in ("runtime", "actors"))


def context(bus: EventBus, **kwargs: Any) -> NodeContext:
    return NodeContext(
        node_id="n", step=3, session_id="s", invocation_id="i", frontier_index=2, bus=bus, **kwargs
    )


async def test_deferred_metadata_reads_like_built_metadata() -> None:
    bus = EventBus()
    stream = bus.subscribe(session_id="s")
    ctx = context(bus)
    await ctx.emit("tok", "plain")
    await ctx.emit("tok", "with", k=1)
    plain, with_meta = stream.receive_nowait(), stream.receive_nowait()
    assert plain.metadata == {
        "node_id": "n",
        "step": 3,
        "invocation_id": "i",
        "frontier_index": 2,
        "node_seq": 1,
    }
    assert list(plain.metadata) == [
        "node_id",
        "step",
        "invocation_id",
        "frontier_index",
        "node_seq",
    ]
    assert type(plain.metadata) is FrozenDict
    assert plain.metadata is plain.metadata  # built once
    assert with_meta.metadata["node_seq"] == 2
    assert with_meta.metadata["k"] == 1
    # Every way of reading an event sees the same metadata.
    back = NodeEvent.from_json(plain.to_json_string())
    assert back == plain
    assert hash(back) == hash(plain)
    assert pickle.loads(pickle.dumps(plain)) == plain
    assert "'node_seq': 1" in repr(plain)


async def test_a_stamped_copy_of_a_deferred_event_carries_its_metadata() -> None:
    bus = EventBus()
    stream = bus.subscribe(session_id="s")
    await context(bus).emit("tok", "x")
    event = stream.receive_nowait()
    copy = event.stamped("other", 7)
    assert copy.metadata == event.metadata
    assert copy.metadata["node_seq"] == 1
    assert (copy.session_id, copy.seq) == ("other", 7)


async def test_a_compact_event_reads_like_one_built_whole() -> None:
    bus = EventBus()
    stream = bus.subscribe(session_id="s")
    await context(bus).emit("tok", "x")
    await context(bus).emit("tok", "x")
    compact, other = stream.receive_nowait(), stream.receive_nowait()
    built = NodeEvent(
        node_id="n",
        step=3,
        scope="tok",
        message="x",
        metadata=compact.metadata,
        timestamp=compact.timestamp,
        session_id="s",
        seq=0,
    )
    assert compact == built
    assert hash(compact) == hash(built)
    assert repr(compact) == repr(built)
    assert (other.node_id, other.step, other.session_id, other.seq) == ("n", 3, "s", 1)
    assert attrs.evolve(other, seq=None) == attrs.evolve(built, seq=None, timestamp=other.timestamp)


async def test_a_kept_compact_event_gives_the_collector_few_references_to_follow() -> None:
    """The garbage collector walks every event a sink keeps, again at each full collection: an
    event ``ctx.emit`` built compact refers it to its type, the execution's shared origin and its
    own scope, message, timestamp, seq and node_seq; the fields shared by the execution's events
    are filled in only when read."""
    bus = EventBus()
    stream = bus.subscribe(session_id="s")
    await context(bus).emit("tok", "x")
    event = stream.receive_nowait()
    assert len(gc.get_referents(event)) <= 7
    assert event.node_id == "n"  # reading a field fills the others in
    assert len(gc.get_referents(event)) > 7


async def test_an_unknown_attribute_is_still_an_attribute_error() -> None:
    bus = EventBus()
    stream = bus.subscribe(session_id="s")
    await context(bus).emit("tok", "x")
    event = stream.receive_nowait()
    with pytest.raises(AttributeError, match="no_such_field"):
        event.no_such_field  # type: ignore[attr-defined]  # noqa: B018


async def test_a_kept_event_keeps_one_object_alive() -> None:
    """A sink that keeps every event keeps one GC-tracked object per event, not an event and a
    metadata dict: a run's events cost the collector half as much."""
    bus = EventBus([MemorySink()])
    ctx = context(bus)
    kept: list[object] = []
    stream = bus.subscribe(session_id="s", capacity=2_000)
    for _ in range(10):  # warm up the caches of the code involved
        await ctx.emit("tok", "x")
    kept.extend(stream.receive_nowait() for _ in range(10))
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(1_000):
        await ctx.emit("tok", "x")
    kept.extend(stream.receive_nowait() for _ in range(1_000))
    gc.collect()
    assert len(gc.get_objects()) - before < 1_100


def emitter_app(count: int) -> Any:
    async def emit(snapshot: object, ctx: Any) -> None:
        for _ in range(count):
            await ctx.emit("tok", "x")

    return GraphBuilder().add_node("emit", emit).add_edge(START, "emit").add_edge("emit", END)


def calls_per_event(count: int, overflow: Overflow = "drop_oldest", *, read: bool = True) -> float:
    """Python calls into the runtime, per emitted event, in a run that emits ``count`` events to a
    MemorySink and a live stream (with ``overflow``) read by another task (or, without ``read``, a
    stream of 16 events never read, which drops all but its last 16)."""
    app = emitter_app(count).compile()
    calls: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(RUNTIME):
            calls[frame.f_code.co_name] += 1

    async def main() -> None:
        with trio.fail_after(60):
            async with AppRunner(app, event_bus=EventBus([MemorySink()])) as runner:
                stream = runner.event_stream(
                    session_id="s", overflow=overflow, capacity=None if read else 16
                )

                async def consume() -> None:
                    async for ev in stream:
                        if is_sentinel(ev):
                            break

                await runner.create_session("s", VersionedState())
                async with trio.open_nursery() as nursery:
                    if read:
                        nursery.start_soon(consume)
                    sys.setprofile(profile)
                    try:
                        await runner.run_until_complete("s")
                    finally:
                        sys.setprofile(None)

    trio.run(main)
    return sum(calls.values()) / count


@pytest.mark.parametrize("overflow", ["drop_oldest", "block"])
def test_an_emitted_event_costs_a_few_calls(overflow: Overflow) -> None:
    # Per event: emit, building the event, publishing it (two buffers), the stream's read and the
    # sink's handle; a lossless stream adds a check for room. Extra coroutine layers or
    # per-event helpers show up here.
    assert calls_per_event(2_000, overflow) < {"drop_oldest": 7.5, "block": 9.5}[overflow]


def test_a_stream_that_fell_behind_drops_without_a_call_per_event() -> None:
    # Every event evicts the stream's oldest, which is no sentinel: the buffer knows it holds none
    # and evicts without asking (and without a helper call).
    assert calls_per_event(2_000, read=False) < 6
