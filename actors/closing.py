"""Ends that close synchronously: ``with end:`` and ``async with end:`` both close without a
checkpoint, so leaving the block never turns a real error into a pending ``Cancelled`` (the trio
hazard of ``async with send_channel:``)."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

import trio


class ClosesSynchronously(abc.ABC):
    """Mix in before a ``trio.abc`` channel class; subclasses implement :meth:`close`."""

    __slots__ = ()

    @abc.abstractmethod
    def close(self) -> None:
        """Close this end (idempotent, not a checkpoint)."""

    async def aclose(self) -> None:
        """Close this end, then checkpoint (trio's convention for async methods)."""
        self.close()
        await trio.lowlevel.checkpoint()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Deliberately no checkpoint: see the module docstring.
        self.close()
