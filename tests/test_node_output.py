"""A node's output is validated inside its node actor: invalid output is a node failure (SPEC 4.3)."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
import trio

from treadle import (
    END,
    START,
    AppRunner,
    GraphBuilder,
    InvalidNodeOutput,
    Message,
    NodePartial,
    NodeRunError,
    RetryPolicy,
    VersionedState,
)
from treadle.runtime.events.types import STREAM_END_SCOPE


def _nested(depth: int) -> list[Any]:
    root: list[Any] = []
    current = root
    for _ in range(depth - 1):
        child: list[Any] = []
        current.append(child)
        current = child
    return root


INVALID_EXTRA = {
    "set": {1, 2},
    "object": object(),
    "nan": math.nan,
    "inf": -math.inf,
    "bytes": b"raw",
    "deep": _nested(600),
    "surrogate": "lone \ud800 half",
    "surrogate_key": {"\udfff": 1},
    "nested_set": {"ok": [1, {"bad": {3}}]},
}


def one_node(fn: Any, **options: Any) -> Any:
    return (
        GraphBuilder()
        .add_node("writer", fn, **options)
        .add_edge(START, "writer")
        .add_edge("writer", END)
        .compile()
    )


@pytest.mark.parametrize("kind", sorted(INVALID_EXTRA))
async def test_invalid_extra_fails_the_node_after_its_retries(
    kind: str, autojump_clock: trio.abc.Clock
) -> None:
    attempts = 0

    async def writer(snapshot: Any, ctx: Any) -> NodePartial:
        nonlocal attempts
        attempts += 1
        return NodePartial(extra={"fine": 1, "payload": INVALID_EXTRA[kind]})

    retry = RetryPolicy(max_attempts=3, initial_interval=1.0, jitter=False)
    app = one_node(writer, retry=retry)
    with trio.fail_after(30):
        async with AppRunner(app) as runner:
            await runner.create_session("s", VersionedState(extra={"x": 1}))
            with pytest.raises(NodeRunError) as info:
                await runner.run_step("s")
            view = await runner.get_session("s")
    assert attempts == 3
    assert trio.current_time() == 3.0  # waited 1 s, then 2 s between attempts
    error = info.value
    assert error.node == "writer"
    assert error.step == 1
    assert isinstance(error.cause, InvalidNodeOutput)
    assert error.cause.node == "writer"
    assert error.cause.key == "payload"
    assert "'writer'" in str(error)
    assert "'payload'" in str(error)
    # The step is discarded and recorded: frontier kept, one ErrorEvent, the good key not written.
    assert view.step == 1
    assert view.frontier == ("writer",)
    assert dict(view.state.extra) == {"x": 1}
    [event] = view.state.errors
    assert event.scope.kind == "node"
    assert event.scope.name == "writer"
    assert "payload" in event.error


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: NodePartial(messages=[Message.user("bad \ud83d")]), "messages[0]"),
        (lambda: NodePartial(messages=[Message("r\udc00le", "fine")]), "messages[0]"),
        (lambda: {"not": "a partial"}, None),
        (lambda: "text", None),
        (lambda: [NodePartial()], None),
    ],
)
async def test_other_invalid_outputs_fail_the_node(build: Any, key: str | None) -> None:
    async def writer(snapshot: Any, ctx: Any) -> Any:
        return build()

    with trio.fail_after(10), pytest.raises(NodeRunError) as info:
        await one_node(writer).invoke(VersionedState())
    assert isinstance(info.value.cause, InvalidNodeOutput)
    assert info.value.cause.key == key
    assert info.value.node == "writer"


async def test_nesting_counts_from_extra_itself_up_to_500_levels() -> None:
    async def writer(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial(extra={"deep": _nested(snapshot.extra["depth"])})

    app = one_node(writer)
    with trio.fail_after(10):
        final = await app.invoke(VersionedState(extra={"depth": 499}))
        with pytest.raises(NodeRunError) as info:
            await app.invoke(VersionedState(extra={"depth": 500}))
    depth, value = 0, final.extra["deep"]
    while isinstance(value, tuple):
        depth, value = depth + 1, (value[0] if value else None)
    assert depth == 499
    assert "deeper than 500 levels" in str(info.value)


async def test_a_retry_that_returns_valid_output_succeeds(autojump_clock: trio.abc.Clock) -> None:
    attempts = 0

    def writer(snapshot: Any, ctx: Any) -> NodePartial:
        nonlocal attempts
        attempts += 1
        return NodePartial(extra={"v": {1} if attempts == 1 else [1]})

    app = one_node(writer, retry=RetryPolicy(max_attempts=2, initial_interval=0.5, jitter=False))
    with trio.fail_after(10):
        final = await app.invoke(VersionedState())
    assert final.extra["v"] == (1,)
    assert attempts == 2


async def test_invoke_streaming_consumer_sees_the_end_of_an_invalid_run() -> None:
    async def writer(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial(extra={"bad": {1}})

    with trio.fail_after(10):
        async with one_node(writer).invoke_streaming(VersionedState()) as run:
            events = [event async for event in run.events]
            with pytest.raises(NodeRunError) as info:
                await run.result()
    assert info.value.cause.key == "bad"  # type: ignore[attr-defined]
    [end] = [e for e in events if e.scope == STREAM_END_SCOPE]
    assert end is events[-1]
    assert end.metadata["status"] == "error"
    assert "'bad'" in end.metadata["error"]


async def test_a_value_at_the_depth_limit_is_stored_compared_and_resumed(tmp_path: Any) -> None:
    async def writer(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial(extra={"deep": _nested(499), "n": snapshot.extra.get("n", 0) + 1})

    app = (
        GraphBuilder()
        .add_node("writer", writer)
        .add_edge(START, "writer")
        .add_conditional_edges("writer", lambda s: "writer" if s.extra["n"] < 2 else END)
        .compile()
    )
    url = f"sqlite:///{tmp_path / 'deep.db'}"
    with trio.fail_after(20):
        async with AppRunner(app, checkpointer=url) as runner:
            await runner.create_session("s", VersionedState())
            final = await runner.run_until_complete("s")
        async with AppRunner(app, checkpointer=url) as runner:
            await runner.create_session("s")
            resumed = await runner.get_session("s")
    assert final.extra["n"] == 2
    assert final.extra_version == 3  # the second write changed only "n"
    assert resumed.state == final


def test_freezing_extra_keeps_every_other_field_of_the_partial() -> None:
    from treadle.runtime.execution.node_actor import check_output
    from treadle.runtime.graph.frozen import FrozenDict
    from treadle.runtime.graph.partial import Replace

    given = NodePartial(
        messages=[Message.user("hi")],
        extra={"k": [1, 2]},
        errors=None,
        frontier=Replace(("a",)),
    )
    checked = check_output("n", given)
    assert type(checked.extra) is FrozenDict
    assert checked.extra == {"k": (1, 2)}
    # Every field but extra is carried over, whatever fields NodePartial has.
    for field in attrs.fields(NodePartial):
        if field.name != "extra":
            assert getattr(checked, field.name) == getattr(given, field.name), field.name
