"""The checkpointer actor: one per runner; it owns the storage backend and serialises all its I/O."""

from __future__ import annotations

import datetime
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeAlias, TypeVar, assert_never, runtime_checkable

import attrs
import outcome
import trio

from ...actors.errors import ActorGone
from ...actors.mailbox import MailboxReceiver, MailboxSender, open_mailbox
from ...actors.perturb import Perturbation
from ...actors.request import ReplyTo, ask, reply
from .checkpoint import UNCHECKED, Checkpoint, Checkpointer, Expected, StepInfo

log = logging.getLogger("treadle.checkpointer")

T = TypeVar("T")

# Closing the backend on the way out is shielded, and bounded so a hung server cannot hang exit.
_CLOSE_TIMEOUT = 5.0
# The most queued pipelined writes stored in one transaction.
_MAX_BATCH = 256
# The most sync saves of different sessions stored in one transaction (group commit). Smaller than
# the mailbox's worth so that sessions whose saves arrived together are acknowledged in turns: the
# first group's sessions run their next steps while the next group is on the server, instead of
# every session waiting for one commit and the server waiting for every session.
_MAX_GROUP = 32


@runtime_checkable
class SavesBatches(Protocol):
    """A backend that can store several checkpoints in one transaction (group commit)."""

    async def save_many(
        self, cps: Sequence[Checkpoint], expected_steps: Sequence[Expected] | None = None
    ) -> None:
        """Store ``cps`` in order, atomically: all of them or none; each is checked against its
        entry of ``expected_steps`` (as :meth:`Checkpointer.save_with_concurrency_check` does)."""


@runtime_checkable
class SavesGroups(Protocol):
    """A backend that can store the saves of several sessions in one transaction, each with its
    own outcome (the group commit of ``durability="sync"`` saves)."""

    async def save_group(
        self, cps: Sequence[Checkpoint], expected_steps: Sequence[Expected]
    ) -> list[outcome.Outcome[None]]:
        """Store ``cps`` (one per session), each checked against its entry of ``expected_steps``;
        each one's outcome, in order. A failed save stores nothing and is never acknowledged,
        whatever became of the others."""


@runtime_checkable
class RenewsLeases(Protocol):
    """A backend whose session leases expire unless renewed (PostgreSQL)."""

    lease_renew_interval: float
    """Seconds between renewals."""

    async def renew_leases(self) -> None:
        """Extend every lease this backend holds."""


# -- messages --------------------------------------------------------------------------------------


@attrs.frozen
class Call:
    """Run one backend operation and answer with its result (every read and acknowledged write)."""

    name: str
    op: Callable[[], Awaitable[Any]]
    reply_to: ReplyTo[Any]
    # The asker cancels this scope when it stops waiting, so the operation it asked for stops too
    # (a write waiting for a lock on the server is cancelled there, not left to block the actor).
    abandon: trio.CancelScope = attrs.field(factory=trio.CancelScope, eq=False)


