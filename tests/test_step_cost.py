"""A step's work follows what the step wrote, not the size of the state: the Python calls the
runtime makes in one step are counted (a profiler, not a stopwatch) with a small and a large
``extra``, and must be the same. Re-freezing or re-validating the whole state each step fails here.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import trio
import trio.testing

import treadle
from treadle import END, START, AppRunner, GraphBuilder, NodePartial, VersionedState

# The runtime's own code (the package root also holds tests and, in development, a venv).
RUNTIME = tuple(str(Path(treadle.__file__).parent / room) + "/" for room in ("runtime", "actors"))
STEPS = 4


def bump_app() -> Any:
    """One node writing one small key a step, looping ``STEPS`` times."""

    async def bump(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial(extra={"n": snapshot.extra.get("n", 0) + 1, "last": [ctx.step, "x"]})

    def again(snapshot: Any) -> str:
        return "bump" if snapshot.extra["n"] < STEPS else END

    return (
        GraphBuilder()
        .add_node("bump", bump)
        .add_edge(START, "bump")
        .add_conditional_edges("bump", again, path_map=["bump", END])
        .compile()
    )


def big_extra(keys: int) -> dict[str, Any]:
    return {f"k{i}": [i, [i, "deep"], {"x": i, "y": [1.5, None, True]}] for i in range(keys)}


def calls_per_step(keys: int) -> list[Counter[str]]:
    """For each step: how many times each treadle function was entered while it ran."""
    app = bump_app()
    counts: list[Counter[str]] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            filename = frame.f_code.co_filename
            if filename.startswith(RUNTIME):
                counts[-1][f"{Path(filename).name}:{frame.f_code.co_name}"] += 1

    async def main() -> None:
        with trio.fail_after(60):
            async with AppRunner(app) as runner:
                await runner.create_session("s", VersionedState(extra=big_extra(keys)))
                await runner.run_step("s")  # the first step starts the node actor: not counted
                await trio.testing.wait_all_tasks_blocked()
                for _ in range(STEPS - 1):
                    counts.append(Counter())
                    sys.setprofile(profile)
                    try:
                        await runner.run_step("s")
                        # The in-memory store's pipelined save belongs to this step too.
                        await trio.testing.wait_all_tasks_blocked()
                    finally:
                        sys.setprofile(None)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return counts


def test_a_step_costs_the_same_with_ten_keys_or_two_thousand() -> None:
    small = calls_per_step(10)
    large = calls_per_step(2_000)
    assert sum(small[0].values()) < 500  # the count is of a step, not of the state
    assert large == small
