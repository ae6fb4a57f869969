"""The inline cancel point of ``ctx.emit`` and of a stream's read: it raises ``Cancelled`` where
``trio.lowlevel.checkpoint_if_cancelled`` would, in a node's task and in the main task, and without
trio's private fields it takes the public check."""

from __future__ import annotations

import pytest
import trio

from treadle import EventBus
from treadle.actors import cancel_point, trap
from treadle.runtime.events import stream as stream_module
from treadle.runtime.execution import context as context_module
from treadle.runtime.execution.context import NodeContext


def context(bus: EventBus) -> NodeContext:
    return NodeContext(
        node_id="n", step=1, session_id="s", invocation_id="i", frontier_index=0, bus=bus
    )


async def check_cancel_points() -> None:
    bus = EventBus()
    stream = bus.subscribe(session_id="s")
    ctx = context(bus)
    with trio.CancelScope() as scope:
        scope.cancel()
        await ctx.emit("tok", "lost")
    assert scope.cancelled_caught
    assert stream.statistics().buffered == 0  # a cancelled emit publishes nothing
    await ctx.emit("tok", "kept")
    with trio.CancelScope() as scope:
        scope.cancel()
        async for _ in stream:
            pytest.fail("a cancelled read returned an event")
    assert scope.cancelled_caught
    async for event in stream:  # the event is still there for the next read
        assert event.message == "kept"
        break


def test_the_installed_trio_gets_the_inline_check() -> None:
    assert cancel_point.FAST


async def test_emit_and_a_read_are_cancel_points_in_a_task() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(check_cancel_points)


def test_emit_and_a_read_are_cancel_points_in_the_main_task() -> None:
    trio.run(check_cancel_points)


async def test_without_trio_private_fields_the_public_check_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_in = cancel_point.always_ask()
    monkeypatch.setattr(context_module, "run_context", stand_in)
    monkeypatch.setattr(stream_module, "run_context", stand_in)
    await check_cancel_points()


def test_the_installed_trio_lets_a_wait_yield_its_trap_itself() -> None:
    assert trap.FAST