@attrs.define(eq=False)
class _Waiters:
    """The askers of a group of saves that share one transaction: the group is cancelled only
    once every one of them has stopped waiting."""

    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    waiting: int = 0

    def gone(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.scope.cancel(reason="every asker of the group stopped waiting")


@attrs.frozen
class Save:
    """Write one session's checkpoint and answer once it is stored (``durability="sync"``).

    Saves of several sessions queued together are committed together when the backend can
    (:class:`SavesGroups`), each answered with its own outcome.
    """

    checkpoint: Checkpoint
    # The latest stored step the writer builds on (UNCHECKED: a plain save).
    expected_step: Expected
    reply_to: ReplyTo[None]
    # Cancelled when the asker stops waiting: the save stops too, unless it shares its
    # transaction with other sessions' saves still awaited (then the last asker's leaving does).
    abandon: trio.CancelScope = attrs.field(factory=trio.CancelScope, eq=False)
    # Set by the actor when the save joins a group (a one-item list: the message is frozen).
    group: list[_Waiters] = attrs.field(factory=list, eq=False)

    def stop_waiting(self, *, answered: bool) -> None:
        """The asker's last act, answered or not. An answered save has nothing left to stop
        (and a cancel is not free: trio describes its source task for the reason)."""
        if not answered:
            self.abandon.cancel(reason="the asker stopped waiting")
        if self.group:
            self.group[0].gone()


@attrs.frozen
class PipelinedSave:
    """Write a checkpoint nobody waits for (``durability="async"``); a failure is kept for later.

    ``done`` is set once the write is over (stored, failed or skipped).
    """

    checkpoint: Checkpoint
    # The latest stored step the writer builds on (UNCHECKED: a plain save).
    expected_step: Expected = UNCHECKED
    done: trio.Event = attrs.field(factory=trio.Event, eq=False)


@attrs.frozen
class Flush:
    """Answer once every earlier request is done, with the first pipelined failure if any."""

    reply_to: ReplyTo[None]


@attrs.frozen
class RenewLeases:
    """Sent by the heartbeat task: extend the leases the backend holds."""


CheckpointerMsg: TypeAlias = Call | Save | PipelinedSave | Flush | RenewLeases


@attrs.define(eq=False)
class CheckpointerActor:
    """The handle and the actor of a runner's checkpointer.

    Every method sends a request to the actor's mailbox and the actor performs them one at a time, in
    arrival order, so storage I/O is serialised and writes land in the order they were made.

    Args:
        checkpointer: The backend this actor owns (it opens and closes it).
        capacity: Requests buffered before senders wait.
        perturb: The scheduling-perturbation hook for interleaving tests.
    """

    checkpointer: Checkpointer
    capacity: int = attrs.field(default=64, kw_only=True)
    perturb: Perturbation | None = attrs.field(default=None, kw_only=True)
    _pending_error: BaseException | None = attrs.field(default=None, init=False)
    # Per session, the pipelined write still in progress: the next one waits for it.
    _inflight: dict[str, trio.Event] = attrs.field(factory=dict, init=False)
    _send: MailboxSender[CheckpointerMsg] = attrs.field(init=False)
    _receive: MailboxReceiver[CheckpointerMsg] | None = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = open_mailbox[CheckpointerMsg](
            self.capacity, name="checkpointer", perturb=self.perturb
        )

    @property
    def backend(self) -> str:
        """The backend's name: ``"memory"``, ``"sqlite"``, ``"postgres"`` or ``"json"``."""
        return self.checkpointer.backend

    @property
    def volatile(self) -> bool:
        """Whether the backend keeps nothing beyond the process (the in-memory one)."""
        return bool(getattr(self.checkpointer, "volatile", False))

    # -- the actor ---------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the backend, then serve requests until cancelled; close the backend on the way out.

        ``await nursery.start(actor.run)`` returns once the backend is open, so a backend that cannot
        connect fails the caller's start with its own clear error. The backend's background work
        (its connection thread) runs in this actor's nursery and ends before the actor does.

        Cancellation:
            Stops serving at once; queued requests are dropped and their askers get ``ActorGone``
            (callers that care flush first). The backend is then closed, shielded, within 5 s. A
            backend call already in a worker thread is cancelled on the server and waited for at
            most 5 s. A :class:`Call` whose asker stops waiting is cancelled the same way.

        Backpressure:
            The mailbox holds ``capacity`` requests; further senders wait, so ``async`` durability
            cannot run ahead of storage by more than that.

        Errors:
            A failing operation is answered to its asker and the actor goes on. A failing pipelined
            write is kept and raised by the next ``save``, ``save_pipelined`` or ``flush``; writes
            queued behind it are skipped until then, so that the stored history has no gap.

        Pipelined writes queued back to back are stored together in one transaction when the
        backend supports it (:class:`SavesBatches`): one commit, one thread hop. So are ``sync``
        saves of different sessions queued back to back (:class:`SavesGroups`), each answered
        with its own outcome once the transaction is over.
        """
        receive = self._receive
        if receive is None:
            raise RuntimeError("a CheckpointerActor can run only once")
        self._receive = None
        failed_to_open: BaseException | None = None
        with receive:
            # The backend's connection thread and the lease heartbeat live in this nursery.
            async with trio.open_nursery() as nursery:
                try:
                    await self.checkpointer.open(nursery)
                except BaseException as exc:
                    # Raised below, outside the nursery, so the runner's start sees it unwrapped.
                    failed_to_open = exc
                    nursery.cancel_scope.cancel(reason="the checkpointer failed to open")
                else:
                    try:
                        if isinstance(self.checkpointer, RenewsLeases):
                            interval = self.checkpointer.lease_renew_interval
                            nursery.start_soon(self._heartbeat, interval)
                        task_status.started()
                        await self._serve(receive)
                    finally:
                        with trio.move_on_after(_CLOSE_TIMEOUT) as scope:
                            scope.shield = True
                            await self.checkpointer.aclose()
                        nursery.cancel_scope.cancel(reason="the checkpointer actor stopped")
        if failed_to_open is not None:
            raise failed_to_open

    async def _serve(self, receive: MailboxReceiver[CheckpointerMsg]) -> None:
        # Messages taken out of the mailbox early, to batch pipelined writes; served in order.
        taken: deque[CheckpointerMsg] = deque()
        batches = isinstance(self.checkpointer, SavesBatches)
        groups = isinstance(self.checkpointer, SavesGroups)
        try:
            while True:
                if taken:
                    msg = taken.popleft()
                else:
                    try:
                        msg = await receive.receive()
                    except trio.EndOfChannel:
                        return
                if batches and isinstance(msg, PipelinedSave):
                    taken.extend(receive.drain_nowait(_MAX_BATCH))
                    batch = [msg]
                    while taken and len(batch) < _MAX_BATCH:
                        head = taken[0]
                        if not isinstance(head, PipelinedSave):
                            break
                        taken.popleft()
                        batch.append(head)
                    await self._save_pipelined_batch(batch)
                elif groups and isinstance(msg, Save):
                    taken.extend(receive.drain_nowait(_MAX_BATCH))
                    group = [msg]
                    sessions = {msg.checkpoint.session_id}
                    while taken and len(group) < _MAX_GROUP:
                        head = taken[0]
                        if not isinstance(head, Save) or head.checkpoint.session_id in sessions:
                            break
                        taken.popleft()
                        group.append(head)
                        sessions.add(head.checkpoint.session_id)
                    await self._save_group(group)
                else:
                    await self._handle(msg)
        finally:
            # Requests taken but never served: their askers must learn that the actor is gone.
            for msg in taken:
                if isinstance(msg, Call | Save | Flush):
                    msg.reply_to.close()
            # Writers waiting for an earlier pipelined write must not wait for ever.
            inflight, self._inflight = self._inflight, {}
            for done in inflight.values():
                done.set()

    async def _save_pipelined_batch(self, batch: list[PipelinedSave]) -> None:
        try:
            if self._pending_error is not None:
                return  # an earlier write failed: never leave a gap in the history
            cps = [msg.checkpoint for msg in batch]
            try:
                if len(cps) == 1:
                    await self._save_one(cps[0], batch[0].expected_step)
                else:
                    assert isinstance(self.checkpointer, SavesBatches)
                    expected = [msg.expected_step for msg in batch]
                    if all(step is UNCHECKED for step in expected):
                        await self.checkpointer.save_many(cps)  # as stores before checks take it
                    else:
                        await self.checkpointer.save_many(cps, expected)
            except Exception as exc:
                log.warning(
                    "checkpoints of steps %d..%d (session %r…) failed: %s",
                    cps[0].step,
                    cps[-1].step,
                    cps[0].session_id,
                    exc,
                )
                self._pending_error = exc
        finally:
            for msg in batch:
                msg.done.set()
                session_id = msg.checkpoint.session_id
                if self._inflight.get(session_id) is msg.done:
                    del self._inflight[session_id]

    async def _save_group(self, group: list[Save]) -> None:
        """Store the saves of several sessions together (one transaction, one commit) and answer
        each with its own outcome, once that transaction is over."""
        if self._pending_error is not None or len(group) == 1:
            # The first save after a failed pipelined write reports it, as a lone save does.
            await self._handle(group[0])
            group = group[1:]
        # Askers that already stopped waiting are not stored (a lone save would be cancelled).
        live = []
        for msg in group:
            if msg.abandon.cancel_called:
                msg.reply_to.close()
            else:
                live.append(msg)
        if len(live) <= 1:
            for msg in live:
                await self._handle(msg)
            return
        assert isinstance(self.checkpointer, SavesGroups)
        waiters = _Waiters(waiting=len(live))
        for msg in live:
            msg.group.append(waiters)
        outcomes: list[outcome.Outcome[None]] | None = None
        try:
            with waiters.scope:
                outcomes = await self.checkpointer.save_group(
                    [msg.checkpoint for msg in live], [msg.expected_step for msg in live]
                )
        except Exception as exc:
            log.debug("checkpointer group save failed: %r", exc)
            outcomes = [outcome.Error(exc)] * len(live)
        finally:
            for msg in live:
                with msg.reply_to:  # unanswered (cancelled): the askers learn the actor is gone
                    if outcomes is not None:
                        reply(msg.reply_to, outcomes.pop(0))

    async def _handle(self, msg: CheckpointerMsg) -> None:
        match msg:
            case Save(reply_to=reply_to, abandon=abandon):
                with reply_to, abandon:
                    try:
                        # A pipelined failure that arrived after the asker's check still wins.
                        self._raise_pending()
                        await self._save_one(msg.checkpoint, msg.expected_step)
                    except Exception as exc:
                        log.debug("checkpointer save failed: %r", exc)
                        reply(reply_to, outcome.Error(exc))
                    else:
                        reply(reply_to, outcome.Value(None))
            case Call(name=name, op=op, reply_to=reply_to, abandon=abandon):
                with reply_to, abandon:
                    try:
                        value = await op()
                    except Exception as exc:
                        log.debug("checkpointer %s failed: %r", name, exc)
                        reply(reply_to, outcome.Error(exc))
                    else:
                        reply(reply_to, outcome.Value(value))
            case PipelinedSave():
                await self._save_pipelined_batch([msg])
            case Flush(reply_to=reply_to):
                error, self._pending_error = self._pending_error, None
                reply(reply_to, outcome.Value(None) if error is None else outcome.Error(error))
            case RenewLeases():
                if isinstance(self.checkpointer, RenewsLeases):
                    try:
                        await self.checkpointer.renew_leases()
                    except Exception as exc:
                        log.warning("renewing session leases failed: %s", exc)
            case _:
                assert_never(msg)

    async def _heartbeat(self, interval: float) -> None:
        send = self._send.clone()
        with send:
            while True:
                await trio.sleep(interval)
                await send.send(RenewLeases())

    # -- requests ----------------------------------------------------------------------------------

    async def _call(self, name: str, op: Callable[[], Awaitable[T]]) -> T:
        abandon = trio.CancelScope()

        def make(reply_to: ReplyTo[T]) -> Call:
            return Call(name, op, reply_to, abandon)

        try:
            result: T = await ask(self._send, make, actor="checkpointer")
        finally:
            abandon.cancel(reason="the asker stopped waiting")
        return result

    def _raise_pending(self) -> None:
        error, self._pending_error = self._pending_error, None
        if error is not None:
            raise error

    async def save(self, cp: Checkpoint) -> None:
        """Write a checkpoint and wait until it is stored (``durability="sync"``).

        Raises:
            CheckpointerError: This write failed, or an earlier pipelined one did.
        """
        self._raise_pending()
        await self._ask_save(cp, UNCHECKED)

    async def _ask_save(self, cp: Checkpoint, expected_step: Expected) -> None:
        msg: Save | None = None

        def make(reply_to: ReplyTo[None]) -> Save:
            nonlocal msg
            msg = Save(cp, expected_step, reply_to)
            return msg

        answered = False
        try:
            await ask(self._send, make, actor="checkpointer")
            answered = True
        finally:
            if msg is not None:
                msg.stop_waiting(answered=answered)

    async def _save_one(self, cp: Checkpoint, expected_step: Expected) -> None:
        if expected_step is UNCHECKED:
            await self.checkpointer.save(cp)
        else:
            await self.checkpointer.save_with_concurrency_check(cp, expected_step)

    async def save_with_concurrency_check(self, cp: Checkpoint, expected_step: int | None) -> None:
        """Write a checkpoint only if the session's latest stored step is ``expected_step`` (or is
        this very checkpoint already: a retried save that had committed), and wait until it is
        stored.

        Raises:
            ConcurrencyConflict: Someone else wrote the session.
            CheckpointerError: This write failed, or an earlier pipelined one did.
        """
        self._raise_pending()
        await self._ask_save(cp, expected_step)

    async def save_pipelined(self, cp: Checkpoint, *, expected_step: Expected = UNCHECKED) -> None:
        """Queue a checkpoint write without waiting for it (``durability="async"``).

        The write overlaps whatever the caller does next, but at most one write per session is in
        flight: this first waits for the session's previous pipelined write, so a crash loses at
        most the step being written. Writes stay in order; writes of several sessions queued
        together are committed together. With ``expected_step`` the write is checked as
        :meth:`save_with_concurrency_check` checks it; a conflict is a failed write.

        Raises:
            CheckpointerError: An earlier pipelined write failed (raised once).
            ActorGone: The actor has stopped.
        """
        previous = self._inflight.get(cp.session_id)
        if previous is not None and not previous.is_set():
            await previous.wait()
        self._raise_pending()
        msg = PipelinedSave(cp, expected_step)
        self._inflight[cp.session_id] = msg.done
        try:
            # post: no schedule point when the mailbox has room (the caller yields soon anyway).
            await self._send.post(msg)
        except BaseException as exc:
            msg.done.set()
            if self._inflight.get(cp.session_id) is msg.done:
                del self._inflight[cp.session_id]
            if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError):
                raise ActorGone("checkpointer") from exc
            raise

    async def flush(self) -> None:
        """Wait until every queued write is stored.

        Raises:
            CheckpointerError: The first pipelined write that failed since the last report.
        """
        self._raise_pending()
        await ask(self._send, Flush, actor="checkpointer")

    async def load_latest(self, session_id: str) -> Checkpoint | None:
        """The latest stored checkpoint of a session, or ``None``."""
        return await self._call("load_latest", lambda: self.checkpointer.load_latest(session_id))

    async def load(self, session_id: str, step: int) -> Checkpoint:
        """The stored checkpoint of a session at ``step``.

        Raises:
            CheckpointNotFound: No such step is stored.
        """
        return await self._call("load", lambda: self.checkpointer.load(session_id, step))

    async def list_sessions(self) -> list[str]:
        """Every stored session id, sorted."""
        return await self._call("list_sessions", self.checkpointer.list_sessions)

    async def list_steps(self, session_id: str) -> list[StepInfo]:
        """The stored steps of a session, oldest first."""
        return await self._call("list_steps", lambda: self.checkpointer.list_steps(session_id))

    async def delete_session(self, session_id: str) -> bool:
        """Remove a session and its history; whether it existed."""
        return await self._call(
            "delete_session", lambda: self.checkpointer.delete_session(session_id)
        )

    async def prune(
        self,
        *,
        older_than: float | datetime.timedelta | None = None,
        keep_last: int | None = None,
        session_id: str | None = None,
        now_ms: int | None = None,
    ) -> int:
        """Remove old steps (never a session's latest); how many were removed.

        ``older_than`` is measured back from ``now_ms`` (unix ms; default the wall clock), to compare
        with the ``created_at`` the runner's clock gave each step.
        """
        options: dict[str, Any] = {
            "older_than": older_than,
            "keep_last": keep_last,
            "session_id": session_id,
        }
        if now_ms is not None:  # only then: custom stores may predate the argument
            options["now_ms"] = now_ms
        return await self._call("prune", lambda: self.checkpointer.prune(**options))

    async def acquire_lease(self, session_id: str, owner: str) -> None:
        """Claim a session for ``owner``.

        Raises:
            SessionLeased: Another live process holds it (PostgreSQL).
        """
        await self._call(
            "acquire_lease", lambda: self.checkpointer.acquire_lease(session_id, owner)
        )

    async def release_lease(self, session_id: str, owner: str) -> None:
        """Give up a lease taken by :meth:`acquire_lease`."""
        await self._call(
            "release_lease", lambda: self.checkpointer.release_lease(session_id, owner)
        )

    async def release_leases(self, session_ids: Sequence[str], owner: str) -> None:
        """Give up the leases of ``session_ids``: in one call where the checkpointer has
        ``release_leases`` (PostgreSQL: one round trip), else one by one."""
        release_many = getattr(self.checkpointer, "release_leases", None)
        if release_many is None:
            for session_id in session_ids:
                await self.release_lease(session_id, owner)
            return
        await self._call("release_leases", lambda: release_many(session_ids, owner))
