"""The compiled, runnable graph: :class:`App`, and the blocking :func:`run` entry point."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..viz.mermaid import export_mermaid

if TYPE_CHECKING:
    from ...sinks.base import Sink
    from ..events.bus import EventStream
    from ..events.types import Event
    from .builder import CompiledGraph, GraphMetadata
    from .state import VersionedState


class App:
    """A compiled graph. Run it with :class:`AppRunner`, or with the one-call helpers below.

    Each helper opens and closes its own runner (in-memory checkpoints unless ``checkpointer=`` says
    otherwise); ``**runner_options`` are passed to :class:`AppRunner`.
    """

    def __init__(self, graph: CompiledGraph) -> None:
        self.graph = graph

    def graph_metadata(self) -> GraphMetadata:
        """A hash of the definition (nodes, edges, conditional targets, reducer labels)."""
        return self.graph.graph_metadata()

    def to_mermaid(
        self, orientation: str = "TD", statuses: Mapping[str, object] | None = None
    ) -> str:
        """Mermaid flowchart text of this graph: the same as ``export_mermaid(self, ...)``."""
        return export_mermaid(self, orientation, statuses)

    async def invoke(
        self, state: VersionedState, *, session_id: str | None = None, **runner_options: Any
    ) -> VersionedState:
        """Run a fresh session to completion and return its final state."""
        from ..execution.runner import AppRunner

        sid = session_id or _new_session_id()
        async with AppRunner(self, **runner_options) as runner:
            await runner.create_session(sid, state)
            return await runner.run_until_complete(sid)

    async def invoke_with_sinks(
        self, state: VersionedState, sinks: Sequence[Sink], **runner_options: Any
    ) -> VersionedState:
        """Like :meth:`invoke`, with an :class:`EventBus` over ``sinks``."""
        from ..events.bus import EventBus

        return await self.invoke(state, event_bus=EventBus(sinks), **runner_options)

    async def invoke_with_channel(
        self, state: VersionedState, **runner_options: Any
    ) -> tuple[VersionedState, trio.MemoryReceiveChannel[Event]]:
        """Run to completion; return the final state and a channel holding every event of the run.

        The channel is closed for sending, so ``async for event in events`` ends after the run's
        ``STREAM_END`` event.
        """
        from ...sinks.memory import MemorySink

        memory = MemorySink()
        final = await self.invoke_with_sinks(state, [memory], **runner_options)
        events = memory.snapshot()
        send, receive = trio.open_memory_channel["Event"](max(1, len(events)))
        with send:
            for event in events:
                send.send_nowait(event)
        return final, receive

    @asynccontextmanager
    async def invoke_streaming(
        self, state: VersionedState, *, session_id: str | None = None, **runner_options: Any
    ) -> AsyncIterator[StreamingRun]:
        """Run in the background while the block reads ``run.events``.

        ``run.events`` yields every event of the session, losing none (the run waits while the
        block has not read them), and ends after its ``STREAM_END``;
        ``await run.result()`` waits for the final state (or raises the run's error). Leaving the block
        before the run ends cancels it.
        """
        from ..execution.runner import AppRunner

        sid = session_id or _new_session_id()
        async with AppRunner(self, **runner_options) as runner, trio.open_nursery() as nursery:
            # The caller is the consumer: the run waits for it rather than drop its events.
            stream = runner.event_stream(session_id=sid, overflow="block")
            await runner.create_session(sid, state)
            run = StreamingRun(session_id=sid, events=stream)
            nursery.start_soon(run._drive, runner)
            try:
                yield run
            finally:
                nursery.cancel_scope.cancel(reason="invoke_streaming block left")
                stream.close()


@attrs.define(eq=False)
class StreamingRun:
    """A run in progress inside :meth:`App.invoke_streaming`."""

    session_id: str
    events: EventStream
    _done: trio.Event = attrs.field(factory=trio.Event, init=False)
    _final: VersionedState | None = attrs.field(default=None, init=False)
    _error: BaseException | None = attrs.field(default=None, init=False)

    async def _drive(self, runner: Any) -> None:
        try:
            self._final = await runner.run_until_complete(self.session_id)
        except Exception as exc:
            self._error = exc
        finally:
            self._done.set()

    async def result(self) -> VersionedState:
        """Wait for the run to end; return its final state or raise its error."""
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._final is not None
        return self._final


def run(app: App, state: VersionedState, **options: Any) -> VersionedState:
    """Run ``app`` from ``state`` to completion from plain (non-async) code, with ``trio.run``."""

    async def main() -> VersionedState:
        return await app.invoke(state, **options)

    return trio.run(main)


def _new_session_id() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"
