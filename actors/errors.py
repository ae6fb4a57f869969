"""Errors of the actor kernel; the base class of every treadle error lives here, the lowest layer."""

from __future__ import annotations


class TreadleError(Exception):
    """Base class of every error treadle raises on purpose."""


class ActorGone(TreadleError):
    """An actor this call depended on stopped before answering (it crashed or was cancelled)."""

    def __init__(self, actor: str) -> None:
        self.actor = actor
        super().__init__(f"actor {actor!r} stopped before it answered")
