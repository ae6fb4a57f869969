"""The checkpointer actor: opens before it reports started, serialises every request in arrival
order, pipelines ``async`` writes with deferred errors, renews leases, and closes its backend on the
way out. In-memory fakes only, on the autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from treadle.actors.errors import ActorGone
from treadle.runtime.checkpointers.actor import CheckpointerActor
from treadle.runtime.checkpointers.checkpoint import Checkpoint, InMemoryCheckpointer
from treadle.runtime.errors import CheckpointBackendError, CheckpointNotFound
from treadle.runtime.graph.state import VersionedState


@asynccontextmanager
async def running(actor: CheckpointerActor) -> AsyncIterator[trio.Nursery]:
    """The actor started, under a 60 s watchdog, in a nursery cancelled when the block ends."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            yield nursery
            nursery.cancel_scope.cancel()


def checkpoint(step: int, session: str = "s") -> Checkpoint:
    return Checkpoint(
        session_id=session,
        step=step,
        state=VersionedState(extra={"step": step}),
        frontier=("a",),
        versions_seen={},
        join_state={},
        concurrency_limit=1,
        created_at=step,
    )


class SlowStore(InMemoryCheckpointer):
    """Each save takes one virtual second; records what happened and when."""

    def __init__(self, *, fail_steps: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.fail_steps = fail_steps
        self.events: list[tuple[str, object, float]] = []
        self.active = 0
        self.max_active = 0
        self.closed = False

    async def open(self, nursery: trio.Nursery) -> None:
        await trio.sleep(5)
        self.events.append(("open", None, trio.current_time()))

    async def aclose(self) -> None:
        self.closed = True
        self.events.append(("close", None, trio.current_time()))

    async def save(self, cp: Checkpoint) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await trio.sleep(1)
            if cp.step in self.fail_steps:
                raise CheckpointBackendError("fake", f"disk full at step {cp.step}")
            await super().save(cp)
            self.events.append(("save", cp.step, trio.current_time()))
        finally:
            self.active -= 1


async def test_start_returns_once_the_backend_is_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SlowStore()
    actor = CheckpointerActor(store)
    async with running(actor):
        assert trio.current_time() == 5
        assert store.events == [("open", None, 5)]
        assert actor.backend == "memory"
    assert store.closed


async def test_a_backend_that_cannot_open_fails_the_start() -> None:
    class Broken(InMemoryCheckpointer):
        async def open(self, nursery: trio.Nursery) -> None:
            raise CheckpointBackendError("postgres", "cannot connect to postgresql://u:***@db/x")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            with pytest.raises(CheckpointBackendError, match=r"u:\*\*\*@db"):
                await nursery.start(CheckpointerActor(Broken()).run)


async def test_requests_are_served_one_at_a_time_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SlowStore()
    actor = CheckpointerActor(store)
    async with running(actor) as nursery:
        done: list[int] = []

        async def save(step: int) -> None:
            await actor.save(checkpoint(step))
            done.append(step)

        for step in range(1, 5):
            nursery.start_soon(save, step)
            await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(10)
        assert done == [1, 2, 3, 4]
        assert store.max_active == 1
        assert [(e[1], e[2]) for e in store.events if e[0] == "save"] == [
            (1, 6),
            (2, 7),
            (3, 8),
            (4, 9),
        ]


async def test_pipelined_saves_overlap_one_write_per_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SlowStore()
    actor = CheckpointerActor(store)
    async with running(actor):
        await actor.save_pipelined(checkpoint(1))
        assert trio.current_time() == 5  # queued, not awaited
        await actor.save_pipelined(checkpoint(1, session="other"))
        assert trio.current_time() == 5  # another session does not wait either
        # The next write of a session waits for its previous one: a crash loses one step.
        await actor.save_pipelined(checkpoint(2))
        assert trio.current_time() == 6
        await actor.save_pipelined(checkpoint(3))
        assert trio.current_time() == 8
        await actor.flush()
        assert trio.current_time() == 9
        saved = [(e[1], e[2]) for e in store.events if e[0] == "save"]
        assert saved == [(1, 6), (1, 7), (2, 8), (3, 9)]
        latest = await actor.load_latest("s")
        assert latest is not None
        assert latest.step == 3


async def test_a_failed_pipelined_write_is_raised_once_and_nothing_after_it_lands(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SlowStore(fail_steps=(2,))
    actor = CheckpointerActor(store)
    async with running(actor):
        await actor.save_pipelined(checkpoint(1))
        await actor.save_pipelined(checkpoint(2))
        with pytest.raises(CheckpointBackendError, match="disk full at step 2"):
            await actor.save_pipelined(checkpoint(3))
        await actor.flush()  # reported once
        # Step 3 never reached the store: no gap after the failed step 2.
        assert [e[1] for e in store.events if e[0] == "save"] == [1]
        await actor.save(checkpoint(4))
        assert [e[1] for e in store.events if e[0] == "save"] == [1, 4]


async def test_a_pending_failure_is_raised_by_the_next_save(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SlowStore(fail_steps=(1,))
    actor = CheckpointerActor(store)
    async with running(actor):
        await actor.save_pipelined(checkpoint(1))
        # The sync save is queued behind the failing one and reports it instead of writing.
        with pytest.raises(CheckpointBackendError, match="step 1"):
            await actor.save(checkpoint(2))
        assert [e[1] for e in store.events if e[0] == "save"] == []
        await actor.save_pipelined(checkpoint(3))
        await actor.flush()
        assert [e[1] for e in store.events if e[0] == "save"] == [3]


async def test_errors_are_answered_and_the_actor_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = CheckpointerActor(InMemoryCheckpointer())
    async with running(actor):
        with pytest.raises(CheckpointNotFound):
            await actor.load("s", 3)
        await actor.save(checkpoint(3))
        assert (await actor.load("s", 3)).step == 3
        assert await actor.list_sessions() == ["s"]
        assert [i.step for i in await actor.list_steps("s")] == [3]
        assert await actor.prune(keep_last=1) == 0
        await actor.acquire_lease("s", "me")
        await actor.release_lease("s", "me")
        await actor.save_with_concurrency_check(checkpoint(4), 3)
        assert await actor.delete_session("s") is True
        assert await actor.load_latest("s") is None


async def test_leases_are_renewed_on_a_heartbeat(autojump_clock: trio.testing.MockClock) -> None:
    class Leasing(InMemoryCheckpointer):
        lease_renew_interval = 10.0

        def __init__(self) -> None:
            super().__init__()
            self.renewals: list[float] = []

        async def renew_leases(self) -> None:
            self.renewals.append(trio.current_time())

    store = Leasing()
    actor = CheckpointerActor(store)
    async with running(actor):
        await trio.sleep(35)
    assert store.renewals == [10, 20, 30]


async def test_cancelling_closes_the_backend_and_askers_learn_the_actor_is_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SlowStore()
    actor = CheckpointerActor(store)
    with trio.fail_after(60):
        async with trio.open_nursery() as outer:
            actor_scope = trio.CancelScope()

            async def run_actor(task_status: trio.TaskStatus[None]) -> None:
                with actor_scope:
                    await actor.run(task_status=task_status)

            await outer.start(run_actor)
            results: list[object] = []

            async def ask() -> None:
                try:
                    await actor.save(checkpoint(1))
                except ActorGone as exc:
                    results.append(exc)

            outer.start_soon(ask)
            outer.start_soon(ask)
            await trio.sleep(0.5)  # the first save is half done; the second is queued
            actor_scope.cancel()
    assert store.closed
    assert len(results) == 2
    assert all(isinstance(r, ActorGone) for r in results)
    with pytest.raises(ActorGone):
        await actor.save_pipelined(checkpoint(2))


async def test_queued_pipelined_writes_are_committed_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Batching(SlowStore):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[list[int]] = []

        async def save_many(self, cps: Sequence[Checkpoint]) -> None:
            await trio.sleep(1)
            self.batches.append([cp.step for cp in cps])
            for cp in cps:
                await InMemoryCheckpointer.save(self, cp)

    store = Batching()
    actor = CheckpointerActor(store)
    async with running(actor):
        await actor.save_pipelined(checkpoint(1))
        await trio.testing.wait_all_tasks_blocked()  # the actor is now busy with step 1
        for session in ("b", "c", "d"):
            await actor.save_pipelined(checkpoint(2, session=session))
        await actor.flush()
        await actor.save_pipelined(checkpoint(5))
        await trio.testing.wait_all_tasks_blocked()
        await actor.save_pipelined(checkpoint(6, session="b"))
        await actor.save_pipelined(checkpoint(7, session="c"))
        await actor.save(checkpoint(8))  # a sync save ends the batch before it
        await actor.save_pipelined(checkpoint(9))
        await actor.flush()
        # A lone write goes through save(); writes queued together share one save_many().
        assert [e[1] for e in store.events if e[0] == "save"] == [1, 5, 8, 9]
        assert store.batches == [[2, 2, 2], [6, 7]]
        latest = await actor.load_latest("s")
        assert latest is not None
        assert latest.step == 9
