"""A step's work follows what the step wrote, not the size of the state (SPEC 3).

Two counters, neither of them a stopwatch, each taken per step with a small and a large state:

- the Python calls the runtime makes (a profiler): re-freezing, re-validating or comparing the
  whole state item by item shows here;
- the bytes the step allocates at its peak (``tracemalloc``, every thread, so the SQLite
  connection's thread too): copying the message tuple or the extra mapping, slicing the message
  history to compare it, or encoding the whole state into a checkpoint shows here, even when it
  is done by C code the profiler does not see.

A step that appends one message or sets one key must make the same calls, and allocate no more
than a small constant more, with 20,000 messages or keys as with 100.
"""

from __future__ import annotations

import sys
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import trio
import trio.testing

import treadle
from treadle import END, START, AppRunner, GraphBuilder, Message, NodePartial, VersionedState
from treadle.runtime.checkpointers import SQLiteCheckpointer

# The runtime's own code (the package root also holds tests and, in development, a venv).
RUNTIME = tuple(str(Path(treadle.__file__).parent / room) + "/" for room in ("runtime", "actors"))
STEPS = 4
SMALL = 100  # enough that the small run writes deltas too (a tiny state is re-snapshotted)
LARGE = 20_000
# What a step may allocate beyond the same step on a small state. Copying the large state's
# messages (a tuple of 20,000 pointers) alone allocates 160,000 bytes; its extra, far more.
SLACK_BYTES = 16_384


def loop_app(shape: str) -> Any:
    """One node writing one message or one new key a step (and a counter), ``STEPS`` times."""

    async def write(snapshot: Any, ctx: Any) -> NodePartial:
        n = snapshot.extra.get("n", 0) + 1
        if shape == "messages":
            return NodePartial(extra={"n": n}, messages=[Message.assistant(f"step {n}")])
        return NodePartial(extra={"n": n, f"new{n}": [ctx.step, "x"]})

    def again(snapshot: Any) -> str:
        return "write" if snapshot.extra["n"] < STEPS else END

    return (
        GraphBuilder()
        .add_node("write", write)
        .add_edge(START, "write")
        .add_conditional_edges("write", again, path_map=["write", END])
        .compile()
    )


def big_state(shape: str, size: int) -> VersionedState:
    if shape == "messages":
        return VersionedState(messages=[Message.user(f"message {i}") for i in range(size)])
    return VersionedState(
        extra={f"k{i}": [i, [i, "deep"], {"x": i, "y": [1.5, None, True]}] for i in range(size)}
    )


def cost_per_step(
    shape: str, size: int, store: Callable[[], Any] | None
) -> tuple[list[Counter[str]], list[int]]:
    """For each step after the first: how many times each treadle function was entered, and the
    peak bytes allocated above what was allocated when the step started."""
    app = loop_app(shape)
    counts: list[Counter[str]] = []
    peaks: list[int] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            filename = frame.f_code.co_filename
            if filename.startswith(RUNTIME):
                counts[-1][f"{Path(filename).name}:{frame.f_code.co_name}"] += 1

    async def main() -> None:
        options = {"checkpointer": store()} if store is not None else {}
        with trio.fail_after(60):
            async with AppRunner(app, durability="sync", **options) as runner:
                await runner.create_session("s", big_state(shape, size))
                await runner.run_step("s")  # the first step starts the node actor: not counted
                await trio.testing.wait_all_tasks_blocked()
                tracemalloc.start()
                try:
                    for _ in range(STEPS - 1):
                        counts.append(Counter())
                        tracemalloc.reset_peak()
                        before, _ = tracemalloc.get_traced_memory()
                        sys.setprofile(profile)
                        try:
                            await runner.run_step("s")
                            # The in-memory store's pipelined save belongs to this step too.
                            await trio.testing.wait_all_tasks_blocked()
                        finally:
                            sys.setprofile(None)
                        peaks.append(tracemalloc.get_traced_memory()[1] - before)
                finally:
                    tracemalloc.stop()

    # SQLite works in a real thread, which a jumping clock would not wait for.
    clock = trio.testing.MockClock(autojump_threshold=0) if store is None else None
    trio.run(main, clock=clock)
    return counts, peaks


def stores(store: str, folder: Path) -> tuple[Callable[[], Any] | None, Callable[[], Any] | None]:
    """How to make the checkpointer of the small run and of the large one."""
    if store == "memory":
        return None, None
    return (
        lambda: SQLiteCheckpointer(folder / "small.db"),
        lambda: SQLiteCheckpointer(folder / "large.db"),
    )


@pytest.mark.parametrize("shape", ["messages", "extra"])
@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_step_makes_the_same_calls_with_a_hundred_items_or_twenty_thousand(
    shape: str, store: str, tmp_path: Path
) -> None:
    """Counted on the Trio thread, where the scheduler merges and the checkpoint is encoded."""
    make_small, make_large = stores(store, tmp_path)
    small, _ = cost_per_step(shape, SMALL, make_small)
    large, _ = cost_per_step(shape, LARGE, make_large)
    assert sum(small[0].values()) < 500  # the count is of a step, not of the state
    assert large == small


@pytest.mark.parametrize("shape", ["messages", "extra"])
@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_step_allocates_the_same_with_a_hundred_items_or_twenty_thousand(
    shape: str, store: str, tmp_path: Path
) -> None:
    make_small, make_large = stores(store, tmp_path)
    _, small = cost_per_step(shape, SMALL, make_small)
    _, large = cost_per_step(shape, LARGE, make_large)
    assert max(large) <= max(small) + SLACK_BYTES, (small, large)


def chain_app(length: int) -> Any:
    """``length`` no-op nodes in a row: each step runs one node that has never run before."""

    async def noop(snapshot: Any, ctx: Any) -> None:
        return None

    builder = GraphBuilder()
    for i in range(length):
        builder.add_node(f"n{i}", noop)
        builder.add_edge(START if i == 0 else f"n{i - 1}", f"n{i}")
    return builder.add_edge(f"n{length - 1}", END).compile()


def test_a_step_allocates_the_same_after_ten_nodes_ran_or_three_thousand() -> None:
    """What a session keeps per node that ran (the versions it last saw) is updated in place, not
    copied by every step: a long chain's steps would otherwise cost O(nodes run so far). Without
    checkpoints (a checkpoint stores all of it, so takes a copy), as workflows run. Five steps are
    measured at each point: a table that grows (amortized O(1)) may land in one."""
    early, late, measured = 10, 3_000, 5
    peaks: dict[int, list[int]] = {early: [], late: []}

    async def main() -> None:
        with trio.fail_after(60):
            async with AppRunner(chain_app(late + measured + 1), autosave=False) as runner:
                await runner.create_session("s")
                for step in range(1, late + measured + 1):
                    at = next((p for p in peaks if p < step <= p + measured), None)
                    if at is None:
                        await runner.run_step("s")
                        continue
                    await trio.testing.wait_all_tasks_blocked()
                    tracemalloc.start()
                    try:
                        before, _ = tracemalloc.get_traced_memory()
                        await runner.run_step("s")
                        await trio.testing.wait_all_tasks_blocked()
                        peaks[at].append(tracemalloc.get_traced_memory()[1] - before)
                    finally:
                        tracemalloc.stop()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert min(peaks[late]) <= max(peaks[early]) + SLACK_BYTES, peaks
