"""Resuming carries every field of the checkpoint: a session reopened in a new runner before each
of its steps (``tests/apps.py``'s rich graph: a join half-fired across steps, a version-gated node,
a conditional loop, a retried node) stores exactly the checkpoints of an uninterrupted run, field by
field, on every backend. ``docs/testing.md`` lists the mutants these tests kill.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio
from apps import Gauge, rich_app

from treadle import (
    END,
    START,
    AppRunner,
    Checkpoint,
    Fresh,
    GraphBuilder,
    GraphMismatch,
    MockClock,
    NodePartial,
    Resumed,
    StepReport,
    VersionedState,
)
from treadle.runtime.checkpointers.checkpoint import InMemoryCheckpointer

pytest_plugins = ["pg_fixtures"]

SESSION = "fields"
START_S = 1_000.0  # the runner clock at step 0; each step is one second later
LIMIT = 2  # the session's own concurrency limit; every runner is opened with another one
FIELDS = [field.name for field in attrs.fields(Checkpoint)]


@attrs.frozen
class Run:
    reports: list[StepReport]
    latest: list[Checkpoint]  # the latest stored checkpoint after each step (step 0 first)
    history: list[Checkpoint]  # every stored step at the end (durable stores keep them all)
    sessions: list[str]
    most_at_once: int


def store_factory(kind: str, make_backend: Callable[..., Any]) -> Callable[[], Any]:
    if kind == "memory":
        shared = InMemoryCheckpointer()  # one store that outlives each runner, as a file would
        return lambda: shared
    return lambda: make_backend(kind)


async def run_session(open_store: Callable[[], Any], *, reopen_every_step: bool) -> Run:
    """Run the rich graph's session to the end, in one runner or in a new runner per step.

    Every runner is opened with a concurrency limit other than the session's (the stored one must
    win), and with a clock one second past the last step (as the single runner's clock moves).
    """
    gauge = Gauge()
    app = rich_app(observe=gauge.visit)
    reports: list[StepReport] = []
    latest: list[Checkpoint] = []
    clock = MockClock(START_S)
    async with AppRunner(
        app, checkpointer=open_store(), clock=clock, concurrency_limit=3
    ) as runner:
        init = await runner.create_session(SESSION, VersionedState(), concurrency_limit=LIMIT)
        assert init == Fresh()
        latest.append(await runner.checkpoints.load_latest(SESSION))
        done = reopen_every_step
        while not done:
            clock.advance(1)
            done = await one_step(runner, reports, latest)
    while reopen_every_step:
        step = len(reports)
        async with AppRunner(
            app,
            checkpointer=open_store(),
            clock=MockClock(START_S + step + 1),
            concurrency_limit=3,
        ) as runner:
            assert await runner.create_session(SESSION) == Resumed(step)
            if await one_step(runner, reports, latest):
                break
    async with AppRunner(app, checkpointer=open_store()) as reader:
        infos = await reader.get_state_history(SESSION)
        history = [await reader.load_checkpoint(SESSION, info.step) for info in infos]
        sessions = await reader.checkpoints.list_sessions()
    return Run(reports, latest, history, sessions, gauge.most)


async def one_step(runner: AppRunner, reports: list[StepReport], latest: list[Checkpoint]) -> bool:
    result = await runner.run_step(SESSION)
    reports.append(result.report)
    latest.append(await runner.checkpoints.load_latest(SESSION))
    return result.report.completed


def field_differences(expected: list[Checkpoint], actual: list[Checkpoint]) -> list[str]:
    """``"step N: field"`` for every field that differs (or a length mismatch)."""
    if len(expected) != len(actual):
        return [f"{len(actual)} checkpoints instead of {len(expected)}"]
    return [
        f"step {want.step}: {name}"
        for want, got in zip(expected, actual, strict=True)
        for name in FIELDS
        if getattr(want, name) != getattr(got, name)
    ]


@pytest.mark.parametrize("kind", ["memory", "sqlite", "json"])
async def test_a_session_resumed_before_every_step_stores_what_an_uninterrupted_one_does(
    kind: str, make_backend: Callable[..., Any]
) -> None:
    with trio.fail_after(60):
        open_store = store_factory(kind, make_backend)
        reference = await run_session(open_store, reopen_every_step=False)
        async with AppRunner(rich_app(), checkpointer=open_store()) as runner:
            assert await runner.checkpoints.delete_session(SESSION)
        resumed = await run_session(open_store, reopen_every_step=True)
    # The graph did what it is for: a join half-fired across steps, a gated node, 19 steps.
    assert len(reference.reports) == 19
    assert reference.latest[2].join_state == {"left+right->merge": ("left",)}
    assert ("check",) in [report.skipped_nodes for report in reference.reports]
    assert reference.most_at_once == resumed.most_at_once == LIMIT

    assert resumed.reports == reference.reports
    assert field_differences(reference.latest, resumed.latest) == []
    assert field_differences(reference.history, resumed.history) == []
    assert resumed.sessions == reference.sessions == [SESSION]
    # Each field was seen to vary, so comparing it compares something.
    varied = {
        name for name in FIELDS if len({repr(getattr(cp, name)) for cp in reference.latest}) > 1
    }
    # invocation is an iterative session's count (None here; tests/test_iterative_backends.py).
    assert varied == set(FIELDS) - {"session_id", "concurrency_limit", "graph_hash", "invocation"}
    [only] = {(cp.session_id, cp.concurrency_limit, cp.graph_hash) for cp in reference.latest}
    assert only == (SESSION, LIMIT, rich_app().graph.graph_metadata().graph_hash)
    if kind != "memory":  # the in-memory store keeps the latest step only
        assert [cp.step for cp in resumed.history] == list(range(20))
        assert [cp.created_at for cp in resumed.history] == [
            round((START_S + step) * 1000) for step in range(20)
        ]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_resume_with_another_graph_reads_the_stored_graph_hash(
    kind: str, make_backend: Callable[..., Any]
) -> None:
    open_store = store_factory(kind, make_backend)

    async def other(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial()

    changed = GraphBuilder().add_node("plan", other).add_edge(START, "plan").add_edge("plan", END)
    changed = changed.compile()
    with trio.fail_after(30):
        async with AppRunner(rich_app(), checkpointer=open_store()) as runner:
            await runner.create_session(SESSION, VersionedState())
            await runner.run_step(SESSION)
        async with AppRunner(changed, checkpointer=open_store()) as runner:
            with pytest.raises(GraphMismatch):
                await runner.create_session(SESSION)
