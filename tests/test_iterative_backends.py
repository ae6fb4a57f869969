"""Iterative sessions on every backend and durability mode: a session closed after some inputs and
resumed in a new runner ends exactly like one that never stopped (state, step, stored history)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from iterative_apps import accumulator_app

from treadle import (
    END,
    AppRunner,
    Checkpoint,
    CheckpointBackendError,
    Fresh,
    InvalidIterativeEntry,
    MockClock,
    NodePartial,
    NotIterative,
    Resumed,
    SQLiteCheckpointer,
    VersionedState,
)

pytest_plugins = ["pg_fixtures"]

INPUTS = [3, 1, 1, 4, 1]


async def feed(runner: AppRunner, session: str, inputs: list[int]) -> None:
    for value in inputs:
        await runner.invoke_next(session, NodePartial(extra={"x": value}))


async def stored_history(runner: AppRunner, session: str) -> list[str]:
    steps = await runner.get_state_history(session)
    texts = []
    for info in steps:
        checkpoint = await runner.load_checkpoint(session, info.step)
        texts.append(json.dumps(checkpoint.to_json_value(), sort_keys=True))
    return texts


def store_for(kind: str, make_backend: Callable[..., Any]) -> Any:
    return "memory://" if kind == "memory" else make_backend(kind)


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
@pytest.mark.parametrize("kind", ["memory", "sqlite", "json", "postgres"])
async def test_a_resumed_iterative_session_continues_like_an_uninterrupted_one(
    kind: str, durability: str, make_backend: Callable[..., Any], tmp_path: Path
) -> None:
    options: dict[str, Any] = {"durability": durability, "clock": MockClock(0)}
    with trio.fail_after(60):
        if kind == "memory":
            # Memory keeps nothing past its runner: one runner, the session reopened in it.
            async with AppRunner(accumulator_app(), checkpointer="memory://", **options) as r:
                assert await r.create_iterative_session("a", VersionedState()) == Fresh()
                await feed(r, "a", INPUTS[:3])
                assert await r.create_iterative_session("a", VersionedState()) == Resumed(6)
                await feed(r, "a", INPUTS[3:])
                view = await r.get_session("a")
            assert (view.state.extra["sum"], view.step, view.invocation) == (10, 10, 5)
            return
        store = make_backend(kind)
        async with AppRunner(accumulator_app(), checkpointer=store, **options) as runner:
            assert await runner.create_iterative_session("whole", VersionedState()) == Fresh()
            await feed(runner, "whole", INPUTS)
            await runner.create_iterative_session("split", VersionedState())
            await feed(runner, "split", INPUTS[:3])
        async with AppRunner(accumulator_app(), checkpointer=make_backend(kind), **options) as r:
            assert await r.create_iterative_session("split", VersionedState()) == Resumed(6)
            view = await r.get_session("split")
            assert (view.invocation, view.invocation_pending) == (3, False)
            # An invalid entry changes nothing, stored history included.
            history = await stored_history(r, "split")
            for entry in (END, "ghost"):
                with pytest.raises(InvalidIterativeEntry):
                    await r.invoke_next("split", NodePartial(extra={"x": 99}), entry)
            assert await r.get_session("split") == view
            assert await stored_history(r, "split") == history
            await feed(r, "split", INPUTS[3:])
        async with AppRunner(accumulator_app(), checkpointer=make_backend(kind), **options) as r:
            # A plain create_session knows the stored session is iterative.
            assert await r.create_session("whole") == Resumed(10)
            assert await r.create_session("split") == Resumed(10)
            whole, split = await r.get_session("whole"), await r.get_session("split")
            assert whole.state == split.state
            assert whole.state.extra["sum"] == sum(INPUTS)
            assert (whole.step, split.step, split.invocation) == (10, 10, 5)
            history = await stored_history(r, "whole")
            assert [t.replace('"split"', '"whole"') for t in await stored_history(r, "split")] == (
                history
            )
            # Every step (and step 0) is stored, except under "exit": one write per invocation.
            assert len(history) == (5 if durability == "exit" else 11)
            await feed(r, "split", [2])  # a plain create_session resumed it as iterative


async def test_a_stored_plain_session_cannot_be_opened_as_iterative(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    with trio.fail_after(30):
        async with AppRunner(accumulator_app(), checkpointer=url) as runner:
            await runner.create_session("plain", VersionedState(extra={"x": 1}))
            await runner.run_until_complete("plain")
        async with AppRunner(accumulator_app(), checkpointer=url) as runner:
            with pytest.raises(NotIterative, match="'plain' is not an iterative session"):
                await runner.create_iterative_session("plain", VersionedState())
            assert runner.sessions() == []
            # Nothing was taken: it still opens as the plain session it is.
            assert await runner.create_session("plain") == Resumed(2)


class BreakableStore(SQLiteCheckpointer):
    """SQLite whose saves fail while ``broken`` is set (the disk is full, the server is gone)."""

    broken = False

    def _check(self) -> None:
        if self.broken:
            raise CheckpointBackendError("sqlite", "disk I/O error")

    async def save(self, cp: Checkpoint) -> None:
        self._check()
        await super().save(cp)

    async def save_with_concurrency_check(self, cp: Checkpoint, expected_step: int | None) -> None:
        self._check()
        await super().save_with_concurrency_check(cp, expected_step)


async def test_an_input_whose_first_step_is_not_stored_is_not_applied(tmp_path: Path) -> None:
    store = BreakableStore(tmp_path / "breakable.db")
    with trio.fail_after(30):
        async with AppRunner(accumulator_app(), checkpointer=store, clock=MockClock(0)) as runner:
            await runner.create_iterative_session("it", VersionedState())
            await feed(runner, "it", [1])
            before = await runner.get_session("it")
            store.broken = True
            with pytest.raises(CheckpointBackendError, match="disk I/O error"):
                await runner.invoke_next("it", NodePartial(extra={"x": 50}))
            assert await runner.get_session("it") == before
            store.broken = False
            state = await runner.invoke_next("it", NodePartial(extra={"x": 2}))
            assert (state.extra["x"], state.extra["sum"]) == (2, 3)
            steps = [info.step for info in await runner.get_state_history("it")]
            assert steps == [0, 1, 2, 3, 4]
