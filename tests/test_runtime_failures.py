"""Failure semantics: retries, timeouts, the discarded step, and the deterministic failure rule."""

from __future__ import annotations

import pytest
import trio

from treadle import (
    END,
    START,
    AppRunner,
    GraphBuilder,
    NodePartial,
    NodeRunError,
    NodeTimeoutError,
    RetryPolicy,
    VersionedState,
)


def build(nodes: dict[str, object], **options: object):  # type: ignore[no-untyped-def]
    builder = GraphBuilder()
    for name, fn in nodes.items():
        builder.add_node(name, fn, **options.get(name, {}))  # type: ignore[attr-defined]
        builder.add_edge(START, name).add_edge(name, END)
    return builder.compile()


async def test_failing_node_discards_the_step_and_keeps_the_frontier(
    autojump_clock: trio.abc.Clock,
) -> None:
    attempts = {"bad": 0}

    async def good(snapshot, ctx):  # type: ignore[no-untyped-def]
        return NodePartial(extra={"good": True})

    async def bad(snapshot, ctx):  # type: ignore[no-untyped-def]
        attempts["bad"] += 1
        await trio.sleep(1)
        if attempts["bad"] == 1:
            raise ValueError("boom")
        return NodePartial(extra={"bad": "fixed"})

    app = build({"good": good, "bad": bad})
    with trio.fail_after(10):
        async with AppRunner(app, clock=None) as runner:
            await runner.create_session("s", VersionedState(extra={"x": 1}))
            with pytest.raises(NodeRunError) as info:
                await runner.run_step("s")
            assert info.value.node == "bad"
            assert info.value.step == 1
            assert isinstance(info.value.cause, ValueError)
            view = await runner.get_session("s")
            assert view.step == 1
            assert dict(view.state.extra) == {"x": 1}  # good's write was discarded
            assert view.frontier == ("good", "bad")
            [error] = view.state.errors
            assert error.scope.kind == "node"
            assert error.scope.name == "bad"
            assert error.scope.step == 1
            assert error.error == "ValueError: boom"
            assert view.state.errors_version == 2
            # Retrying re-runs the kept frontier at the next step.
            final = await runner.run_until_complete("s")
    assert final.extra["bad"] == "fixed"
    assert final.extra["good"] is True
    assert len(final.errors) == 1


async def test_retry_policy_retries_with_backoff(autojump_clock: trio.abc.Clock) -> None:
    attempts: list[float] = []

    async def flaky(snapshot, ctx):  # type: ignore[no-untyped-def]
        attempts.append(trio.current_time())
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return NodePartial(extra={"ok": len(attempts)})

    policy = RetryPolicy(max_attempts=3, initial_interval=0.5, backoff_factor=2.0, jitter=False)
    app = build({"flaky": flaky}, flaky={"retry": policy})
    with trio.fail_after(10):
        final = await app.invoke(VersionedState())
    assert final.extra["ok"] == 3
    assert attempts == [0.0, 0.5, 1.5]


async def test_retry_on_filters_errors(autojump_clock: trio.abc.Clock) -> None:
    async def wrong(snapshot, ctx):  # type: ignore[no-untyped-def]
        raise KeyError("not retried")

    policy = RetryPolicy(max_attempts=5, retry_on=ConnectionError, jitter=False)
    app = build({"wrong": wrong}, wrong={"retry": policy})
    with trio.fail_after(10), pytest.raises(NodeRunError) as info:
        await app.invoke(VersionedState())
    assert isinstance(info.value.cause, KeyError)
    assert trio.current_time() == 0.0


async def test_timeout_fails_the_node(autojump_clock: trio.abc.Clock) -> None:
    async def slow(snapshot, ctx):  # type: ignore[no-untyped-def]
        await trio.sleep(100)

    app = build({"slow": slow}, slow={"timeout": 2.5})
    with trio.fail_after(10), pytest.raises(NodeRunError) as info:
        await app.invoke(VersionedState())
    assert isinstance(info.value.cause, NodeTimeoutError)
    assert trio.current_time() == 2.5


