"""A sink printing one readable line per event, coloured only on a terminal."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from ..runtime.events.types import DiagnosticEvent, Event, LLMEvent, NodeEvent, is_sentinel

__all__ = ["StdOutSink", "format_event"]

_CONTEXT = "\x1b[32m"  # green: who said it
_SCOPE = "\x1b[35m"  # magenta: what kind of event
_END = "\x1b[1m"  # bold: stream and invocation ends
_RESET = "\x1b[0m"


def format_event(event: Event, *, colour: bool = False) -> str:
    """One human line for ``event``, without the newline.

    The form is ``[session #seq] who scope: message``: ``who`` is ``node@step`` for node events,
    ``LLM node/stream`` for LLM chunks and empty for diagnostics.
    """
    session = event.session_id if event.session_id is not None else "-"
    context = f"[{session}]" if event.seq is None else f"[{session} #{event.seq}]"
    if isinstance(event, NodeEvent):
        who = f"{event.node_id}@{event.step}"
    elif isinstance(event, LLMEvent):
        who = f"LLM {event.node_id}" + (f"/{event.stream_id}" if event.stream_id else "")
    else:
        who = ""
    scope = event.scope
    message = event.message.replace("\n", "\\n")
    head = f"{context} {who}".rstrip()
    if not colour:
        return f"{head} {scope}: {message}"
    if isinstance(event, DiagnosticEvent) and is_sentinel(event):
        message = f"{_END}{message}{_RESET}"
    return f"{_CONTEXT}{head}{_RESET} {_SCOPE}{scope}{_RESET}: {message}"


class StdOutSink:
    """Prints each event as one line (see :func:`format_event`) and flushes.

    Args:
        stream: Where to write; ``None`` means the current ``sys.stdout`` at each event.
        colour: ``True``/``False`` force ANSI colour on or off; ``None`` colours only when the
            stream is a terminal and the ``NO_COLOR`` environment variable is unset.
        name: The sink's name in health reports.
        inline: Write on the Trio thread instead of the sink's worker thread: only for an
            in-memory stream (``io.StringIO``), for example under a mock clock.

    Lines are written in the sink's worker thread, so a terminal or pipe that blocks never slows
    the run.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        colour: bool | None = None,
        *,
        name: str = "stdout",
        inline: bool = False,
    ) -> None:
        self.name = name
        self.inline = inline
        self._stream = stream
        self._colour = colour
        # (stream, decision) so a terminal check is made once per stream, not per event.
        self._decided: tuple[TextIO, bool] | None = None

    def _use_colour(self, stream: TextIO) -> bool:
        if self._colour is not None:
            return self._colour
        decided = self._decided
        if decided is not None and decided[0] is stream:
            return decided[1]
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError, OSError):
            tty = False
        colour = tty and "NO_COLOR" not in os.environ
        self._decided = (stream, colour)
        return colour

    def handle(self, event: Event) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(format_event(event, colour=self._use_colour(stream)) + "\n")
        stream.flush()
