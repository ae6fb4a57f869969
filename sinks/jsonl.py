"""A sink writing one JSON event per line to a file (JSON Lines)."""

from __future__ import annotations

import os
from typing import IO

from ..runtime.events.types import Event

__all__ = ["JsonLinesSink"]


class JsonLinesSink:
    """Writes each event's :meth:`~Event.to_json_string` and a newline, flushed per event.

    Given a path, the sink opens it in :meth:`open` (truncating unless ``append``) and closes it in
    :meth:`close`; given an open text file, it writes there and leaves closing to the caller.
    Writes are plain blocking calls, made in the sink's worker thread (see
    :class:`~treadle.sinks.Sink`), so a slow disk never slows the run.

    Args:
        path_or_file: A path, or a text file object.
        pretty: Write indented JSON (each event then spans several lines).
        append: Append to an existing file instead of truncating it.
        name: The sink's name in health reports (default ``"jsonl"``).
        inline: Write on the Trio thread instead: only for an in-memory file (``io.StringIO``),
            for example under a mock clock, where a worker thread would let virtual time jump.
    """

    def __init__(
        self,
        path_or_file: str | os.PathLike[str] | IO[str],
        pretty: bool = False,
        *,
        append: bool = False,
        name: str | None = None,
        inline: bool = False,
    ) -> None:
        self.pretty = pretty
        self.inline = inline
        self.name = name if name is not None else ("jsonl(pretty)" if pretty else "jsonl")
        self._append = append
        if isinstance(path_or_file, str | os.PathLike):
            self.path: str | None = os.fspath(path_or_file)
            self._file: IO[str] | None = None
        else:
            self.path = None
            self._file = path_or_file

    def open(self) -> None:
        """Open the path (a no-op for a file object, or when already open)."""
        if self._file is None and self.path is not None:
            self._file = open(self.path, "a" if self._append else "w", encoding="utf-8")  # noqa: SIM115  # closed in close()
            # A sink reopened later (e.g. after close) must not truncate what it wrote.
            self._append = True

    def handle(self, event: Event) -> None:
        if self._file is None:
            self.open()
        file = self._file
        assert file is not None
        file.write(event.to_json_pretty() if self.pretty else event.to_json_string())
        file.write("\n")
        file.flush()

    def close(self) -> None:
        """Close the file if the sink opened it; flush it otherwise."""
        file = self._file
        if file is None:
            return
        if self.path is None:
            file.flush()
            return
        self._file = None
        file.close()
