"""Iterative sessions (SPEC 4.5): inputs merged as one write, frontier reset to the entry, gating
cleared, monotonic steps, INVOCATION_END per invocation and STREAM_END on finish; invalid entries
and misuse rejected before anything changes."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from iterative_apps import accumulator_app, drain, x

from treadle import (
    END,
    INVOCATION_END_SCOPE,
    STREAM_END_SCOPE,
    AppRunner,
    Fresh,
    InvalidIterativeEntry,
    IterativeSessionFinished,
    Message,
    MockClock,
    NodePartial,
    NotIterative,
    Resumed,
    SessionNotFound,
    VersionedState,
)


async def test_identical_inputs_run_again_and_steps_keep_counting() -> None:
    with trio.fail_after(10):
        async with AppRunner(accumulator_app(), clock=MockClock(0)) as runner:
            assert await runner.create_iterative_session("it", VersionedState()) == Fresh()
            first = await runner.invoke_next("it", x(1))
            second = await runner.invoke_next("it", x(1))
            assert (first.extra["sum"], second.extra["sum"]) == (1, 2)
            assert second.extra["last"] == 2
            view = await runner.get_session("it")
            assert (view.step, view.frontier, view.invocation) == (4, (END,), 2)
            assert not view.invocation_pending


async def test_the_input_is_one_barrier_write_before_the_entry_runs() -> None:
    with trio.fail_after(10):
        async with AppRunner(accumulator_app(), clock=MockClock(0)) as runner:
            await runner.create_iterative_session("it", VersionedState())
            state = await runner.invoke_next(
                "it", NodePartial(extra={"x": 5}, messages=[Message.user("tick")])
            )
            # extra: +1 for the input, +1 for acc, +1 for post; messages: the input, then post's.
            assert state.extra_version == 4
            assert state.messages_version == 3
            assert [m.content for m in state.messages] == ["tick", "sum 5"]
            # An empty input changes no version but still runs the entry path.
            again = await runner.invoke_next("it", NodePartial())
            assert again.extra["sum"] == 10
            assert (await runner.get_session("it")).step == 4


async def test_a_named_entry_runs_from_that_node() -> None:
    with trio.fail_after(10):
        async with AppRunner(accumulator_app(), clock=MockClock(0)) as runner:
            await runner.create_iterative_session("it", VersionedState(extra={"sum": 7}), "post")
            assert (await runner.get_session("it")).frontier == ("post",)
            state = await runner.invoke_next("it", x(100), entry="post")
            assert state.extra["sum"] == 7  # acc never ran
            assert state.extra["last"] == 7
            assert (await runner.get_session("it")).step == 1


@pytest.mark.parametrize("entry", [END, "nowhere", ""])
async def test_an_invalid_entry_changes_nothing(entry: str) -> None:
    with trio.fail_after(10):
        async with AppRunner(accumulator_app(), checkpointer="memory://") as runner:
            with pytest.raises(InvalidIterativeEntry) as caught:
                await runner.create_iterative_session("other", VersionedState(), entry)
            assert caught.value.entry == entry
            assert runner.sessions() == []
            assert await runner.checkpoints.load_latest("other") is None

            await runner.create_iterative_session("it", VersionedState())
            await runner.invoke_next("it", x(2))
            before = await runner.get_session("it")
            stored = await runner.checkpoints.load_latest("it")
            with pytest.raises(InvalidIterativeEntry, match="use START or the name of a node"):
                await runner.invoke_next("it", x(3), entry=entry)
            after = await runner.get_session("it")
            assert after == before
            assert await runner.checkpoints.load_latest("it") == stored
            assert (await runner.invoke_next("it", x(3))).extra["sum"] == 5


async def test_the_stream_gets_one_invocation_end_each_and_one_stream_end() -> None:
    with trio.fail_after(10):
        async with AppRunner(accumulator_app(), clock=MockClock(0)) as runner:
            with runner.event_stream(session_id="it") as stream:
                await runner.create_iterative_session("it", VersionedState())
                for value in (1, 2, 3):
                    await runner.invoke_next("it", x(value))
                mid = drain(stream)
                await runner.finish_iterative_session("it")
                rest = drain(stream)
            scopes = [e.scope for e in mid]
            assert scopes == ["acc", INVOCATION_END_SCOPE] * 3
            ends = [e for e in mid if e.scope == INVOCATION_END_SCOPE]
            assert [e.message for e in ends] == [
                f"session=it status=completed step={s}" for s in (2, 4, 6)
            ]
            assert [(e.scope, e.message) for e in rest] == [
                (STREAM_END_SCOPE, "session=it status=completed step=6")
            ]


async def test_misuse_is_a_clear_error() -> None:
    with trio.fail_after(10):
        async with AppRunner(accumulator_app(), checkpointer="memory://") as runner:
            await runner.create_session("plain", VersionedState())
            with pytest.raises(NotIterative, match="'plain' is not an iterative session"):
                await runner.invoke_next("plain", x(1))
            with pytest.raises(NotIterative):
                await runner.create_iterative_session("plain", VersionedState())
            with pytest.raises(SessionNotFound):
                await runner.invoke_next("missing", x(1))
            with pytest.raises(SessionNotFound):
                await runner.finish_iterative_session("missing")

            await runner.create_iterative_session("it", VersionedState())
            await runner.invoke_next("it", x(1))
            await runner.finish_iterative_session("it")
            with pytest.raises(IterativeSessionFinished, match="call create_iterative_session"):
                await runner.invoke_next("it", x(1))
            with pytest.raises(IterativeSessionFinished):
                await runner.finish_iterative_session("it")
            # Opening it again continues the lineage.
            assert await runner.create_iterative_session("it", VersionedState()) == Resumed(2)
            assert (await runner.invoke_next("it", x(1))).extra["sum"] == 2


async def test_a_plain_session_resumes_an_iterative_one_as_iterative() -> None:
    with trio.fail_after(10):
        store = "memory://"
        async with AppRunner(accumulator_app(), checkpointer=store) as runner:
            await runner.create_iterative_session("it", VersionedState())
            await runner.invoke_next("it", x(4))
            checkpoint = await runner.checkpoints.load_latest("it")
            assert checkpoint is not None
            assert checkpoint.invocation == 1


async def test_an_abandoned_invocation_before_its_first_step_leaves_no_trace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    release = trio.Event()

    async def slow(snapshot: Any, ctx: Any) -> NodePartial:
        await release.wait()
        return NodePartial(extra={"done": True})

    from treadle import START, GraphBuilder

    app = GraphBuilder().add_node("slow", slow).add_edge(START, "slow").add_edge("slow", END)
    with trio.fail_after(10):
        async with AppRunner(app.compile(), checkpointer="memory://") as runner:
            await runner.create_iterative_session("it", VersionedState())
            before = await runner.get_session("it")
            with trio.move_on_after(1):
                await runner.invoke_next("it", x(9))
            after = await runner.get_session("it")
            assert after == before
            assert "x" not in after.state.extra
            release.set()
            state = await runner.invoke_next("it", x(3))
            assert (state.extra["x"], state.extra["done"]) == (3, True)
            assert (await runner.get_session("it")).step == 1
