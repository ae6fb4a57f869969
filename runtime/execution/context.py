"""The ``ctx`` every node receives: who and when it is, and how it emits events."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import trio

from ...actors.cancel_point import run_context
from ..events.types import (
    LLM_CHUNK_SCOPE,
    LLM_ERROR_SCOPE,
    LLM_FINAL_SCOPE,
    DiagnosticEvent,
    LLMEvent,
    NodeEvent,
)
from ..graph.frozen import FrozenDict, freeze
from .clock import Clock

if TYPE_CHECKING:
    from ..events.bus import EventBus


@attrs.define(eq=False)
class NodeContext:
    """The context of one node execution.

    Attributes:
        node_id: the node's name.
        step: the superstep being run (1-based, monotonic for the session).
        session_id: the session this execution belongs to.
        invocation_id: identifies the run (the session id unless an iterative invocation set one).
        frontier_index: the node's position in this step's frontier, which fixes its merge order.
    """

    node_id: str
    step: int
    session_id: str
    invocation_id: str
    frontier_index: int
    _bus: EventBus = attrs.field(alias="bus", repr=False)
    _clock: Clock | None = attrs.field(alias="clock", default=None, repr=False)
    _seq: int = attrs.field(default=0, init=False, repr=False)
    # The metadata every event of this execution carries (but ``node_seq``), built once.
    _own: FrozenDict = attrs.field(init=False, repr=False)
    # What every event of this execution shares, as EventBus.publish_emitted takes it.
    _origin: tuple[str, int, str, FrozenDict] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        own = _new_frozen(FrozenDict)
        _update(
            own,
            node_id=self.node_id,
            step=self.step,
            invocation_id=self.invocation_id,
            frontier_index=self.frontier_index,
        )
        self._own = own
        self._origin = (self.node_id, self.step, self.session_id, own)

    def now_unix_ms(self) -> int:
        """The run's clock (a :class:`MockClock` when one was given) in Unix milliseconds."""
        if self._clock is None:
            return trio_wall_ms()
        return self._clock.now_unix_ms()

    def _metadata(self, extra: dict[str, Any]) -> FrozenDict:
        self._seq += 1
        # Built in place as a FrozenDict (one dict per event): only the caller's values need
        # checking and freezing; the context's own are str and int, copied from ``_own``.
        meta = _new_frozen(FrozenDict)
        if extra:
            _fill(meta, extra)
        _update(meta, self._own)
        _set(meta, "node_seq", self._seq)
        if self._clock is not None:
            _set(meta, "now_unix_ms", self._clock.now_unix_ms())
        return meta

    def _timestamp(self) -> float:
        if self._clock is None:
            return time.time()
        return self._clock.now_seconds()

    def _node_event(self, scope: str, message: str, metadata: dict[str, Any]) -> NodeEvent:
        if type(scope) is not str or type(message) is not str:
            _not_text(scope, message)
        return NodeEvent._fresh(
            self.node_id,
            self.step,
            scope,
            message,
            self._metadata(metadata),
            self._timestamp(),
            self.session_id,
        )

    async def emit(self, scope: str, message: str, **metadata: Any) -> None:
        """Publish a :class:`NodeEvent`; never fails for lack of listeners.

        Metadata values must be JSON values; ``node_id``, ``step``, ``invocation_id``,
        ``frontier_index``, ``node_seq`` (and ``now_unix_ms`` with a clock) are added.
        """
        bus = self._bus
        if (
            metadata
            or self._clock is not None
            or type(scope) is not str
            or type(message) is not str
        ):
            # bus.publish_fresh, unrolled: one coroutine less for every event a node emits.
            event = self._node_event(scope, message, metadata)
            await trio.lowlevel.checkpoint_if_cancelled()
            if bus.publish_fresh_nowait(event):
                await bus.settle(self.session_id)
            return
        # The usual case (plain text, no metadata of the caller's, the system clock): the bus
        # builds the event, compact, and publishes it.
        # trio.lowlevel.checkpoint_if_cancelled(), without a coroutine (see actors.cancel_point).
        task = run_context.task
        if task._cancel_status.effectively_cancelled or task is task._runner.main_task:
            await _checkpoint_if_cancelled()  # raises what is pending
        else:
            task._cancel_points += 1
        self._seq += 1
        if bus.publish_emitted(self._origin, scope, message, self._seq):
            await bus.settle(self.session_id)

    def emit_nowait(self, scope: str, message: str, **metadata: Any) -> None:
        """Like :meth:`emit`, for plain ``def`` nodes, inline or in a worker thread."""
        bus = self._bus
        if (
            metadata
            or self._clock is not None
            or type(scope) is not str
            or type(message) is not str
        ):
            _call_on_trio_thread(
                bus.publish_fresh_nowait, self._node_event(scope, message, metadata)
            )
            return
        self._seq += 1
        _call_on_trio_thread(bus.publish_emitted, self._origin, scope, message, self._seq)

    async def emit_diagnostic(self, scope: str, message: str, **metadata: Any) -> None:
        """Publish a :class:`DiagnosticEvent` attributed to this node."""
        event = DiagnosticEvent(
            scope=scope,
            message=message,
            metadata=self._metadata(metadata),
            timestamp=self._timestamp(),
        )
        await self._bus.publish(self.session_id, event)

    def _llm_event(
        self, chunk: str, *, scope: str, is_final: bool, stream_id: str | None, meta: dict[str, Any]
    ) -> LLMEvent:
        return LLMEvent(
            session_id=self.session_id,
            node_id=self.node_id,
            stream_id=stream_id,
            chunk=chunk,
            is_final=is_final,
            scope=scope,
            metadata=self._metadata(meta),
            timestamp=self._timestamp(),
        )

    async def emit_llm_chunk(
        self, chunk: str, *, stream_id: str | None = None, **metadata: Any
    ) -> None:
        """Publish one streamed token chunk of an LLM response."""
        event = self._llm_event(
            chunk, scope=LLM_CHUNK_SCOPE, is_final=False, stream_id=stream_id, meta=metadata
        )
        await self._bus.publish(self.session_id, event)

    async def emit_llm_final(
        self, chunk: str = "", *, stream_id: str | None = None, **metadata: Any
    ) -> None:
        """Publish the final chunk of an LLM response (scope ``"final"``)."""
        event = self._llm_event(
            chunk, scope=LLM_FINAL_SCOPE, is_final=True, stream_id=stream_id, meta=metadata
        )
        await self._bus.publish(self.session_id, event)

    async def emit_llm_error(
        self, error: str, *, stream_id: str | None = None, **metadata: Any
    ) -> None:
        """Publish an LLM stream failure (scope ``"error"``); it ends that stream."""
        event = self._llm_event(
            error, scope=LLM_ERROR_SCOPE, is_final=True, stream_id=stream_id, meta=metadata
        )
        await self._bus.publish(self.session_id, event)


_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled

# FrozenDict refuses mutation; these fill a new one before anyone else holds it.
_new_frozen = dict.__new__
_update = dict.update
_set = dict.__setitem__


def _fill(meta: FrozenDict, extra: dict[str, Any]) -> None:
    """Add the caller's metadata to ``meta``, frozen; plain scalars (the usual case) as they are."""
    for key, value in extra.items():
        kind = type(value)
        if (kind is int or kind is bool or value is None or (kind is str and value.isascii())) and (
            key.isascii()
        ):
            _set(meta, key, value)
        else:
            # The general path checks the key and the value, and names them in its errors.
            _update(meta, freeze({key: value}, path="metadata"))  # type: ignore[arg-type]


def trio_wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _not_text(scope: object, message: object) -> NoReturn:
    raise TypeError(
        f"ctx.emit(scope, message) takes two strings, not {type(scope).__name__} and "
        f"{type(message).__name__}"
    )


def _call_on_trio_thread(fn: Callable[..., object], *args: Any) -> None:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        # A worker thread (a ``thread=True`` node): hop to the Trio thread to publish.
        trio.from_thread.run_sync(fn, *args)
    else:
        fn(*args)
