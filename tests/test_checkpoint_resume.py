"""Resuming through AppRunner on durable stores: a failed step is stored with its error and kept
frontier and re-run on resume; durability modes; time travel (history, fork); a backend that cannot
open fails the runner's start with its message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from treadle import (
    END,
    START,
    AppRunner,
    CheckpointBackendError,
    Fresh,
    GraphBuilder,
    Message,
    NodePartial,
    NodeRunError,
    Resumed,
    VersionedState,
)
from treadle.runtime.checkpointers import SQLiteCheckpointer


class Flaky:
    """A node that fails while ``broken`` is set."""

    def __init__(self) -> None:
        self.broken = False
        self.calls = 0

    async def run(self, snapshot: Any, ctx: Any) -> NodePartial:
        self.calls += 1
        if self.broken:
            raise RuntimeError("the tool is down")
        return NodePartial(extra={"b": snapshot.extra["a"] * 10})


def app_with(flaky: Flaky) -> Any:
    async def a(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial(
            extra={"a": snapshot.extra.get("a", 0) + 1}, messages=[Message.user("a")]
        )

    async def c(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial(extra={"c": snapshot.extra["b"] + 1})

    return (
        GraphBuilder()
        .add_node("a", a)
        .add_node("b", flaky.run)
        .add_node("c", c)
        .add_edge(START, "a")
        .add_edge("a", "b")
        .add_edge("b", "c")
        .add_edge("c", END)
        .compile()
    )


async def test_a_failed_step_is_stored_and_its_frontier_rerun_on_resume(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    flaky = Flaky()
    app = app_with(flaky)
    with trio.fail_after(30):
        async with AppRunner(app, checkpointer=url) as runner:
            assert await runner.create_session("s", VersionedState()) == Fresh()
            await runner.run_step("s")  # a
            flaky.broken = True
            with pytest.raises(NodeRunError) as info:
                await runner.run_step("s")  # b fails at step 2
            assert info.value.step == 2
            history = await runner.get_state_history("s")
            assert [i.step for i in history] == [0, 1, 2]
            assert history[2].updated_channels == ("errors",)
            stored = await runner.load_checkpoint("s", 2)
            assert stored.frontier == ("b",)  # kept, so a retry re-runs it
            [error] = stored.state.errors
            assert error.scope.name == "b"
            assert error.scope.step == 2
            assert "the tool is down" in error.error
            assert "b" not in stored.state.extra  # the failed step's partials were discarded

        flaky.broken = False
        async with AppRunner(app, checkpointer=url) as runner:  # a new "process"
            assert await runner.create_session("s", VersionedState()) == Resumed(2)
            final = await runner.run_until_complete("s")
            assert final.extra == {"a": 1, "b": 10, "c": 11}
            assert len(final.errors) == 1  # the failure stays on record
            history = await runner.get_state_history("s")
            assert [(i.step, i.ran_nodes) for i in history] == [
                (0, ()),
                (1, ("a",)),
                (2, ()),
                (3, ("b",)),
                (4, ("c",)),
            ]


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
async def test_durability_modes_store_what_they_promise(
    tmp_path: Path, durability: str, nursery: trio.Nursery
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    app = app_with(Flaky())
    with trio.fail_after(30):
        async with AppRunner(app, checkpointer=url, durability=durability) as runner:
            await runner.create_session("s", VersionedState())
            final = await runner.run_until_complete("s")
        store = SQLiteCheckpointer(tmp_path / "runs.db")
        await store.open(nursery)
        steps = [i.step for i in await store.list_steps("s")]
        latest = await store.load_latest("s")
        await store.aclose()
    assert latest is not None
    assert latest.state == final
    assert latest.step == 3
    # "exit" writes once, when the run ends; the others write every step.
    assert steps == ([3] if durability == "exit" else [0, 1, 2, 3])


async def test_fork_starts_a_new_session_from_any_stored_step(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    app = app_with(Flaky())
    with trio.fail_after(30):
        async with AppRunner(app, checkpointer=url) as runner:
            await runner.create_session("s", VersionedState(extra={"a": 5}))
            original = await runner.run_until_complete("s")
            assert await runner.fork("s", 1, "s-fork") == Resumed(1)
            forked = await runner.run_until_complete("s-fork")
            assert forked == original
            assert [i.step for i in await runner.get_state_history("s-fork")] == [1, 2, 3]
            assert [i.step for i in await runner.get_state_history("s")] == [0, 1, 2, 3]
            assert await runner.checkpoints.list_sessions() == ["s", "s-fork"]


async def test_a_backend_that_cannot_open_fails_the_runner_start(tmp_path: Path) -> None:
    app = app_with(Flaky())
    missing = tmp_path / "no" / "such" / "dir" / "runs.db"
    with trio.fail_after(30), pytest.raises(CheckpointBackendError, match="does not exist"):
        async with AppRunner(app, checkpointer=f"sqlite:///{missing}"):
            pass  # pragma: no cover - never reached
    with trio.fail_after(30), pytest.raises(CheckpointBackendError) as info:
        async with AppRunner(app, checkpointer="postgresql://me:hunter2@127.0.0.1:1/x"):
            pass  # pragma: no cover - never reached
    assert "postgresql://me:***@127.0.0.1:1/x" in str(info.value)
    assert "hunter2" not in str(info.value)
