"""Clocks nodes read through ``ctx.now_unix_ms()``: the system clock, or a mock one for replays."""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import attrs


@runtime_checkable
class Clock(Protocol):
    """Where a run reads wall-clock time from."""

    @property
    def mode(self) -> str: ...

    def now_unix_ms(self) -> int: ...

    def now_seconds(self) -> float: ...


@attrs.define
class SystemClock:
    """The real wall clock."""

    @property
    def mode(self) -> str:
        return "system"

    def now_unix_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def now_seconds(self) -> float:
        return time.time()


@attrs.define
class MockClock:
    """A clock that only moves when told to, so timestamps in state and events are reproducible.

    Args:
        start_seconds: the Unix time, in seconds, the clock reads before any :meth:`advance`.
    """

    start_seconds: float = 0.0
    _offset: float = attrs.field(default=0.0, alias="_offset")

    @property
    def mode(self) -> str:
        return "mock"

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (which must not be negative)."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back: advance({seconds}) is negative")
        self._offset += seconds

    def now_seconds(self) -> float:
        return self.start_seconds + self._offset

    def now_unix_ms(self) -> int:
        return round(self.now_seconds() * 1000)
