"""canonical_order: any interleaving of one run's events sorts to the same list."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from treadle.runtime.events.types import (
    DiagnosticEvent,
    Event,
    LLMEvent,
    NodeEvent,
    canonical_order,
    stream_end,
)
from treadle.runtime.graph.frozen import FrozenDict


def _node_meta(node: str, step: int, index: int, seq: int) -> FrozenDict:
    # What the runtime's NodeContext attaches to every event a node emits.
    return FrozenDict(
        {
            "node_id": node,
            "step": step,
            "invocation_id": "i",
            "frontier_index": index,
            "node_seq": seq,
        }
    )


def _emission(kind: int, session: str, node: str, step: int, index: int, seq: int) -> Event:
    meta = _node_meta(node, step, index, seq)
    if kind == 0:
        return NodeEvent(node, step, "progress", f"{node}.{seq}", meta, 0.0, session)
    if kind == 1:
        return LLMEvent(session, node, None, f"tok{seq}", False, "chunk", meta, 0.0)
    return DiagnosticEvent("node.note", f"{node}.{seq}", meta, 0.0, session)


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[Event], list[Event]]:
    """One multi-session run: its canonical event list and one possible arrival order."""
    session_ids = draw(st.lists(st.text("abc", min_size=1, max_size=3), max_size=3, unique=True))
    canonical: list[Event] = []
    arrivals: list[list[Event]] = []
    for session in sorted(session_ids):
        ordered: list[Event] = []
        arrived: list[Event] = []
        steps = draw(st.integers(min_value=1, max_value=4))
        for step in range(1, steps + 1):
            width = draw(st.integers(min_value=0, max_value=4))
            per_node = []
            for index in range(width):
                count = draw(st.integers(min_value=0, max_value=3))
                node = f"n{draw(st.integers(0, 9))}"
                per_node.append(
                    [
                        _emission(draw(st.integers(0, 2)), session, node, step, index, seq)
                        for seq in range(1, count + 1)
                    ]
                )
            for events in per_node:
                ordered.extend(events)
            # Any merge of the nodes' emissions that keeps each node's own order.
            queues = [list(events) for events in per_node if events]
            while queues:
                queue = queues[draw(st.integers(0, len(queues) - 1))]
                arrived.append(queue.pop(0))
                queues = [q for q in queues if q]
            # Run-level diagnostics after the barrier, without step metadata.
            for n in range(draw(st.integers(min_value=0, max_value=2))):
                diag = DiagnosticEvent("routing.unknown_target", f"{step}.{n}", session_id=session)
                ordered.append(diag)
                arrived.append(diag)
        end = stream_end(session, steps)
        ordered.append(end)
        arrived.append(end)
        canonical.extend(ordered)
        arrivals.append(arrived)
    # Sessions run concurrently: any merge that keeps each session's own order.
    merged: list[Event] = []
    arrivals = [a for a in arrivals if a]
    while arrivals:
        queue = arrivals[draw(st.integers(0, len(arrivals) - 1))]
        merged.append(queue.pop(0))
        arrivals = [a for a in arrivals if a]
    return canonical, merged


@given(runs())
def test_every_interleaving_sorts_to_the_canonical_list(
    run: tuple[list[Event], list[Event]],
) -> None:
    canonical, arrived = run
    result = canonical_order(arrived)
    assert result == canonical
    # Identity is compared too: sorting neither copies nor loses events.
    assert all(a is b for a, b in zip(result, canonical, strict=True))


@given(runs())
def test_canonical_order_is_idempotent_and_a_permutation(
    run: tuple[list[Event], list[Event]],
) -> None:
    _, arrived = run
    once = canonical_order(arrived)
    assert canonical_order(once) == once
    assert sorted(map(id, once)) == sorted(map(id, arrived))


def test_run_level_events_stay_after_the_step_they_follow() -> None:
    a1 = NodeEvent("a", 1, "s", "a1", _node_meta("a", 1, 1, 1), session_id="s")
    b1 = NodeEvent("b", 1, "s", "b1", _node_meta("b", 1, 0, 1), session_id="s")
    note = DiagnosticEvent("routing.unknown_target", "after 1", session_id="s")
    a2 = NodeEvent("a", 2, "s", "a2", _node_meta("a", 2, 0, 1), session_id="s")
    early = DiagnosticEvent("run.start", "before anything", session_id="s")
    got = canonical_order([early, a1, b1, note, a2, stream_end("s", 2)])
    assert [e.message for e in got] == [
        "before anything",
        "b1",
        "a1",
        "after 1",
        "a2",
        "session=s status=completed step=2",
    ]


def test_sessions_are_grouped_none_first_then_by_id() -> None:
    x = DiagnosticEvent("d", "x", session_id="b")
    y = DiagnosticEvent("d", "y", session_id="a")
    z = DiagnosticEvent("d", "z")
    assert [e.message for e in canonical_order([x, y, z])] == ["z", "y", "x"]
