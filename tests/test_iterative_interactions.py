"""Iterative sessions with the rest of the runtime: interrupts inside an invocation, a failing
node, fork, many sessions at once, and what event-stream subscribers see."""

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
    InvocationPaused,
    MockClock,
    NodeRunError,
    Resumed,
    StepOptions,
    VersionedState,
)


def ends(events: list[Any]) -> list[tuple[str, str]]:
    return [
        (e.scope, e.message) for e in events if e.scope in (INVOCATION_END_SCOPE, STREAM_END_SCOPE)
    ]


async def test_an_interrupt_pauses_an_invocation_and_continue_finishes_it() -> None:
    with trio.fail_after(10):
        async with AppRunner(accumulator_app(), checkpointer="memory://") as runner:
            with runner.event_stream(session_id="it") as stream:
                await runner.create_iterative_session("it", VersionedState())
                after_acc = StepOptions(interrupt_after=["acc"])
                with pytest.raises(InvocationPaused) as caught:
                    await runner.invoke_next("it", x(5), options=after_acc)
                assert (caught.value.invocation, caught.value.reason.kind) == (1, "after_node")
                view = await runner.get_session("it")
                assert (view.step, view.frontier, view.invocation_pending) == (1, ("post",), True)
                assert ends(drain(stream)) == []  # the invocation has not ended
                state = await runner.continue_invocation("it")
                assert state.extra == {"x": 5, "sum": 5, "last": 5}
                assert ends(drain(stream)) == [
                    (INVOCATION_END_SCOPE, "session=it status=completed step=2")
                ]
                # Nothing pending: continue runs nothing.
                assert await runner.continue_invocation("it") == state
                # interrupt_before holds from an invocation's second step on.
                before_post = StepOptions(interrupt_before=["post", "acc"])
                with pytest.raises(InvocationPaused) as caught:
                    await runner.invoke_next("it", x(1), options=before_post)
                assert (caught.value.reason.kind, caught.value.reason.node) == (
                    "before_node",
                    "post",
                )
                assert (await runner.get_session("it")).step == 3
                assert (await runner.continue_invocation("it")).extra["last"] == 6


async def test_a_failing_node_fails_the_invocation_and_the_next_one_works() -> None:
    with trio.fail_after(10):
        async with AppRunner(accumulator_app(fail_on=13), checkpointer="memory://") as runner:
            with runner.event_stream(session_id="it") as stream:
                await runner.create_iterative_session("it", VersionedState())
                await runner.invoke_next("it", x(1))
                with pytest.raises(NodeRunError) as caught:
                    await runner.invoke_next("it", x(13))
                assert (caught.value.node, caught.value.step) == ("acc", 3)
                view = await runner.get_session("it")
                assert view.invocation_pending  # the failed step's frontier is kept
                assert view.state.errors[-1].error == "RuntimeError: acc refuses x=13"
                state = await runner.invoke_next("it", x(2))
                assert (state.extra["sum"], state.extra["last"]) == (3, 3)
                assert (await runner.get_session("it")).step == 5
                await runner.finish_iterative_session("it")
                seen = ends(drain(stream))
            assert seen == [
                (INVOCATION_END_SCOPE, "session=it status=completed step=2"),
                (
                    INVOCATION_END_SCOPE,
                    f"session=it status=error step=3 error={caught.value}",
                ),
                (INVOCATION_END_SCOPE, "session=it status=completed step=5"),
                (STREAM_END_SCOPE, "session=it status=completed step=5"),
            ]


async def test_a_fork_of_an_iterative_session_is_iterative_and_independent() -> None:
    with trio.fail_after(10):
        async with AppRunner(accumulator_app(), checkpointer="memory://") as runner:
            await runner.create_iterative_session("it", VersionedState())
            await runner.invoke_next("it", x(1))
            await runner.invoke_next("it", x(10))
            # The in-memory store keeps the latest step only: fork from it.
            assert await runner.fork("it", 4, "branch") == Resumed(4)
            branched = await runner.invoke_next("branch", x(100))
            assert branched.extra["sum"] == 111
            original = await runner.get_session("it")
            assert (original.state.extra["sum"], original.step) == (11, 4)
            view = await runner.get_session("branch")
            assert (view.step, view.invocation) == (6, 3)


async def test_many_iterative_sessions_run_at_once_on_one_runner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sessions = [f"s{i}" for i in range(30)]
    with trio.fail_after(20):
        async with AppRunner(accumulator_app(), clock=MockClock(0)) as runner:
            with runner.event_stream() as everything:

                async def drive(session: str, seed: int) -> None:
                    await runner.create_iterative_session(session, VersionedState())
                    for value in range(seed, seed + 5):
                        await runner.invoke_next(session, x(value))
                        await trio.sleep(0.001 * (seed % 3))
                    await runner.finish_iterative_session(session)

                async with trio.open_nursery() as nursery:
                    for index, session in enumerate(sessions):
                        nursery.start_soon(drive, session, index)
                events = drain(everything)
            for index, session in enumerate(sessions):
                view = await runner.get_session(session)
                assert view.state.extra["sum"] == sum(range(index, index + 5))
                assert (view.step, view.frontier, view.invocation) == (10, (END,), 5)
                mine = [e for e in events if e.session_id == session]
                assert [scope for scope, _ in ends(mine)] == [INVOCATION_END_SCOPE] * 5 + [
                    STREAM_END_SCOPE
                ]


async def test_every_subscriber_sees_every_invocation_end_and_one_stream_end() -> None:
    with trio.fail_after(10):
        async with AppRunner(accumulator_app(), clock=MockClock(0)) as runner:
            with runner.event_stream() as a, runner.event_stream(session_id="it") as b:
                await runner.create_iterative_session("it", VersionedState())
                for value in range(4):
                    await runner.invoke_next("it", x(value))
                await runner.finish_iterative_session("it")
                seen_a, seen_b = ends(drain(a)), ends(drain(b))
            expected = [
                (INVOCATION_END_SCOPE, f"session=it status=completed step={2 * n}")
                for n in range(1, 5)
            ] + [(STREAM_END_SCOPE, "session=it status=completed step=8")]
            assert seen_a == seen_b == expected


async def test_a_retired_iterative_session_reloads_and_continues() -> None:
    with trio.fail_after(10):
        async with AppRunner(accumulator_app(), checkpointer="memory://") as runner:
            await runner.create_iterative_session("it", VersionedState())
            await runner.invoke_next("it", x(4))
            await runner.close_session("it")
            assert runner.sessions() == []
            # Used again, it is reloaded from its checkpoint, still iterative.
            state = await runner.invoke_next("it", x(5))
            assert state.extra["sum"] == 9
            view = await runner.get_session("it")
            assert (view.step, view.invocation) == (4, 2)
