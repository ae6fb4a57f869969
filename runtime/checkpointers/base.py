"""What every durable store shares: its connection thread, drafted saves, reads and maintenance.

A store keeps its driver in one :class:`.ConnectionThread` and implements the blocking halves
(``_write_transaction``, ``_load_sync``, ``_list_sessions_sync``, ``_list_steps_sync``,
``_delete_sync``, ``_prune_sync``); :class:`ThreadedStore` turns them into the async
:class:`~treadle.runtime.checkpointers.checkpoint.Checkpointer` methods, each one call into the thread.
"""

from __future__ import annotations

import datetime
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import trio

from ..errors import CheckpointerError, CheckpointNotFound
from .checkpoint import Checkpoint, Expected, StepInfo, prune_cutoff_ms
from .codec import Draft, StepCodec, StepTx, draft_steps, save_steps
from .connection import ConnectionThread

T = TypeVar("T")


class ThreadedStore(ABC):
    """A durable store whose blocking work runs in its connection thread (``_thread``, set by
    ``open()``), one call at a time.

    Each step to save is drafted (:func:`~.codec.draft_steps`) on the calling thread, then stored
    with :func:`~.codec.save_steps` in the connection thread, inside ``_write_transaction``.
    """

    _codec: StepCodec
    _thread: ConnectionThread[Any] | None

    @abstractmethod
    def _not_open(self) -> CheckpointerError:
        """The error for a call made before ``open()`` or after ``aclose()``."""

    async def _run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the store's connection thread."""
        if self._thread is None:
            raise self._not_open()
        return await self._thread.call(fn)

    # -- writes ------------------------------------------------------------------------------------

    @abstractmethod
    def _write_transaction(self, session_ids: Sequence[str]) -> AbstractContextManager[StepTx]:
        """A write transaction over ``session_ids``, committed when the block ends normally."""

    def _forget(self, session_ids: Sequence[str]) -> None:
        """Drop what the store remembers of ``session_ids`` after a write that did not commit."""
        for session_id in session_ids:
            self._codec.forget(session_id)

    def _save_sync(
        self,
        cps: Sequence[Checkpoint],
        drafts: Sequence[Draft | None],
        expected: Sequence[Expected] | None,
    ) -> None:
        session_ids = [cp.session_id for cp in cps]
        try:
            with self._write_transaction(session_ids) as tx:
                save_steps(self._codec, tx, cps, drafts=drafts, expected=expected)
        except BaseException:
            self._forget(session_ids)
            raise

    async def _save(
        self, cps: Sequence[Checkpoint], expected: Sequence[Expected] | None = None
    ) -> None:
        # Encoded here, on the Trio thread, so that the connection thread only has to write.
        drafts = draft_steps(self._codec, cps)
        await self._run(lambda: self._save_sync(cps, drafts, expected))

    async def save(self, cp: Checkpoint) -> None:
        await self._save([cp])

    async def save_with_concurrency_check(self, cp: Checkpoint, expected_step: int | None) -> None:
        await self._save([cp], [expected_step])

    # -- reads -------------------------------------------------------------------------------------

    @abstractmethod
    def _load_sync(self, session_id: str, step: int | None) -> Checkpoint | None:
        """The stored step (``None``: the latest), or ``None`` if there is none."""

    @abstractmethod
    def _list_sessions_sync(self) -> list[str]:
        """Every session with a stored step, sorted."""

    @abstractmethod
    def _list_steps_sync(self, session_id: str) -> list[StepInfo]:
        """The session's stored steps, oldest first."""

    async def load_latest(self, session_id: str) -> Checkpoint | None:
        return await self._run(lambda: self._load_sync(session_id, None))

    async def load(self, session_id: str, step: int) -> Checkpoint:
        found = await self._run(lambda: self._load_sync(session_id, step))
        if found is None:
            raise CheckpointNotFound(session_id, step)
        return found

    async def list_sessions(self) -> list[str]:
        return await self._run(self._list_sessions_sync)

    async def list_steps(self, session_id: str) -> list[StepInfo]:
        return await self._run(lambda: self._list_steps_sync(session_id))

    # -- maintenance -------------------------------------------------------------------------------

    @abstractmethod
    def _delete_sync(self, session_id: str) -> bool:
        """Delete every stored step of the session; whether it had any."""

    @abstractmethod
    def _prune_sync(self, session_id: str | None, cutoff: int | None, keep_last: int | None) -> int:
        """Prune one session (or all of them); how many steps were removed."""

    async def delete_session(self, session_id: str) -> bool:
        return await self._run(lambda: self._delete_sync(session_id))

    async def prune(
        self,
        *,
        older_than: float | datetime.timedelta | None = None,
        keep_last: int | None = None,
        session_id: str | None = None,
        now_ms: int | None = None,
    ) -> int:
        cutoff = prune_cutoff_ms(older_than, keep_last, now_ms)
        return await self._run(lambda: self._prune_sync(session_id, cutoff, keep_last))

    # -- leases ------------------------------------------------------------------------------------

    async def acquire_lease(self, session_id: str, owner: str) -> None:
        """No leases by default: a store that can tell live owners apart overrides this."""
        await trio.lowlevel.checkpoint()

    async def release_lease(self, session_id: str, owner: str) -> None:
        await trio.lowlevel.checkpoint()


class BatchingStore(ThreadedStore):
    """A :class:`ThreadedStore` whose write transaction is atomic over several steps, so that the
    checkpointer actor may store queued writes together (the SQL stores)."""

    async def save_many(
        self, cps: Sequence[Checkpoint], expected_steps: Sequence[Expected] | None = None
    ) -> None:
        """Store ``cps`` in order in one transaction (the actor's group commit), each checked
        against its entry of ``expected_steps`` when given (see :func:`~.codec.save_step`)."""
        await self._save(cps, expected_steps)
