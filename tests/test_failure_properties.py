"""Property: whatever ends a run and wherever, its stream ends once and a resume finishes the job.

A drawn graph runs on a real SQLite file and fails once at a drawn step and node: the node raises,
returns output that cannot be stored, the save of that step fails, or the caller's deadline passes
there. The run's event stream must end with exactly one ``STREAM_END`` (no hang); a step whose save
failed is not applied, and a retry in the same runner runs it again; the stored history must be one
gap-free run of steps, and a new runner resuming the session must reach the final state of a run
without the failure (SPEC 4.3).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from reference import Behaviour, GraphSpec, Value, build_app
from strategies import graph_specs

from treadle import AppRunner, CheckpointBackendError, NodePartial, NodeRunError, VersionedState
from treadle.runtime.checkpointers.checkpoint import Checkpoint
from treadle.runtime.checkpointers.sqlite import SQLiteCheckpointer
from treadle.runtime.events.types import STREAM_END_SCOPE

MAX_STEPS = 12
KINDS = ("exception", "invalid_output", "save_failure", "cancellation")


def step_free(spec: GraphSpec) -> GraphSpec:
    """``spec`` without values that depend on the step number, and without node failures.

    A failed step still counts (the step counter stays advanced), so after a node failure the same
    work runs one step later; only step-free output can then equal a run without the failure.
    """

    def clean(b: Behaviour) -> Behaviour:
        writes = tuple((k, Value("incr") if v.kind == "step" else v) for k, v in b.writes)
        return attrs.evolve(
            b, say=False, notes=(), writes=writes, max_attempts=b.flaky + 1, failure=None
        )

    return attrs.evolve(spec, nodes=tuple((name, clean(b)) for name, b in spec.nodes))


@attrs.define
class Fault:
    """Fires once, at ``step`` in ``node`` (or at the save of ``step``)."""

    kind: str
    step: int
    node: str
    armed: bool = True
    caller: trio.CancelScope | None = None

    def hit(self, node: str, step: int) -> bool:
        if self.armed and node == self.node and step == self.step:
            self.armed = False
            return True
        return False


@attrs.define(eq=False)
class Injected:
    """A node body that runs ``inner`` but fails as ``fault`` says, keeping ``inner``'s kind."""

    inner: Any
    kind: str
    name: str
    fault: Fault

    def _before(self, ctx: Any) -> NodePartial | None:
        if self.fault.kind == "save_failure" or not self.fault.hit(self.name, ctx.step):
            return None  # a failed save is the store's to inject
        match self.fault.kind:
            case "exception":
                raise RuntimeError(f"injected failure in {self.name} at step {ctx.step}")
            case "invalid_output":
                return NodePartial(extra={"bad": {1, 2}})
            case "cancellation":
                assert self.fault.caller is not None
                self.fault.caller.cancel()
        return None

    async def _run(self, snapshot: Any, ctx: Any) -> Any:
        bad = self._before(ctx)
        if bad is not None:
            return bad
        if self.kind == "runner":
            return await self.inner.run(snapshot, ctx)
        return await self.inner(snapshot, ctx)

    def _call_sync(self, snapshot: Any, ctx: Any) -> Any:
        bad = self._before(ctx)
        return bad if bad is not None else self.inner(snapshot, ctx)


@attrs.define(eq=False)
class InjectedRunner:
    wrapper: Injected

    async def run(self, snapshot: Any, ctx: Any) -> Any:
        return await self.wrapper._run(snapshot, ctx)


def injected_app(spec: GraphSpec, fault: Fault) -> Any:
    """``build_app(spec)`` with ``fault``'s node wrapped; same definition hash, same kinds."""
    app = build_app(spec)
    graph = app.graph
    node = graph.nodes[fault.node]
    wrapper = Injected(node.fn, node.kind, fault.node, fault)
    body: Any = wrapper._run
    if node.kind == "sync":
        body = wrapper._call_sync
    elif node.kind == "runner":
        body = InjectedRunner(wrapper)
    nodes = {**graph.nodes, fault.node: attrs.evolve(node, fn=body)}
    app.graph = attrs.evolve(graph, nodes=nodes)
    return app