async def test_later_siblings_are_cancelled_earlier_ones_finish(
    autojump_clock: trio.abc.Clock,
) -> None:
    finished: list[str] = []

    def sleeper(name: str, delay: float):  # type: ignore[no-untyped-def]
        async def node(snapshot, ctx):  # type: ignore[no-untyped-def]
            await trio.sleep(delay)
            finished.append(name)

        return node

    async def fails_fast(snapshot, ctx):  # type: ignore[no-untyped-def]
        await trio.sleep(1)
        raise RuntimeError("fast failure")

    app = build({"early": sleeper("early", 5), "bad": fails_fast, "late": sleeper("late", 5)})
    with trio.fail_after(30), pytest.raises(NodeRunError) as info:
        await app.invoke(VersionedState())
    assert info.value.node == "bad"
    # "early" precedes "bad" in frontier order, so it runs to the end; "late" is cancelled at t=1.
    assert finished == ["early"]
    assert trio.current_time() == 5.0


async def test_first_failure_in_frontier_order_is_reported(autojump_clock: trio.abc.Clock) -> None:
    def failing(name: str, delay: float):  # type: ignore[no-untyped-def]
        async def node(snapshot, ctx):  # type: ignore[no-untyped-def]
            await trio.sleep(delay)
            raise RuntimeError(name)

        return node

    # "second" fails first in time, but "first" precedes it in frontier order and fails too.
    app = build({"first": failing("first", 3), "second": failing("second", 1)})
    with trio.fail_after(30), pytest.raises(NodeRunError) as info:
        await app.invoke(VersionedState())
    assert info.value.node == "first"


async def test_a_node_returning_garbage_fails_with_a_clear_error() -> None:
    async def wrong(snapshot, ctx):  # type: ignore[no-untyped-def]
        return {"not": "a partial"}

    with pytest.raises(NodeRunError) as info:
        await build({"wrong": wrong}).invoke(VersionedState())
    assert "returned dict; return a NodePartial or None" in str(info.value)


async def test_router_exception_fails_the_step() -> None:
    async def ok(snapshot, ctx):  # type: ignore[no-untyped-def]
        return NodePartial(extra={"x": 1})

    def broken(snapshot):  # type: ignore[no-untyped-def]
        raise LookupError("no route")

    app = (
        GraphBuilder()
        .add_node("a", ok)
        .add_edge(START, "a")
        .add_conditional_edges("a", broken, path_map=[END])
        .compile()
    )
    async with AppRunner(app) as runner:
        await runner.create_session("s", VersionedState())
        with pytest.raises(NodeRunError) as info:
            await runner.run_step("s")
        view = await runner.get_session("s")
    assert info.value.node == "a"
    assert "x" not in view.state.extra
    assert view.frontier == ("a",)


async def test_timeout_holds_for_plain_def_nodes() -> None:
    import time

    def blocking(snapshot, ctx):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        return NodePartial(extra={"late": True})

    for thread in (False, True):
        app = build({"blocking": blocking}, blocking={"timeout": 0.01, "thread": thread})
        with trio.fail_after(10), pytest.raises(NodeRunError) as info:
            await app.invoke(VersionedState())
        assert isinstance(info.value.cause, NodeTimeoutError)


async def test_cancelling_run_step_abandons_the_step(autojump_clock: trio.abc.Clock) -> None:
    async def slow(snapshot, ctx):  # type: ignore[no-untyped-def]
        await trio.sleep(10)
        return NodePartial(extra={"done": True})

    app = build({"slow": slow})
    with trio.fail_after(60):
        async with AppRunner(app) as runner:
            await runner.create_session("s", VersionedState())
            with trio.move_on_after(1):
                await runner.run_step("s")
            view = await runner.get_session("s")
            assert view.step == 0
            assert "done" not in view.state.extra
            assert trio.current_time() == 1.0
            final = await runner.run_until_complete("s")
    assert final.extra["done"] is True
    assert trio.current_time() == 11.0
