"""Lossless streams: ``overflow="block"`` subscribers lose nothing; the run waits for them."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from treadle import END, START, AppRunner, GraphBuilder, VersionedState, is_sentinel


def emitters_app(nodes: int, events: int, *, sync: bool = False) -> Any:
    """``nodes`` parallel nodes, each emitting ``events`` events (async ``emit`` or
    ``emit_nowait`` from a plain function)."""

    async def emit_async(snapshot: Any, ctx: Any) -> None:
        for i in range(events):
            await ctx.emit("tick", f"{ctx.node_id} {i}")

    def emit_sync(snapshot: Any, ctx: Any) -> None:
        for i in range(events):
            ctx.emit_nowait("tick", f"{ctx.node_id} {i}")

    builder = GraphBuilder()
    for n in range(nodes):
        name = f"e{n}"
        builder.add_node(name, emit_sync if sync else emit_async)
        builder.add_edge(START, name).add_edge(name, END)
    return builder.compile()


async def _read_all(stream: Any, *, every: int = 7, pause: float = 0.01) -> list[Any]:
    """Read to the end, sleeping ``pause`` after every ``every`` events (a slow reader)."""
    seen = []
    async for event in stream:
        seen.append(event)
        if len(seen) % every == 0:
            await trio.sleep(pause)
    return seen


@pytest.mark.parametrize("sync", [False, True], ids=["emit", "emit_nowait"])
async def test_a_blocking_subscriber_loses_nothing_from_many_emitters(
    autojump_clock: Any, sync: bool
) -> None:
    with trio.fail_after(600):
        app = emitters_app(nodes=20, events=50, sync=sync)
        async with AppRunner(app, concurrency_limit=20) as runner:
            stream = runner.event_stream(session_id="s", capacity=8, overflow="block")
            await runner.create_session("s", VersionedState())
            async with trio.open_nursery() as nursery:
                results: list[list[Any]] = []

                async def read() -> None:
                    results.append(await _read_all(stream))

                nursery.start_soon(read)
                await runner.run_until_complete("s")
            seen = results[0]
            assert stream.dropped == 0
            ticks = [e.message for e in seen if e.scope == "tick"]
            assert sorted(ticks) == sorted(f"e{n} {i}" for n in range(20) for i in range(50))
            assert [e.seq for e in seen] == list(range(len(seen)))
            assert is_sentinel(seen[-1])


async def test_async_emitters_wait_for_the_reader(autojump_clock: Any) -> None:
    """With 4 unread events allowed, an emitter cannot run more than that ahead of the reader."""
    with trio.fail_after(60):
        app = emitters_app(nodes=1, events=40)
        async with AppRunner(app) as runner:
            stream = runner.event_stream(session_id="s", capacity=4, overflow="block")
            await runner.create_session("s", VersionedState())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(runner.run_until_complete, "s")
                await trio.testing.wait_all_tasks_blocked()
                # The run is stuck on the unread stream: exactly `capacity` events wait.
                assert stream.statistics().buffered == 4
                seen = await _read_all(stream, every=1, pause=1.0)
            assert len([e for e in seen if e.scope == "tick"]) == 40
            assert stream.dropped == 0


async def test_closing_a_blocking_stream_lets_the_run_go_on(autojump_clock: Any) -> None:
    with trio.fail_after(60):
        app = emitters_app(nodes=2, events=100)
        async with AppRunner(app) as runner:
            stream = runner.event_stream(capacity=4, overflow="block")
            await runner.create_session("s", VersionedState())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(runner.run_until_complete, "s")
                await trio.testing.wait_all_tasks_blocked()
                assert stream.statistics().buffered == 4
                stream.close()
            assert (await runner.get_session("s")).completed


async def test_a_drop_oldest_subscriber_that_never_reads_never_holds_the_run(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(60):
        app = emitters_app(nodes=2, events=100)
        async with AppRunner(app) as runner:
            stream = runner.event_stream(capacity=4)
            await runner.create_session("s", VersionedState())
            await runner.run_until_complete("s")
            assert stream.dropped > 0
            assert trio.current_time() == 0


async def test_invoke_streaming_consumer_loses_nothing(autojump_clock: Any) -> None:
    with trio.fail_after(600):
        app = emitters_app(nodes=10, events=300)
        async with app.invoke_streaming(VersionedState(), session_id="live") as run:
            seen = await _read_all(run.events, every=50, pause=0.5)
            final = await run.result()
        assert run.events.dropped == 0
        assert len([e for e in seen if e.scope == "tick"]) == 3000
        assert final is not None


async def test_a_slow_lossless_reader_of_one_session_does_not_hold_another(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(60):
        app = emitters_app(nodes=1, events=50)
        async with AppRunner(app) as runner:
            stuck = runner.event_stream(session_id="held", capacity=4, overflow="block")
            await runner.create_session("held", VersionedState())
            await runner.create_session("free", VersionedState())
            held_done: list[bool] = []

            async def run_held() -> None:
                await runner.run_until_complete("held")
                held_done.append(True)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_held)
                await trio.testing.wait_all_tasks_blocked()
                final = await runner.run_until_complete("free")
                assert final is not None
                assert held_done == []  # still waiting for its reader
                stuck.close()
            assert held_done == [True]


def test_an_unknown_overflow_policy_is_rejected() -> None:
    from treadle import EventBus

    with pytest.raises(ValueError, match="overflow must be 'drop_oldest' or 'block'"):
        EventBus().subscribe(overflow="drop_newest")  # type: ignore[arg-type]