class FailingStore(SQLiteCheckpointer):
    """A real SQLite store whose save of ``fault.step`` fails once."""

    def __init__(self, path: Path, fault: Fault) -> None:
        super().__init__(path)
        self.fault = fault

    def _check(self, cp: Checkpoint) -> None:
        if self.fault.kind == "save_failure" and self.fault.hit(self.fault.node, cp.step):
            raise CheckpointBackendError("sqlite", f"injected failure saving step {cp.step}")

    async def save(self, cp: Checkpoint) -> None:
        self._check(cp)
        await super().save(cp)

    async def save_with_concurrency_check(self, cp: Checkpoint, expected_step: int | None) -> None:
        self._check(cp)
        await super().save_with_concurrency_check(cp, expected_step)


async def baseline(spec: GraphSpec, path: Path) -> tuple[VersionedState, list[Any]] | None:
    """The final state and stored history of an undisturbed run, or ``None`` if it does not end
    within MAX_STEPS."""
    async with AppRunner(build_app(spec), checkpointer=SQLiteCheckpointer(path)) as runner:
        await runner.create_session("s", VersionedState())
        for _ in range(MAX_STEPS):
            result = await runner.run_step("s")
            if result.report is not None and result.report.completed:
                final = (await runner.get_session("s")).state
                return final, await runner.get_state_history("s")
    return None


async def disturbed(spec: GraphSpec, fault: Fault, path: Path) -> VersionedState:
    app = injected_app(spec, fault)
    async with AppRunner(app, checkpointer=FailingStore(path, fault)) as runner:
        stream = runner.event_stream(session_id="s")
        await runner.create_session("s", VersionedState())
        error: BaseException | None = None
        with trio.CancelScope() as caller:
            fault.caller = caller
            try:
                await runner.run_until_complete("s")
            except (NodeRunError, CheckpointBackendError) as exc:
                error = exc
        events = [event async for event in stream]  # ends at STREAM_END: a missing one hangs
        if isinstance(error, CheckpointBackendError):
            # A step that is not stored is not applied: the session stays at the step before,
            # and a retry in the same runner runs that step again (SPEC 4.3).
            assert (await runner.get_session("s")).step == fault.step - 1
            await runner.run_until_complete("s")
    ends = [event for event in events if event.scope == STREAM_END_SCOPE]
    assert len(ends) == 1, ends
    assert ends[0] is events[-1]
    failed = error is not None or caller.cancelled_caught
    assert ends[0].metadata["status"] == ("error" if failed else "completed")
    if fault.armed:  # the fault never fired: nothing to resume
        assert not failed
    # A new runner resumes the session from what was stored.
    async with AppRunner(build_app(spec), checkpointer=SQLiteCheckpointer(path)) as runner:
        await runner.create_session("s")
        final = await runner.run_until_complete("s")
        history = await runner.get_state_history("s")
        last = await runner.load_checkpoint("s", history[-1].step)
    steps = [info.step for info in history]
    assert steps == list(range(len(steps))), steps  # one gap-free lineage
    assert last.state == final
    return final


@pytest.mark.parametrize("kind", KINDS)
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    spec=graph_specs(max_nodes=4, failures=False).map(step_free),
    data=st.data(),
    seed=st.random_module(),
)
def test_a_run_failing_anywhere_ends_its_stream_once_and_resumes_to_the_same_state(
    spec: GraphSpec, kind: str, data: st.DataObject, seed: Any
) -> None:
    with tempfile.TemporaryDirectory() as tmp:

        async def undisturbed() -> tuple[VersionedState, list[Any]] | None:
            with trio.fail_after(30):
                return await baseline(spec, Path(tmp) / "baseline.db")

        outcome = trio.run(undisturbed)
        assume(outcome is not None)
        assert outcome is not None
        expected, history = outcome
        # The point: a node execution of the undisturbed run (or the save of one of its steps).
        points = [(info.step, node) for info in history for node in info.ran_nodes]
        assume(points)
        step, node = data.draw(st.sampled_from(points), label="point")
        fault = Fault(kind, step, node)

        async def main() -> VersionedState:
            with trio.fail_after(30):
                return await disturbed(spec, fault, Path(tmp) / "run.db")

        final = trio.run(main)
    event(f"{kind}: {'did not fire' if fault.armed else 'fired'}")
    assert final.messages == expected.messages
    assert final.extra == expected.extra
    assert (final.messages_version, final.extra_version) == (
        expected.messages_version,
        expected.extra_version,
    )
