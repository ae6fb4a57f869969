"""The node actor: one per graph node per session, long-lived across steps."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import trio

from ...actors.mailbox import MailboxReceiver
from ..errors import InvalidNodeOutput, NodeTimeoutError
from ..events.bus import EventBus
from ..events.lifecycle import (
    NODE_COMPLETED_SCOPE,
    NODE_FAILED_SCOPE,
    NODE_RETRYING_SCOPE,
    NODE_STARTED_SCOPE,
    describe_error,
    node_event,
)
from ..graph.builder import NodeSpec
from ..graph.frozen import FrozenDict, _trusted, freeze
from ..graph.partial import NodePartial
from ..graph.state import StateSnapshot
from .clock import Clock
from .context import NodeContext
from .messages import Execute, NodeDone

log = logging.getLogger("treadle.node")

NodeFn = Callable[[StateSnapshot, NodeContext], Any]
# For the casts in _call: a subscripted Callable built there would be built again on every call.
_AsyncNodeFn = Callable[[StateSnapshot, NodeContext], Awaitable[object]]


async def node_actor(
    spec: NodeSpec,
    inbox: MailboxReceiver[Execute | None],
    *,
    bus: EventBus,
    clock: Clock | None,
    thread_limiter: trio.CapacityLimiter,
    first: Execute | None = None,
    lifecycle: bool = False,
) -> None:
    """Run ``spec`` once per :class:`Execute` and answer each with exactly one :class:`NodeDone`.

    Cancellation: cancelling the actor ends it between or during executions; an execution cancelled
    through its step's :class:`StepCancel` is answered with ``NodeDone(cancelled=True)``.

    Backpressure: the scheduler sends at most one Execute at a time to each node and its reply mailbox
    has room for one reply per node, so neither side ever waits on the other's buffer.

    A node actor belongs to one session at a time. When a session completes, its scheduler hands its
    idle node actors to the runner's :class:`NodePool`, and the next session of the same graph takes
    them instead of starting new ones.

    ``None`` in the inbox tells an idle actor to return (see :meth:`NodePool.stop_idle`): cheaper
    than ending the inbox, which raises in every actor it ends.

    Errors: exceptions from the node are retried per its :class:`RetryPolicy` and then sent back as the
    reply's ``error``; they never crash the actor.

    With ``lifecycle`` the actor also publishes ``node.started``, ``node.retrying`` and
    ``node.completed``/``node.failed`` for each execution (see :mod:`.lifecycle`).
    """
    execute = functools.partial(_observed, bus) if lifecycle else _execute
    # Every object a parked actor keeps is one more for each full garbage collection to visit, and
    # a wide graph parks thousands: so no ``with inbox:`` (it keeps a bound ``__exit__`` on the
    # stack) and no ``async for`` (it adds an ``__anext__`` coroutine to the wait).
    try:
        if first is not None:
            # Handed over at spawn: a node's first execution costs no mailbox round trip.
            await _handle(spec, first, execute, bus, clock, thread_limiter)
            # A parked actor holds no message: what it references can be freed.
            first = None
        while True:
            try:
                msg = await inbox.receive()
            except trio.EndOfChannel:
                return
            if msg is None:
                return
            await _handle(spec, msg, execute, bus, clock, thread_limiter)
            msg = None
    finally:
        inbox.close()


async def _handle(
    spec: NodeSpec,
    msg: Execute,
    execute: Callable[..., Awaitable[NodeDone]],
    bus: EventBus,
    clock: Clock | None,
    thread_limiter: trio.CapacityLimiter,
) -> None:
    """Run one execution and send its :class:`NodeDone`."""
    ctx = NodeContext(
        node_id=spec.name,
        step=msg.step,
        session_id=msg.session_id,
        invocation_id=msg.invocation_id,
        frontier_index=msg.frontier_index,
        bus=bus,
        clock=clock,
    )
    try:
        done = await execute(spec, msg, ctx, thread_limiter)
    except BaseException:
        # Cancelled from outside (the runner is closing): still answer, so a scheduler draining
        # its step never waits for a reply that cannot come.
        with contextlib.suppress(
            trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock
        ):
            msg.reply_to.send_nowait(
                NodeDone(spec.name, msg.step, msg.index, cancelled=True, round=msg.round)
            )
        raise
    try:
        await msg.reply_to.post(done)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        # The session's scheduler is gone (its step was abandoned and it closed): nobody waits
        # for this reply any more, and a late message never ends an actor.
        log.info("node %r: reply for step %d dropped, its session closed", spec.name, msg.step)


async def _observed(
    bus: EventBus,
    spec: NodeSpec,
    msg: Execute,
    ctx: NodeContext,
    thread_limiter: trio.CapacityLimiter,
) -> NodeDone:
    """:func:`_execute` framed by lifecycle events; a cancelled execution reports nothing more."""
    bus.publish_fresh_nowait(
        node_event(ctx, NODE_STARTED_SCOPE, f"{spec.name} started at step {msg.step}")
    )
    began = trio.current_time()

    def retrying(attempt: int, error: Exception) -> None:
        event = node_event(
            ctx,
            NODE_RETRYING_SCOPE,
            f"{spec.name} retrying at step {msg.step} (attempt {attempt})",
            attempt=attempt,
            error=describe_error(error),
        )
        bus.publish_fresh_nowait(event)

    done = await _execute(spec, msg, ctx, thread_limiter, retrying)
    if done.error is not None:
        error = describe_error(done.error)
        event = node_event(
            ctx, NODE_FAILED_SCOPE, f"{spec.name} failed at step {msg.step}: {error}", error=error
        )
        bus.publish_fresh_nowait(event)
    elif not done.cancelled:
        duration_ms = round((trio.current_time() - began) * 1000, 3)
        event = node_event(
            ctx,
            NODE_COMPLETED_SCOPE,
            f"{spec.name} completed at step {msg.step}",
            duration_ms=duration_ms,
        )
        bus.publish_fresh_nowait(event)
    return done


async def _execute(
    spec: NodeSpec,
    msg: Execute,
    ctx: NodeContext,
    thread_limiter: trio.CapacityLimiter,
    retrying: Callable[[int, Exception], None] | None = None,
) -> NodeDone:
    attempt = 1
    answer = functools.partial(NodeDone, spec.name, msg.step, msg.index, round=msg.round)
    with trio.CancelScope() as scope:
        msg.cancel.register(msg.index, scope)
        try:
            while True:
                try:
                    partial = await _attempt(spec, msg.snapshot, ctx, thread_limiter)
                except Exception as exc:
                    if not spec.retry.should_retry(exc, attempt):
                        return answer(error=exc, attempts=attempt)
                    delay = spec.retry.delay(attempt)
                    log.info(
                        "node %r failed attempt %d at step %d (%r); retrying in %.3f s",
                        spec.name, attempt, msg.step, exc, delay,
                    )  # fmt: skip
                    if retrying is not None:
                        retrying(attempt + 1, exc)
                    await trio.sleep(delay)
                    attempt += 1
                else:
                    return answer(partial=partial, attempts=attempt)
        finally:
            msg.cancel.unregister(msg.index)
    # Only reached when the step's cancel handle cancelled this execution.
    assert scope.cancelled_caught
    return answer(cancelled=True, attempts=attempt)


async def _attempt(
    spec: NodeSpec, snapshot: StateSnapshot, ctx: NodeContext, thread_limiter: trio.CapacityLimiter
) -> NodePartial:
    if spec.timeout is None:
        result = await _call(spec, snapshot, ctx, thread_limiter)
    else:
        result = _TIMED_OUT
        with trio.move_on_after(spec.timeout) as scope:
            result = await _call(spec, snapshot, ctx, thread_limiter)
        # A plain ``def`` node run inline cannot be interrupted: it is failed after the fact when
        # it overran its deadline. One in a thread is abandoned at the deadline (see _call).
        if result is _TIMED_OUT or trio.current_time() >= scope.deadline:
            raise NodeTimeoutError(spec.name, spec.timeout)
    return check_output(spec.name, result)


def check_output(node: str, result: object) -> NodePartial:
    """``result`` as a partial whose ``extra`` is frozen, or :class:`InvalidNodeOutput`.

    Runs in the node actor, before the barrier, so output that could not be merged or stored
    fails the node that returned it (and its retries apply), never the step's merge or save.
    Freezing here moves that cost from the barrier, which then takes the frozen map as is.
    """
    if result is None:
        return _EMPTY
    if not isinstance(result, NodePartial):
        raise InvalidNodeOutput(
            node, None, f"returned {type(result).__name__}; return a NodePartial or None"
        )
    extra = result.extra
    if extra is not None and type(extra) is not FrozenDict:
        frozen: dict[str, Any] = {}
        for key, value in extra.items():
            try:
                if not key.isascii():
                    freeze(key, path="the key")
                frozen[key] = (
                    None if value is None else freeze(value, path=f"extra[{key!r}]", depth=1)
                )
            except TypeError as exc:
                raise InvalidNodeOutput(node, key, str(exc)) from None
        # Built directly: attrs.evolve costs twice as much, once per node execution.
        result = NodePartial(
            messages=result.messages,
            extra=_trusted(frozen),
            errors=result.errors,
            frontier=result.frontier,
        )
    for i, message in enumerate(result.messages or ()):
        _check_texts(node, f"messages[{i}]", (message.role, message.content))
    for i, error in enumerate(result.errors or ()):
        _check_texts(node, f"errors[{i}]", (error.error, error.scope.name, *error.tags))
    if result.frontier is not None:
        _check_texts(node, "frontier", result.frontier.targets)
    return result


def _check_texts(node: str, key: str, texts: Iterable[str]) -> None:
    for text in texts:
        if not text.isascii():
            try:
                freeze(text, path=key)
            except TypeError as exc:
                raise InvalidNodeOutput(node, key, str(exc)) from None


async def _call(
    spec: NodeSpec, snapshot: StateSnapshot, ctx: NodeContext, thread_limiter: trio.CapacityLimiter
) -> object:
    if spec.kind == "async":
        return await cast(_AsyncNodeFn, spec.fn)(snapshot, ctx)
    if spec.kind == "runner":
        run = cast(_AsyncNodeFn, spec.fn.run)  # type: ignore[attr-defined]
        return await run(snapshot, ctx)
    fn = cast(NodeFn, spec.fn)
    if spec.thread:
        # A thread cannot be interrupted. With a timeout the node stops waiting for it when
        # cancelled (at the deadline, or when its step or runner ends): the thread runs on to its
        # end in the background, holding its limiter slot, and its result is discarded.
        return await trio.to_thread.run_sync(
            fn, snapshot, ctx, limiter=thread_limiter, abandon_on_cancel=spec.timeout is not None
        )
    return fn(snapshot, ctx)


_EMPTY = NodePartial()
_TIMED_OUT = object()
