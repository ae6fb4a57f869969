"""Properties of the bus under any interleaving: order kept, nothing lost unaccounted, sentinels kept."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import example, given, register_random, settings
from hypothesis import strategies as st

from treadle.runtime.events.bus import EventBus
from treadle.runtime.events.stream import Buffer
from treadle.runtime.events.types import (
    DiagnosticEvent,
    Event,
    NodeEvent,
    invocation_end,
    is_sentinel,
    stream_end,
)
from treadle.sinks import MemorySink

# trio shuffles each batch of runnable tasks with this Random; registering it lets Hypothesis seed it
# per example (with st.random_module()), so each example explores its own, reproducible schedule.
register_random(trio._core._run._r)

# -- the buffer against a model -------------------------------------------------------------------


@given(
    capacity=st.integers(min_value=1, max_value=6),
    ops=st.lists(
        st.tuples(st.sampled_from(["event", "sentinel", "take", "put_back"]), st.booleans()),
        max_size=60,
    ),
)
# A sentinel taken, then put back in front once the buffer was found empty (put_plain forgets
# what it kept then), then pushed out of room: events go, the sentinel stays.
@example(
    capacity=2,
    ops=[
        ("sentinel", True),
        ("take", True),
        ("event", True),
        ("put_back", True),
        ("event", True),
        ("event", True),
    ],
)
def test_buffer_matches_its_model(capacity: int, ops: list[tuple[str, bool]]) -> None:
    """Drop-oldest that skips sentinels, unless only sentinels are left; drops counted. Items go
    in with ``put`` (the buffer asks ``keep``) or ``put_kept``/``put_plain`` (the publisher tells); taken ones
    may be put back in front (a sink that failed)."""
    buffer: Buffer[tuple[str, int]] = Buffer(capacity, keep=lambda item: item[0] == "sentinel")
    model: list[tuple[str, int]] = []
    dropped = 0

    def evict_past_capacity() -> None:
        nonlocal dropped
        while len(model) > capacity:
            dropped += 1
            victims = [i for i, item in enumerate(model) if item[0] != "sentinel"]
            del model[victims[0] if victims else 0]

    in_hand: list[tuple[str, int]] = []  # taken and not handled yet
    for n, (op, known) in enumerate(ops):
        if op == "take":
            if model:
                in_hand.append(buffer.items.popleft())
                assert in_hand[-1] == model.pop(0)
            else:
                assert not buffer.items
            continue
        if op == "put_back":
            buffer.put_back(in_hand)
            model[:0] = in_hand
            in_hand = []
            evict_past_capacity()
        else:
            model.append((op, n))
            evict_past_capacity()
            if known:
                (buffer.put_kept if op == "sentinel" else buffer.put_plain)((op, n))
            else:
                buffer.put((op, n))
        assert list(buffer.items) == model
        assert buffer.dropped == dropped
        assert len(buffer.items) <= capacity


def test_a_full_buffer_asks_keep_only_while_a_kept_item_may_be_buffered() -> None:
    asked: list[str] = []

    def keep(item: str) -> bool:
        asked.append(item)
        return item == "end"

    buffer: Buffer[str] = Buffer(2, keep=keep)
    buffer.put_kept("end")
    buffer.put_plain("a")
    buffer.put_plain("b")  # full: "end" is kept, "a" goes
    assert list(buffer.items) == ["end", "b"]
    buffer.items.clear()  # read
    asked.clear()
    for item in "cdef":
        buffer.put_plain(item)
    assert (list(buffer.items), buffer.dropped, asked) == (["e", "f"], 3, [])


# -- the bus under random schedules ----------------------------------------------------------------

SESSIONS = ("a", "b")


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    delays = st.sampled_from([0.0, 0.0, 0.01, 0.1])
    publishers = draw(
        st.lists(
            st.lists(st.tuples(st.sampled_from(SESSIONS), delays), max_size=12),
            min_size=1,
            max_size=4,
        )
    )
    # At most two INVOCATION_ENDs mid-run (plus two STREAM_ENDs): never more sentinels than
    # the smallest buffer holds, so none may be dropped.
    flat = [(p, i) for p, plan in enumerate(publishers) for i in range(len(plan))]
    invocation_ends = draw(st.lists(st.sampled_from(flat), max_size=2, unique=True)) if flat else []
    return {
        "capacity": draw(st.integers(min_value=4, max_value=8)),
        "invocation_ends": set(invocation_ends),
        "after_end": draw(st.integers(min_value=0, max_value=12)),
        "publishers": publishers,
        "sink_delays": draw(st.lists(delays, min_size=1, max_size=5)),
        "reader_delays": draw(st.lists(delays, min_size=1, max_size=5)),
    }


class RecordingBus(EventBus):
    """Remembers every stamped event in the order the bus stamped them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[Event] = []

    def publish_nowait(self, session_id: str | None, event: Event) -> Event:
        stamped = super().publish_nowait(session_id, event)
        self.log.append(stamped)
        return stamped


