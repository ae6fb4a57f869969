"""Session identity on every durable backend: ``fork`` never overwrites a session, and a session
remembers the graph it ran so that resuming it with a different graph is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
from apps import counter_app

from treadle import (
    END,
    START,
    AppRunner,
    GraphBuilder,
    GraphMismatch,
    NodePartial,
    Resumed,
    SessionExists,
    VersionedState,
)

pytest_plugins = ["pg_fixtures"]
BACKENDS = ["sqlite", "json", "postgres"]


def other_app() -> Any:
    """A graph with a different definition from :func:`counter_app`."""

    async def tock(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial(extra={"n": snapshot.extra.get("n", 0) + 10})

    return (
        GraphBuilder()
        .add_node("tock", tock)
        .add_edge(START, "tock")
        .add_edge("tock", END)
        .compile()
    )


async def history(runner: AppRunner, session_id: str) -> list[tuple[int, Any]]:
    steps = [info.step for info in await runner.get_state_history(session_id)]
    return [(step, (await runner.load_checkpoint(session_id, step)).state) for step in steps]


@pytest.mark.parametrize("kind", BACKENDS)
async def test_fork_onto_a_stored_session_raises_and_leaves_it_unchanged(
    kind: str, make_backend: Callable[..., Any]
) -> None:
    app = counter_app(limit=3, pause=0)
    with trio.fail_after(30):
        async with AppRunner(app, checkpointer=make_backend(kind)) as runner:
            await runner.create_session("a", VersionedState(extra={"n": 0}))
            await runner.run_until_complete("a")
            await runner.create_session("b", VersionedState(extra={"n": 100}))
            await runner.run_step("b")
        async with AppRunner(app, checkpointer=make_backend(kind)) as runner:
            before = await history(runner, "b")
            # "b" is stored but not open on this runner: still never overwritten.
            with pytest.raises(SessionExists) as info:
                await runner.fork("a", 0, "b")
            assert info.value.session_id == "b"
            assert "b" in str(info.value)
            assert await history(runner, "b") == before
            assert runner.sessions() == []


@pytest.mark.parametrize("kind", ["sqlite", "json"])
async def test_fork_onto_an_open_session_raises_session_exists(
    kind: str, make_backend: Callable[..., Any]
) -> None:
    app = counter_app(limit=3, pause=0)
    with trio.fail_after(30):
        async with AppRunner(app, checkpointer=make_backend(kind)) as runner:
            await runner.create_session("a", VersionedState(extra={"n": 0}))
            await runner.run_until_complete("a")
            await runner.create_session("b", VersionedState(extra={"n": 100}))
            before = await history(runner, "b")
            with pytest.raises(SessionExists):
                await runner.fork("a", 1, "b")
            assert await history(runner, "b") == before
            assert await runner.fork("a", 1, "c") == Resumed(1)


@pytest.mark.parametrize("kind", BACKENDS)
async def test_resuming_with_another_graph_raises_graph_mismatch(
    kind: str, make_backend: Callable[..., Any]
) -> None:
    app = counter_app(limit=3, pause=0)
    stored_hash = app.graph_metadata().graph_hash
    other = other_app()
    with trio.fail_after(30):
        async with AppRunner(app, checkpointer=make_backend(kind)) as runner:
            await runner.create_session("s", VersionedState(extra={"n": 0}))
            await runner.run_step("s")
        async with AppRunner(other, checkpointer=make_backend(kind)) as runner:
            with pytest.raises(GraphMismatch) as info:
                await runner.create_session("s")
            assert info.value.session_id == "s"
            assert info.value.stored == stored_hash
            assert info.value.current == other.graph_metadata().graph_hash
            assert "allow_graph_change=True" in str(info.value)
            assert runner.sessions() == []
        async with AppRunner(app, checkpointer=make_backend(kind)) as runner:  # the same graph
            assert await runner.create_session("s") == Resumed(1)
            assert (await runner.run_until_complete("s")).extra["n"] == 3


@pytest.mark.parametrize("kind", BACKENDS)
async def test_allow_graph_change_resumes_and_records_the_new_graph(
    kind: str, make_backend: Callable[..., Any]
) -> None:
    app = counter_app(limit=3, pause=0)
    other = other_app()
    with trio.fail_after(30):
        async with AppRunner(app, checkpointer=make_backend(kind)) as runner:
            await runner.create_session("s", VersionedState(extra={"n": 0}))
            await runner.run_until_complete("s")
        async with AppRunner(other, checkpointer=make_backend(kind)) as runner:
            assert await runner.create_session("s", allow_graph_change=True) == Resumed(3)
            stored = await runner.load_checkpoint("s", 3)
            assert stored.graph_hash == app.graph_metadata().graph_hash
        async with AppRunner(other, checkpointer=make_backend(kind)) as runner:
            # Nothing was written yet under the new graph: still refused without the flag.
            with pytest.raises(GraphMismatch):
                await runner.create_session("s")


async def test_every_stored_step_records_the_graph_hash(make_backend: Callable[..., Any]) -> None:
    app = counter_app(limit=3, pause=0)
    with trio.fail_after(30):
        async with AppRunner(app, checkpointer=make_backend("sqlite")) as runner:
            await runner.create_session("s", VersionedState(extra={"n": 0}))
            await runner.run_until_complete("s")
            for info in await runner.get_state_history("s"):
                cp = await runner.load_checkpoint("s", info.step)
                assert cp.graph_hash == app.graph_metadata().graph_hash
            assert cp.to_json_value()["graph_hash"] == app.graph_metadata().graph_hash
