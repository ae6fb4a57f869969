"""Supersteps through AppRunner: gating, frontier-order merge, routing, joins, interrupts."""

from __future__ import annotations

import trio

from treadle import (
    END,
    START,
    Append,
    AppRunner,
    Completed,
    EventBus,
    GraphBuilder,
    MemorySink,
    Message,
    NodePartial,
    Paused,
    PauseReason,
    Replace,
    StepOptions,
    VersionedState,
)
from treadle.runtime.events.types import STREAM_END_SCOPE


def writer(key: str, value: object, delay: float = 0.0):  # type: ignore[no-untyped-def]
    async def node(snapshot, ctx):  # type: ignore[no-untyped-def]
        await trio.sleep(delay)
        return NodePartial(extra={key: value})

    return node


async def test_same_key_later_in_frontier_order_wins(autojump_clock: trio.abc.Clock) -> None:
    # "a" is first in frontier order but finishes last: it must still lose to "b".
    app = (
        GraphBuilder()
        .add_node("a", writer("k", "from a", delay=2.0))
        .add_node("b", writer("k", "from b", delay=1.0))
        .add_edge(START, "a")
        .add_edge(START, "b")
        .add_edge("a", END)
        .add_edge("b", END)
        .compile()
    )
    with trio.fail_after(10):
        final = await app.invoke(VersionedState())
    assert final.extra["k"] == "from b"
    assert final.extra_version == 2
    assert trio.current_time() == 2.0


async def test_messages_concatenate_in_frontier_order(autojump_clock: trio.abc.Clock) -> None:
    def say(text: str, delay: float):  # type: ignore[no-untyped-def]
        async def node(snapshot, ctx):  # type: ignore[no-untyped-def]
            await trio.sleep(delay)
            return NodePartial(messages=[Message.assistant(text)])

        return node

    builder = GraphBuilder()
    for i, delay in enumerate([3.0, 1.0, 2.0]):
        builder.add_node(f"n{i}", say(f"m{i}", delay)).add_edge(START, f"n{i}")
        builder.add_edge(f"n{i}", END)
    with trio.fail_after(10):
        final = await builder.compile().invoke(VersionedState.with_user_message("go"))
    assert [m.content for m in final.messages] == ["go", "m0", "m1", "m2"]
    assert final.messages_version == 2


async def test_gated_node_is_skipped_and_contributes_no_edges() -> None:
    calls: list[str] = []

    async def noop(snapshot, ctx):  # type: ignore[no-untyped-def]
        calls.append(ctx.node_id)
        return None

    def loop_once(snapshot):  # type: ignore[no-untyped-def]
        return "b"

    # b routes back to itself unconditionally; since it changes nothing it is gated on its second
    # visit, contributes no edges, and the session completes.
    app = (
        GraphBuilder()
        .add_node("a", writer("x", 1))
        .add_node("b", noop)
        .add_edge(START, "a")
        .add_edge("a", "b")
        .add_conditional_edges("b", loop_once, path_map=["b", END])
        .compile()
    )
    with trio.fail_after(10):
        async with AppRunner(app) as runner:
            await runner.create_session("s", VersionedState())
            reports = []
            while True:
                result = await runner.run_step("s")
                assert isinstance(result, Completed)
                reports.append(result.report)
                if result.report.completed:
                    break
    assert [(r.step, r.ran_nodes, r.skipped_nodes) for r in reports] == [
        (1, ("a",), ()),
        (2, ("b",), ()),
        (3, (), ("b",)),
    ]
    assert reports[-1].next_frontier == ()
    assert calls == ["b"]


async def test_frontier_commands_replace_and_append() -> None:
    async def replace(snapshot, ctx):  # type: ignore[no-untyped-def]
        return NodePartial(extra={"r": 1}, frontier=Replace(["c"]))

    async def append(snapshot, ctx):  # type: ignore[no-untyped-def]
        return NodePartial(extra={"a": 1}, frontier=Append(["d"]))

    def router(snapshot):  # type: ignore[no-untyped-def]
        return "e"

    app = (
        GraphBuilder()
        .add_node("a", replace)
        .add_node("b", append)
        .add_node("c", writer("c", 1))
        .add_node("d", writer("d", 1))
        .add_node("e", writer("e", 1))
        .add_node("f", writer("f", 1))
        .add_edge(START, "a")
        .add_edge(START, "b")
        .add_edge("a", "f")
        .add_edge("b", "f")
        .add_conditional_edges("a", router)
        .add_conditional_edges("b", router)
        .add_edge("c", END)
        .add_edge("d", END)
        .add_edge("e", END)
        .add_edge("f", END)
        .compile()
    )
    async with AppRunner(app) as runner:
        await runner.create_session("s", VersionedState())
        result = await runner.run_step("s")
    assert isinstance(result, Completed)
    # a: Replace -> only c (no static edge, no router); b: static f, then d, then router e.
    assert result.report.next_frontier == ("c", "f", "d", "e")


async def test_join_waits_for_every_source(autojump_clock: trio.abc.Clock) -> None:
    app = (
        GraphBuilder()
        .add_node("a", writer("a", 1))
        .add_node("long1", writer("l1", 1))
        .add_node("long2", writer("l2", 1))
        .add_node("join", writer("joined", True))
        .add_edge(START, "a")
        .add_edge(START, "long1")
        .add_edge("long1", "long2")
        .add_edge(["a", "long2"], "join")
        .add_edge("join", END)
        .compile()
    )
    with trio.fail_after(10):
        async with AppRunner(app) as runner:
            await runner.create_session("s", VersionedState())
            frontiers = []
            while True:
                result = await runner.run_step("s")
                assert isinstance(result, Completed)
                frontiers.append(result.report.next_frontier)
                if result.report.completed:
                    break
            view = await runner.get_session("s")
    # The join fires only in the step after both a (step 1) and long2 (step 2) have run.
    assert frontiers == [("long2",), ("join",), (END,)]
    assert view.state.extra["joined"] is True