class SlowSink:
    """An async sink that sleeps a cycling schedule of delays before taking each event."""

    def __init__(self, delays: list[float]) -> None:
        self.name = "slow"
        self.delays = delays
        self.seen: list[Event] = []

    async def handle(self, event: Event) -> None:
        await trio.sleep(self.delays[len(self.seen) % len(self.delays)])
        self.seen.append(event)


def assert_in_publication_order(seen: list[Event], published: list[Event]) -> None:
    position = {id(event): index for index, event in enumerate(published)}
    indexes = [position[id(event)] for event in seen]
    assert indexes == sorted(set(indexes)), "a consumer saw events out of order or twice"


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.random_module())
def test_any_schedule_keeps_order_and_accounts_for_every_event(
    scenario: dict[str, Any], random_module: object
) -> None:
    async def main() -> None:
        capacity = scenario["capacity"]
        total = sum(len(p) for p in scenario["publishers"])
        slow = SlowSink(scenario["sink_delays"])
        bus = RecordingBus([MemorySink(), slow], capacity=capacity)
        finish_times: list[float] = []
        expected_finish: list[float] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(bus.run)
            watcher = bus.subscribe(session_id="a")
            reader_seen: list[Event] = []

            async def reader() -> None:
                delays = scenario["reader_delays"]
                async for event in watcher:
                    reader_seen.append(event)
                    await trio.sleep(delays[len(reader_seen) % len(delays)])

            async def publisher(index: int, plan: list[tuple[str, float]]) -> None:
                start = trio.current_time()
                for n, (session, delay) in enumerate(plan):
                    if (index, n) in scenario["invocation_ends"]:
                        event: Event = invocation_end(session, 1)
                    else:
                        event = NodeEvent("p", 1, "tick", "x", timestamp=0.0)
                    await bus.publish(session, event)
                    await trio.sleep(delay)
                finish_times.append(trio.current_time() - start)
                expected_finish.append(sum(d for _, d in plan))

            never_read = bus.subscribe()
            nursery.start_soon(reader)
            async with trio.open_nursery() as publishers:
                for index, plan in enumerate(scenario["publishers"]):
                    publishers.start_soon(publisher, index, plan)
            for session in SESSIONS:
                await bus.publish(session, stream_end(session, 1))
            for _ in range(scenario["after_end"]):
                await bus.publish(None, DiagnosticEvent("run", "after the ends"))
            await bus.aclose(flush_timeout=1000)

        # Consumers never slow a publisher down: each finished at exactly its own sleep total
        # (up to float rounding of the virtual clock's start offset).
        assert sorted(finish_times) == pytest.approx(sorted(expected_finish), abs=1e-9)
        published = bus.log
        assert len(published) == total + 2 + scenario["after_end"]
        assert Counter(e.seq for e in published if e.session_id == "a") == Counter(
            range(sum(1 for e in published if e.session_id == "a"))
        )
        # The slow sink: in order; every event either handled or dropped; sentinels all kept.
        assert_in_publication_order(slow.seen, published)
        assert len(slow.seen) + bus.sink_health()[1].dropped == len(published)
        fast, fast_health = bus.sinks[0], bus.sink_health()[0]
        assert isinstance(fast, MemorySink)
        assert_in_publication_order(fast.snapshot(), published)
        assert len(fast) + fast_health.dropped == len(published)
        assert [e for e in slow.seen if is_sentinel(e)] == [e for e in published if is_sentinel(e)]
        # The session reader: only session "a", up to and including its STREAM_END.
        routed = [e for e in published if e.session_id == "a"]
        assert_in_publication_order(reader_seen, routed)
        assert len(reader_seen) + watcher.dropped == len(routed)
        assert is_sentinel(reader_seen[-1])
        # The stream nobody read kept its newest events and both sentinels.
        leftover = [e async for e in never_read]
        assert len(leftover) + never_read.dropped == len(published)
        assert [e for e in leftover if is_sentinel(e)] == [e for e in published if is_sentinel(e)]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
