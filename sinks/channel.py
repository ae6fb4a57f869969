"""A sink that forwards events into a Trio send channel."""

from __future__ import annotations

from collections.abc import Awaitable

import trio

from ..runtime.events.types import Event
from .base import SinkError

__all__ = ["ChannelSink"]


class ChannelSink:
    """Sends every event into ``send_channel``; the receiver reads them at its own pace.

    When the channel is full the sink waits (its own bus buffer keeps filling and then drops its
    oldest events); the run never waits. A receiver that went away is a :class:`SinkError`, so
    the bus restarts and eventually detaches the sink.

    Args:
        send_channel: Where to send events.
        name: The sink's name in health reports.
        close_channel: Close ``send_channel`` when the sink closes, so the receiver sees the end.
    """

    inline = True
    """``handle`` runs on the Trio thread: it never blocks (see :class:`~treadle.sinks.Sink`)."""

    def __init__(
        self,
        send_channel: trio.abc.SendChannel[Event],
        *,
        name: str = "channel",
        close_channel: bool = True,
    ) -> None:
        self.name = name
        self._channel = send_channel
        self._close_channel = close_channel

    def handle(self, event: Event) -> Awaitable[None] | None:
        channel = self._channel
        if isinstance(channel, trio.MemorySendChannel):
            # Fast path: no await while the channel has room.
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                return self._send(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise self._gone() from exc
            return None
        return self._send(event)

    async def _send(self, event: Event) -> None:
        try:
            await self._channel.send(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._gone() from exc

    def _gone(self) -> SinkError:
        return SinkError(self.name, "the channel's receiver is closed; keep reading until the end")

    async def close(self) -> None:
        if self._close_channel:
            await self._channel.aclose()
