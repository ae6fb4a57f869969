"""Idle node actors of completed sessions, kept by the runner for the next session to take."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import attrs
import trio

from ...actors.mailbox import MailboxReceiver, MailboxSender, open_mailbox
from ...actors.perturb import Perturbation
from ..events.bus import EventBus
from ..graph.builder import CompiledGraph
from .clock import Clock
from .messages import Execute
from .node_actor import node_actor

# Idle actors kept per graph node; more than this (many sessions completing at once) are stopped.
MAX_IDLE_PER_NODE = 64
# Idle actors stopped at a time by stop_idle before the stopped ones get to return.
_STOP_BATCH = 100

NodeMailbox = MailboxSender[Execute | None]
"""A node actor's mailbox: ``Execute`` requests, ``None`` to stop an idle actor."""


@attrs.define(eq=False)
class NodePool:
    """Starts node actors under the runner's nursery and keeps idle ones for reuse.

    A node actor belongs to one session at a time: the session's scheduler takes it (or starts a new
    one) on the node's first execution and gives it back when the session completes, when all of its
    executions have been answered. Reuse saves a task start and a mailbox per node per session.
    """

    graph: CompiledGraph
    nursery: trio.Nursery
    bus: EventBus
    clock: Clock | None
    thread_limiter: trio.CapacityLimiter
    perturb: Perturbation | None = None
    # Node actors publish lifecycle events (AppRunner(lifecycle_events=True)).
    lifecycle: bool = False
    # One idle actor per node here, any more (sessions of the graph completing together) in
    # ``_spare``: a list per node would be one more object per parked actor for every full garbage
    # collection to visit.
    _idle: dict[str, NodeMailbox] = attrs.field(factory=dict, init=False)
    _spare: dict[str, list[NodeMailbox]] = attrs.field(factory=dict, init=False)
    _started: int = attrs.field(default=0, init=False)

    def take(self, node: str, first: Execute) -> tuple[NodeMailbox, bool]:
        """An actor of ``node`` for a session, and whether it was started with ``first`` in hand.

        An idle actor is returned as ``(mailbox, False)``: the caller sends ``first`` to it. A new one
        starts running ``first`` at once and is returned as ``(mailbox, True)``.
        """
        spare = self._spare.get(node)
        if spare:
            return spare.pop(), False
        idle = self._idle.pop(node, None)
        if idle is not None:
            return idle, False
        return self._start(node, first), True

    def give(self, node: str, mailbox: NodeMailbox) -> None:
        """Return an idle actor; it waits for the next session's first Execute."""
        if node not in self._idle:
            self._idle[node] = mailbox
            return
        spare = self._spare.setdefault(node, [])
        if len(spare) + 1 >= MAX_IDLE_PER_NODE:
            mailbox.close()  # its actor sees the end of its inbox and exits
        else:
            spare.append(mailbox)

    @property
    def started(self) -> int:
        """How many node actors this pool has started."""
        return self._started

    async def stop_idle(self) -> None:
        """Stop every idle actor, a batch at a time, each batch returning before the next wakes.

        Waking thousands at once would allocate enough to start a garbage collection over every
        parked actor's coroutines; a batch at a time, the memory of the actors that returned is
        freed as the next ones wake. Actors given back later are stopped by :meth:`close`.
        """
        batch = 0
        for mailbox in self._take_all():
            _stop(mailbox)
            batch += 1
            if batch == _STOP_BATCH:
                batch = 0
                await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Stop every idle actor at once: each returns on its next turn, which costs far less
        than cancelling thousands of waiting tasks when the runner closes."""
        for mailbox in self._take_all():
            _stop(mailbox)

    def idle(self) -> int:
        """How many idle node actors the pool holds."""
        return len(self._idle) + sum(len(v) for v in self._spare.values())

    def _take_all(self) -> Iterator[NodeMailbox]:
        idle, spare = self._idle, self._spare
        self._idle, self._spare = {}, {}
        yield from idle.values()
        for mailboxes in spare.values():
            yield from mailboxes

    def _start(self, node: str, first: Execute) -> NodeMailbox:
        # Not open_mailbox[...](...): calling a subscripted class costs time on every node spawn.
        mailbox: NodeMailbox
        inbox: MailboxReceiver[Execute | None]
        mailbox, inbox = open_mailbox(1, name=f"node {node}", perturb=self.perturb)
        actor = functools.partial(
            node_actor,
            self.graph.nodes[node],
            inbox,
            bus=self.bus,
            clock=self.clock,
            thread_limiter=self.thread_limiter,
            first=first,
            lifecycle=self.lifecycle,
        )
        self.nursery.start_soon(actor, name=f"treadle node {node!r}")
        self._started += 1
        return mailbox


def _stop(mailbox: NodeMailbox) -> None:
    """Tell an idle actor to return: ``None`` wakes it with a value, where the end of its inbox
    would raise through every frame of its wait."""
    with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        mailbox.send_nowait(None)
    mailbox.close()
