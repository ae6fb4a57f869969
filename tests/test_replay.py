"""Replay conformance (SPEC 9): a run stopped by a process exit and resumed in a new runner equals
an uninterrupted one under the default profile; real differences are reported first one first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from iterative_apps import accumulator_app, drain

import treadle
import treadle.testing
from treadle import (
    AppRunner,
    DiagnosticEvent,
    MockClock,
    NodeEvent,
    NodePartial,
    ReplayRun,
    VersionedState,
    compare_event_sequences_with,
    compare_replay_runs,
    normalize_event,
)

INPUTS = [2, 7, 1, 8, 2, 8]


async def run_part(url: str, session: str, inputs: list[int], *, finish: bool) -> ReplayRun:
    """Feed ``inputs`` to ``session`` in a runner of its own (a process of the driver)."""
    async with AppRunner(accumulator_app(), checkpointer=url, clock=MockClock(0)) as runner:
        with runner.event_stream(session_id=session) as stream:
            await runner.create_iterative_session(session, VersionedState())
            for value in inputs:
                state = await runner.invoke_next(session, NodePartial(extra={"x": value}))
            if finish:
                await runner.finish_iterative_session(session)
            return ReplayRun(state, drain(stream))


async def test_a_run_resumed_in_a_new_runner_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    with trio.fail_after(30):
        whole = await run_part(f"sqlite:///{tmp_path / 'a.db'}", "s", INPUTS, finish=True)
        url = f"sqlite:///{tmp_path / 'b.db'}"
        first = await run_part(url, "s", INPUTS[:2], finish=False)
        second = await run_part(url, "s", INPUTS[2:], finish=True)
    resumed = ReplayRun(second.state, first.events + second.events)
    # seq restarted at 0 in the second runner: only the default profile hides that.
    assert [e.seq for e in resumed.events] != [e.seq for e in whole.events]
    comparison = compare_replay_runs(whole, resumed)
    assert comparison.matches, comparison.differences
    comparison.assert_matches()


def node_event(step: int, message: str, **metadata: Any) -> NodeEvent:
    return NodeEvent(
        "acc",
        step,
        "acc",
        message,
        {"node_id": "acc", "step": step, "frontier_index": 0, "node_seq": 0, **metadata},
    )


def test_a_real_difference_is_reported_first_difference_first() -> None:
    left = ReplayRun(
        VersionedState(extra={"sum": 10, "last": 10}),
        [node_event(1, "sum=1"), node_event(3, "sum=10")],
    )
    right = ReplayRun(
        VersionedState(extra={"sum": 11, "last": 10}),
        [node_event(1, "sum=1"), node_event(3, "sum=11")],
    )
    comparison = compare_replay_runs(left, right)
    assert not comparison.matches
    assert comparison.differences == (
        "state.extra['sum']: left=10 right=11",
        'event 1 differs: left={"message": "sum=10", "metadata": {"frontier_index": 0, '
        '"node_id": "acc", "node_seq": 0, "step": 3}, "scope": "acc", "session_id": null, '
        '"type": "node"} right={"message": "sum=11", "metadata": {"frontier_index": 0, '
        '"node_id": "acc", "node_seq": 0, "step": 3}, "scope": "acc", "session_id": null, '
        '"type": "node"}',
    )
    with pytest.raises(AssertionError, match=r"the runs differ:\n  state.extra\['sum'\]"):
        comparison.assert_matches()


def test_counts_and_types_are_differences_too() -> None:
    short = ReplayRun(VersionedState(extra={"n": 1}), [node_event(1, "a")])
    long = ReplayRun(VersionedState(extra={"n": 1.0}), [node_event(1, "a"), node_event(2, "b")])
    assert compare_replay_runs(short, long).differences == (
        "state.extra['n']: left=1 right=1.0",
        "event count differs: left=1 right=2",
    )


def test_normalizers() -> None:
    event = node_event(2, "hi", invocation_id="s:1")
    event = event.stamped("s", 41)
    plain = normalize_event(event)
    assert "timestamp" not in plain
    assert set(plain) == {"type", "scope", "message", "session_id", "seq", "metadata"}
    assert plain["metadata"]["invocation_id"] == "s:1"
    default = treadle.normalize_event_default(event)
    assert "seq" not in default
    assert "invocation_id" not in default["metadata"]
    # A custom profile: scopes only, in the order given.
    a = [node_event(1, "x"), DiagnosticEvent("d", "one")]
    b = [node_event(1, "y"), DiagnosticEvent("d", "two")]
    assert compare_event_sequences_with(a, b, lambda e: e.scope, canonical=False).matches
    assert not compare_event_sequences_with(a, b, normalize_event).matches
    assert compare_event_sequences_with([], [], normalize_event).matches
    # Canonical order: two nodes of one step, finished in either order, compare equal.
    first = NodeEvent("a", 1, "x", "a", {"node_id": "a", "step": 1, "frontier_index": 0})
    second = NodeEvent("b", 1, "x", "b", {"node_id": "b", "step": 1, "frontier_index": 1})
    assert compare_event_sequences_with([first, second], [second, first], normalize_event).matches
    swapped = compare_event_sequences_with(
        [first, second], [second, first], normalize_event, canonical=False
    )
    assert swapped.differences[0].startswith("event 0 differs")


def test_the_helpers_are_exported_from_treadle_and_treadle_testing() -> None:
    for name in (
        "ReplayRun",
        "compare_replay_runs",
        "compare_event_sequences_with",
        "normalize_event",
    ):
        assert getattr(treadle, name) is getattr(treadle.testing, name)
