"""Errors of the actor kernel; the base of every treadle error lives here, in the lowest layer."""

from __future__ import annotations


class TreadleError(Exception):
    """Base class of every error treadle raises on purpose."""


class ActorGone(TreadleError):
    """An actor this call depended on stopped before answering (it crashed or was cancelled)."""

    def __init__(self, actor: str) -> None:
        self.actor = actor
        super().__init__(f"actor {actor!r} stopped before it answered")


class RequestDropped(ActorGone):
    """A request was evicted from the actor's full drop-oldest mailbox before the actor read it.

    A subclass of :class:`ActorGone` because for the asker the effect is the same: no answer will
    come. Ask through ``BLOCK`` mailboxes to get backpressure instead.
    """

    def __init__(self, actor: str, mailbox: str) -> None:
        self.mailbox = mailbox
        super().__init__(actor)
        self.args = (
            f"request to actor {actor!r} was dropped from its full mailbox {mailbox!r}: give the "
            "mailbox more capacity or use Overflow.BLOCK",
        )