async def test_conditional_edges_from_start_use_the_initial_state() -> None:
    def pick(snapshot):  # type: ignore[no-untyped-def]
        return "b" if snapshot.extra.get("go") == "b" else "a"

    app = (
        GraphBuilder()
        .add_node("a", writer("ran", "a"))
        .add_node("b", writer("ran", "b"))
        .add_conditional_edges(START, pick, path_map=["a", "b"])
        .add_edge("a", END)
        .add_edge("b", END)
        .compile()
    )
    assert (await app.invoke(VersionedState(extra={"go": "b"}))).extra["ran"] == "b"
    assert (await app.invoke(VersionedState())).extra["ran"] == "a"


async def test_unknown_router_target_is_dropped_and_reported() -> None:
    from treadle import EventBus, MemorySink

    def bad(snapshot):  # type: ignore[no-untyped-def]
        return ["nowhere", END]

    app = (
        GraphBuilder()
        .add_node("a", writer("x", 1))
        .add_edge(START, "a")
        .add_conditional_edges("a", bad)
        .compile()
    )
    memory = MemorySink()
    final = await app.invoke(VersionedState(), event_bus=EventBus([memory]))
    assert final.extra["x"] == 1
    scopes = [event.scope for event in memory.snapshot()]
    assert "routing.unknown_target" in scopes
    diagnostic = next(e for e in memory.snapshot() if e.scope == "routing.unknown_target")
    assert "'nowhere'" in diagnostic.message


async def test_interrupts_pause_and_resume() -> None:
    app = (
        GraphBuilder()
        .add_node("a", writer("a", 1))
        .add_node("b", writer("b", 1))
        .add_node("c", writer("c", 1))
        .add_edge(START, "a")
        .add_edge("a", "b")
        .add_edge("b", "c")
        .add_edge("c", END)
        .compile()
    )
    async with AppRunner(app) as runner:
        await runner.create_session("s", VersionedState())
        before = await runner.run_step("s", StepOptions(interrupt_before=["b"]))
        assert isinstance(before, Completed)  # a is not interrupted
        paused = await runner.run_step("s", StepOptions(interrupt_before=["b"]))
        assert paused == Paused(PauseReason("before_node", "b"), None)
        assert (await runner.get_session("s")).step == 1
        after = await runner.run_step("s", StepOptions(interrupt_after=["b"]))
        assert isinstance(after, Paused)
        assert after.reason == PauseReason("after_node", "b")
        assert after.report is not None
        assert after.report.ran_nodes == ("b",)
        each = await runner.run_step("s", StepOptions(interrupt_each_step=True))
        assert isinstance(each, Paused)
        assert each.reason.kind == "after_step"
        final = await runner.run_until_complete("s")
    assert dict(final.extra) == {"a": 1, "b": 1, "c": 1}


async def test_completed_session_does_not_advance() -> None:
    app = (
        GraphBuilder()
        .add_node("a", writer("a", 1))
        .add_edge(START, "a")
        .add_edge("a", END)
        .compile()
    )
    async with AppRunner(app) as runner:
        await runner.create_session("s", VersionedState())
        await runner.run_until_complete("s")
        again = await runner.run_step("s")
    assert isinstance(again, Completed)
    assert again.report.completed
    assert again.report.step == 1
    assert again.report.ran_nodes == ()


async def test_run_steps_stops_between_steps_pauses_or_runs_to_the_end(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = (
        GraphBuilder()
        .add_node("a", writer("a", 1, delay=1.0))
        .add_node("b", writer("b", 1, delay=1.0))
        .add_node("c", writer("c", 1, delay=1.0))
        .add_edge(START, "a")
        .add_edge("a", "b")
        .add_edge("b", "c")
        .add_edge("c", END)
        .compile()
    )
    sink = MemorySink()
    asked: list[int] = []

    def stop_after_one_step() -> bool:
        asked.append(1)
        return len(asked) > 1

    with trio.fail_after(30):
        async with AppRunner(app, event_bus=EventBus([sink])) as runner:
            await runner.create_session("s", VersionedState())
            assert await runner.run_steps("s", stop=lambda: True) is None
            assert (await runner.get_session("s")).step == 0
            one = await runner.run_steps("s", stop=stop_after_one_step)
            assert isinstance(one, Completed)
            assert (one.report.step, one.report.completed) == (1, False)
            assert one.report.ran_nodes == ("a",)
            assert len(asked) == 2  # before step 1, and before a step 2 it did not run
            paused = await runner.run_steps("s", StepOptions(interrupt_after=["b"]))
            assert isinstance(paused, Paused)
            assert paused.reason == PauseReason("after_node", "b")
            assert (await runner.get_session("s")).step == 2
            assert trio.current_time() == 2.0  # one request, each step after the one before
            assert not [e for e in sink.snapshot() if e.scope == STREAM_END_SCOPE]
            done = await runner.run_steps("s")
            assert isinstance(done, Completed)
            assert (done.report.step, done.report.completed) == (3, True)
            view = await runner.get_session("s")
    assert dict(view.state.extra) == {"a": 1, "b": 1, "c": 1}
    ends = [e for e in sink.snapshot() if e.scope == STREAM_END_SCOPE]
    assert len(ends) == 1  # a completed run ends the session's stream, as run_until_complete does
