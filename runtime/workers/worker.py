"""``Worker``: claims pending sessions from the PostgreSQL work queue and runs them on its own
runner; heartbeats, recovery of dead workers' sessions, and draining."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Final, Literal, TypeAlias, TypeVar

import attrs
import trio

from ..checkpointers.checkpoint import Checkpointer, resolve_checkpointer
from ..checkpointers.postgres import PostgresCheckpointer
from ..errors import CheckpointBackendError, SessionLeased
from ..events.bus import EventBus
from ..events.lifecycle import describe_error
from ..events.types import DiagnosticEvent
from ..execution.runner import AppRunner
from ..execution.session import Paused, Resumed, StepOptions
from ..graph.app import App
from . import queue
from .listener import Listener

_log = logging.getLogger("treadle.worker")

T = TypeVar("T")

WORKER_CLAIMED_SCOPE: Final = "worker.claimed"
"""A worker claimed the session; metadata ``owner``, ``attempts`` (failed runs so far)."""
WORKER_RELEASED_SCOPE: Final = "worker.released"
"""The worker let the session go; metadata ``owner``, ``outcome`` (``completed``, ``paused``,
``failed``, ``pending``: handed back by a draining worker or after a failed run, ``lost``: another
worker holds its lease), ``error`` when it failed."""
WORKER_FAILOVER_SCOPE: Final = "worker.failover"
"""A worker found the session's worker dead and put it back; metadata ``owner`` (who found it),
``dead_owner``, ``status`` (``pending``, or ``failed`` past ``max_attempts``)."""

Outcome: TypeAlias = Literal["completed", "paused", "failed", "released", "lost"]

# How long a worker keeps trying to record an outcome while the server is away; past that its
# heartbeat is stale anyway and another worker recovers the session.
_RECORD_PATIENCE_TTLS = 1.0
# A session whose lease another worker still holds is handed back only after this pause, so that
# two workers do not pass it back and forth as fast as the server answers.
_LEASED_PAUSE = 1.0


@attrs.frozen
class WorkerStatistics:
    """What a worker has done since it started.

    Attributes:
        owner: The worker's name in the queue and on its leases.
        running: Sessions it is running now.
        claimed: Sessions it claimed.
        completed: Sessions it ran to completion.
        paused: Sessions that stopped on an interrupt of ``step_options``.
        failed: Runs that failed (a node failed after its retries); each counts an attempt.
        released: Sessions handed back unfinished while draining.
        lost: Sessions whose lease another worker held (they were handed back).
        resumed: Claimed sessions that resumed from a step another worker had stored (after a
            failover, a drain or a failed run).
        recovered: Sessions of dead workers this worker put back in the queue (failovers).
    """

    owner: str
    running: int
    claimed: int
    completed: int
    paused: int
    failed: int
    released: int
    lost: int
    resumed: int
    recovered: int


@attrs.define
class _Counts:
    claimed: int = 0
    completed: int = 0
    paused: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0
    resumed: int = 0
    recovered: int = 0


class Worker:
    """Runs the sessions that ``runner.enqueue`` (or ``treadle submit``) put in the PostgreSQL work
    queue, with any number of other workers on any number of machines.

    ``async with Worker(app, checkpointer=url) as worker: await worker.run_forever()``. A worker
    claims pending sessions of ``app``'s graph (highest priority, then oldest) with ``FOR UPDATE
    SKIP LOCKED``, takes each session's lease, runs it step by step on its own :class:`AppRunner`
    and records the outcome: ``completed``, ``paused`` (an interrupt of ``step_options``), or a
    failed run, which goes back to ``pending`` for another worker until it has failed
    ``max_attempts`` times (then ``failed``, with its last error). Idle, it waits on
    ``LISTEN/NOTIFY``, and looks at the queue every ``poll_interval`` seconds in case a
    notification was lost.

    Failover: a worker holds a liveness lock on its connection and renews its rows' heartbeat.
    Every worker checks, every ``min(lease_ttl / 3, 2)`` seconds, for running sessions whose
    worker's connection is gone or whose heartbeat is older than ``lease_ttl``, and puts them back
    to ``pending`` (counting an attempt); the next claimer resumes them from their last stored
    step. The session lease makes sure no step is stored by two workers.

    Args:
        app: The compiled graph; the worker claims only sessions enqueued for its definition hash.
        checkpointer: A ``postgresql://`` URL (``?schema=`` selects the schema), a
            :class:`PostgresCheckpointer`, or ``CheckpointerType.POSTGRES``.
        concurrency: Sessions run at once.
        lease_ttl: Seconds after which a worker whose heartbeat stopped is presumed dead.
        max_attempts: Failed runs (or lost workers) after which a session is ``failed``.
        poll_interval: Seconds between looks at the queue while no notification comes.
        step_options: Interrupts for every step; a session that pauses is recorded ``paused``
            (enqueue it again to continue it).
        event_bus: Where the runner's and the worker's events go.
        runner_options: Passed to the worker's :class:`AppRunner` (``lifecycle_events``,
            ``concurrency_limit``, ``durability``, ``clock``, ``max_threads``).
    """

    def __init__(
        self,
        app: App,
        *,
        checkpointer: str | Checkpointer | Any,
        concurrency: int = 8,
        lease_ttl: float = 30.0,
        max_attempts: int = 3,
        poll_interval: float = 5.0,
        step_options: StepOptions | None = None,
        event_bus: EventBus | None = None,
        **runner_options: Any,
    ) -> None:
        _check_count("concurrency", concurrency)
        _check_count("max_attempts", max_attempts)
        if not lease_ttl > 0:  # also refuses NaN
            raise ValueError(f"lease_ttl must be a positive number of seconds, not {lease_ttl!r}")
        if not poll_interval > 0:
            raise ValueError(
                f"poll_interval must be a positive number of seconds, not {poll_interval!r}"
            )
        if isinstance(checkpointer, str) and checkpointer.startswith(
            ("postgresql://", "postgres://")
        ):
            store = PostgresCheckpointer(checkpointer, lease_ttl=lease_ttl)
        else:
            store = queue.require_postgres(resolve_checkpointer(checkpointer), "a Worker")
        self.app = app
        self.concurrency = concurrency
        self.lease_ttl = float(lease_ttl)
        self.max_attempts = max_attempts
        self.poll_interval = float(poll_interval)
        self.step_options = step_options if step_options is not None else StepOptions()
        self.runner = AppRunner(
            app,
            checkpointer=store,
            event_bus=event_bus,
            idle_session_ttl=None,  # the worker retires each session itself, once recorded
            max_idle_sessions=None,
            **runner_options,
        )
        self.owner = self.runner.owner
        # Operators see which worker a connection is (pg_stat_activity); tests audit writers by it.
        store.application_name = f"treadle worker {self.owner}"[:63]
        self._store = store
        self._app_hash = app.graph_metadata().graph_hash
        self._counts = _Counts()
        self._active: set[str] = set()
        # The claimed sessions whose outcome is not recorded yet: the heartbeat renews (and takes
        # back) only these, so that it never reclaims a row this worker has just given up.
        self._held: set[str] = set()
        self._wake = trio.Event()
        self._draining = False
        self._drained = trio.Event()
        self._stack: AsyncExitStack | None = None
        self._listener = Listener(store, queue.channel(store.schema), self._notified)

    def __repr__(self) -> str:
        return f"<Worker {self.owner} on {self._store.masked_url}>"

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        if self._stack is not None:
            raise RuntimeError("a Worker can be entered only once")
        stack = self._stack = AsyncExitStack()
        try:
            await stack.enter_async_context(self.runner)
            background = await stack.enter_async_context(trio.open_nursery())
            stack.callback(background.cancel_scope.cancel, "the worker closed")
            await self._store.run_sync(lambda conn: queue.take_liveness(conn, self.owner))
            await background.start(self._listener.run)
            background.start_soon(self._maintain, name=f"{self!r} heartbeat")
        except BaseException:
            await stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None
        return await self._stack.__aexit__(exc_type, exc, tb)

    def drain(self) -> None:
        """Stop claiming; each running session finishes its current step (stored), is handed back
        to the queue as ``pending`` with its lease released, and ``run_forever`` /
        ``run_until_idle`` return."""
        self._draining = True
        self._drained.set()
        self._wake.set()

    @property
    def draining(self) -> bool:
        return self._draining

    def _is_draining(self) -> bool:
        return self._draining

    def statistics(self) -> WorkerStatistics:
        """Counts of what this worker did (see :class:`WorkerStatistics`)."""
        return WorkerStatistics(
            owner=self.owner, running=len(self._active), **attrs.asdict(self._counts)
        )

    # -- the claim loop ----------------------------------------------------------------------------

    async def run_forever(self) -> None:
        """Claim and run sessions until :meth:`drain` is called (then return once drained)."""
        await self._serve(until_idle=False)

    async def run_until_idle(self) -> None:
        """Claim and run sessions until nothing of this graph is pending or running in the queue
        (on any worker), or until :meth:`drain`."""
        await self._serve(until_idle=True)

    async def _serve(self, *, until_idle: bool) -> None:
        if self._stack is None:
            raise RuntimeError("use the Worker as `async with Worker(...) as worker:` first")
        delay = 0.1
        async with trio.open_nursery() as sessions:
            while not self._draining:
                self._wake = trio.Event()
                free = self.concurrency - len(self._active)
                if free > 0:
                    try:
                        claims = await self._claim(free)
                    except CheckpointBackendError as exc:
                        _log.warning("%r cannot claim sessions: %s", self, exc)
                        with trio.move_on_after(delay):
                            await self._wake.wait()
                        delay = min(delay * 2, 5.0)
                        continue
                    delay = 0.1
                    for claim in claims:
                        self._take(claim)
                        sessions.start_soon(self._run_session, claim, name=claim.session_id)
                    if claims:
                        continue
                if until_idle and not self._active:
                    try:
                        if await self._db(lambda conn: queue.unfinished(conn, self._app_hash)) == 0:
                            return
                    except CheckpointBackendError as exc:
                        _log.warning("%r cannot read the queue: %s", self, exc)
                with trio.move_on_after(self.poll_interval):
                    await self._wake.wait()

    async def _claim(self, limit: int) -> list[queue.Claim]:
        return await self._db(lambda conn: queue.claim(conn, self._app_hash, self.owner, limit))

    def _notified(self) -> None:
        if len(self._active) < self.concurrency:
            self._wake.set()

    async def _db(self, fn: Callable[[queue.Conn], T]) -> T:
        return await self._store.run_sync(fn)

    # -- one session -------------------------------------------------------------------------------

    async def _run_session(self, claim: queue.Claim | None) -> None:
        # One slot of ``concurrency``: a session, then the next one claimed with its outcome.
        while claim is not None:
            claim = await self._run_one(claim)

    async def _run_one(self, claim: queue.Claim) -> queue.Claim | None:
        """Run a claimed session and record its outcome; the session claimed in the same round
        trip for this slot, if any."""
        sid = claim.session_id
        recorded = False
        claims: list[queue.Claim] = []
        try:
            await self._event(sid, WORKER_CLAIMED_SCOPE, "claimed", attempts=claim.attempts)
            outcome, error = await self._drive(claim)
            try:
                await self.runner.close_session(sid)  # stored, and its lease released
            except Exception as exc:
                _log.warning("%r could not close session %r: %s", self, sid, exc)
            self._held.discard(sid)
            status, claims = await self._record(sid, outcome, error)
            recorded = True
            for taken in claims:
                self._take(taken)
            metadata: dict[str, Any] = {"outcome": status}
            if error is not None:
                metadata["error"] = error
            await self._event(sid, WORKER_RELEASED_SCOPE, f"released ({status})", **metadata)
        except BaseException:
            # Cancelled (a hard stop): hand the sessions back at once if the server answers,
            # rather than leave them to be found dead (which would count an attempt).
            unrecorded = [c.session_id for c in claims] + ([] if recorded else [sid])
            for back in unrecorded:
                self._held.discard(back)
                self._active.discard(back)
            with trio.move_on_after(2.0, shield=True):
                for back in unrecorded:
                    try:
                        await self._db(self._release_op(back))
                    except CheckpointBackendError:
                        pass
            raise
        finally:
            self._held.discard(sid)
            self._active.discard(sid)
            if not claims:
                self._wake.set()
        return claims[0] if claims else None

    def _take(self, claim: queue.Claim) -> None:
        self._active.add(claim.session_id)
        self._held.add(claim.session_id)
        self._counts.claimed += 1

    async def _drive(self, claim: queue.Claim) -> tuple[Outcome, str | None]:
        """Run the claimed session until it completes, pauses, fails, is lost, or the worker
        drains; a lost connection is retried (the checkpointer reconnects with backoff)."""
        sid = claim.session_id
        runner = self.runner
        delay = 0.1
        first = True
        while True:
            try:
                init = await runner.create_session(sid, claim.state)
                if first and isinstance(init, Resumed):
                    self._counts.resumed += 1
                first = False
                # Step by step, in one request: a drain stops it between two steps.
                result = await runner.run_steps(sid, self.step_options, stop=self._is_draining)
                if isinstance(result, Paused):
                    return "paused", None
                if result is not None and result.report.completed:
                    return "completed", None  # and its event stream has ended
                return "released", None
            except SessionLeased as exc:
                return "lost", str(exc)
            except CheckpointBackendError as exc:
                if self._draining:
                    return "released", None
                _log.warning("%r: session %r: %s; retrying in %.1f s", self, sid, exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as exc:
                return "failed", describe_error(exc)

    def _release_op(self, sid: str) -> Callable[[queue.Conn], object]:
        schema, owner = self._store.schema, self.owner
        return lambda conn: queue.release(conn, schema, sid, owner)

    def _outcome_op(
        self, sid: str, outcome: Outcome, error: str | None
    ) -> Callable[[queue.Conn], object]:
        """The queue update that records ``outcome`` (only if this worker still owns the row)."""
        schema, owner = self._store.schema, self.owner
        if outcome == "failed":
            assert error is not None
            return lambda conn: queue.fail(conn, schema, sid, owner, error, self.max_attempts)
        if outcome in ("released", "lost"):
            return self._release_op(sid)
        status: queue.QueueStatus = "completed" if outcome == "completed" else "paused"
        if self._draining:
            return lambda conn: queue.finish(conn, sid, owner, status)
        # The freed slot's next session comes with the outcome: one round trip, not two.
        app = self._app_hash
        return lambda conn: queue.finish_and_claim(conn, sid, owner, status, app, 1)[1]

    async def _record(
        self, sid: str, outcome: Outcome, error: str | None
    ) -> tuple[str, list[queue.Claim]]:
        """Record the outcome, retrying while the server is away (within a patience); the status
        the session was left in, and the sessions claimed with it."""
        if outcome == "lost":
            with trio.move_on_after(_LEASED_PAUSE):
                await self._drained.wait()
        op = self._outcome_op(sid, outcome, error)
        delay = 0.1
        result: object = None
        with trio.move_on_after(self.lease_ttl * _RECORD_PATIENCE_TTLS):
            while True:
                try:
                    result = await self._db(op)
                    break
                except CheckpointBackendError as exc:
                    _log.warning("%r cannot record session %r as %s: %s", self, sid, outcome, exc)
                    await trio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        setattr(self._counts, outcome, getattr(self._counts, outcome) + 1)
        if outcome == "failed":
            status = str(result)
        else:
            status = "pending" if outcome == "released" else outcome
        return status, result if isinstance(result, list) else []

    # -- heartbeat and failover --------------------------------------------------------------------

    async def _maintain(self) -> None:
        """Renew this worker's rows and liveness lock, and put back dead workers' sessions.

        Cancellation: ends with the worker. Errors: a failed round (the server away) is logged and
        the next one tries again.
        """
        interval = min(self.lease_ttl / 3, 2.0)
        while True:
            await trio.sleep(interval)
            try:
                await self._heartbeat(sorted(self._held))
                found = await self._db(
                    lambda conn: queue.recover(
                        conn, self._store.schema, self._app_hash, self.lease_ttl, self.max_attempts
                    )
                )
            except CheckpointBackendError as exc:
                _log.warning("%r heartbeat failed: %s", self, exc)
                continue
            for item in found:
                self._counts.recovered += 1
                await self._event(
                    item.session_id,
                    WORKER_FAILOVER_SCOPE,
                    f"worker {item.dead_owner} stopped; session is {item.status}",
                    dead_owner=item.dead_owner,
                    status=item.status,
                )

    async def _heartbeat(self, running: list[str]) -> None:
        await self._db(lambda conn: queue.heartbeat(conn, self.owner, running))

    async def _event(self, session_id: str, scope: str, message: str, **metadata: Any) -> None:
        event = DiagnosticEvent(
            scope=scope, message=message, metadata={"owner": self.owner, **metadata}
        )
        await self.runner.bus.publish(session_id, event)


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int of at least 1, not {value!r}")
