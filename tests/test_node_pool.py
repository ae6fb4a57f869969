"""Idle node actors kept by the runner's pool, and how closing the runner stops them."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import trio

from treadle import END, START, AppRunner, GraphBuilder, VersionedState
from treadle.actors.mailbox import open_mailbox
from treadle.runtime.execution.messages import Execute
from treadle.runtime.execution.node_actor import node_actor
from treadle.runtime.execution.pool import _STOP_BATCH


async def noop(snapshot: object, ctx: object) -> None:
    return None


async def test_an_idle_node_actor_returns_when_handed_none() -> None:
    spec = GraphBuilder().add_node("n", noop).add_edge(START, "n").add_edge("n", END)
    graph = spec.compile().graph
    mailbox, inbox = open_mailbox[Execute | None](1, name="node n")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: node_actor(
                    graph.nodes["n"],
                    inbox,
                    bus=None,  # type: ignore[arg-type]  # never reached: no Execute arrives
                    clock=None,
                    thread_limiter=trio.CapacityLimiter(1),
                )
            )
            await mailbox.send(None)
        # The actor returned on its own: the nursery closed without cancelling it.
        assert not nursery.cancel_scope.cancel_called


class WokenActors(trio.abc.Instrument):
    """Counts node actors scheduled to run and not yet returned, and the most at once."""

    def __init__(self) -> None:
        self.woken: set[trio.lowlevel.Task] = set()
        self.most = 0
        self.counting = False

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if self.counting and task.name.startswith("treadle node "):
            self.woken.add(task)
            self.most = max(self.most, len(self.woken))

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.woken.discard(task)


def wide_app(width: int) -> Any:
    builder = GraphBuilder().add_node("dispatch", noop).add_node("join", noop)
    names = [f"w{i}" for i in range(width)]
    for name in names:
        builder.add_node(name, noop).add_edge("dispatch", name)
    builder.add_edge(START, "dispatch").add_edge(names, "join").add_edge("join", END)
    return builder.compile()


async def test_closing_a_runner_stops_idle_actors_a_batch_at_a_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Thousands of idle actors are woken a batch at a time, each batch returning before many
    more wake, so their memory is freed as the close goes (waking all at once allocates enough to
    start a garbage collection over every parked actor)."""
    width = 10 * _STOP_BATCH
    app = wide_app(width)
    instrument = WokenActors()
    trio.lowlevel.add_instrument(instrument)
    try:
        with trio.fail_after(60):
            async with AppRunner(app, concurrency_limit=width, autosave=False) as runner:
                await runner.create_session("s", VersionedState())
                await runner.run_until_complete("s")
                assert runner.statistics().idle_node_actors == width + 2
                instrument.counting = True
    finally:
        trio.lowlevel.remove_instrument(instrument)
    assert not instrument.woken  # every one of them returned
    assert _STOP_BATCH <= instrument.most <= 2 * _STOP_BATCH + 2


async def test_a_parked_node_actor_keeps_nothing_of_its_last_execution() -> None:
    # An idle actor waits in the pool for another session, maybe for long: the message it last
    # ran (and the snapshot, reply mailbox and cancel handle it carries) must not stay alive
    # with it, and every object it keeps is one more for each garbage collection to visit.
    seen: list[weakref.ref[Any]] = []

    async def watched(snapshot: Any, ctx: object) -> None:
        seen.append(weakref.ref(snapshot))

    builder = GraphBuilder().add_node("n", watched).add_edge(START, "n").add_edge("n", "m")
    app = builder.add_node("m", watched).add_edge("m", END).compile()
    with trio.fail_after(10):
        async with AppRunner(app, autosave=False) as runner:
            for session in ("a", "b"):  # "b" reuses the actors "a" gave back: not first-run only
                await runner.create_session(session, VersionedState())
                await runner.run_until_complete(session)
                await runner.close_session(session)
                gc.collect()
                assert [ref() for ref in seen] == [None] * len(seen)
                assert len(seen) == (2 if session == "a" else 4)


# What a parked node actor keeps alive, each object visited by every full garbage collection (a
# wide graph parks thousands, and a first run that starts them sets off collections in proportion):
# its trio task with the task's context and child-nursery list (3), its coroutine (1), its wait in
# the mailbox (the receive's frame and trio's trap as one generator: 2, see actors.trap), and the
# mailbox (core and two ends: 3; its buffer is made when a message first has to wait in it, and
# its queues of waiters are empty dicts, which the collector does not track). It was 14 while the receive waited
# through trio.lowlevel.wait_task_rescheduled with a waiter in a queue, 25 while a BLOCK mailbox
# wrapped a trio memory channel pair (8 objects, and 9 for a receive parked in it), 30 before
# that, when the mailbox kept its perturbation records, the actor waited through ``async for``
# inside ``with inbox:`` and the pool kept a list per node.
TRACKED_PER_PARKED_ACTOR = 9


async def test_a_parked_node_actor_keeps_few_objects_for_the_garbage_collector() -> None:
    async def kept(width: int) -> tuple[int, int]:
        """Objects left alive by a first session of ``wide_app(width)``, then by a second."""
        grown = []
        with trio.fail_after(30):
            async with AppRunner(
                wide_app(width), concurrency_limit=width, autosave=False
            ) as runner:
                for session in ("first", "second"):
                    gc.collect()
                    before = len(gc.get_objects())
                    await runner.create_session(session, VersionedState())
                    await runner.run_until_complete(session)
                    await runner.close_session(session)
                    gc.collect()
                    grown.append(len(gc.get_objects()) - before)
                assert runner.statistics().idle_node_actors == width + 2
        return grown[0], grown[1]

    narrow, wide = await kept(100), await kept(300)
    # The difference leaves out what a runner and a session keep whatever their width (give or
    # take a few objects, hence the half: one more object per actor fails the test).
    per_actor = (wide[0] - narrow[0]) / 200
    assert per_actor < TRACKED_PER_PARKED_ACTOR + 0.5
    # A session that reuses parked actors adds nothing per actor.
    assert max(narrow[1], wide[1]) < 50
