"""Request/reply between actors that cannot hang: a one-shot reply channel carrying an outcome."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar, TypeVarTuple

import outcome
import trio

from .errors import ActorGone, RequestDropped
from .mailbox import MailboxSender, UndeliveredReason

T = TypeVar("T")
M = TypeVar("M")
Ts = TypeVarTuple("Ts")

ReplyTo: TypeAlias = trio.MemorySendChannel[outcome.Outcome[T]]
"""The one-shot reply end a request carries (buffer 1); answer it with :func:`reply`."""


async def ask(
    mailbox: MailboxSender[M], make_request: Callable[[ReplyTo[T]], M], *, actor: str
) -> T:
    """Send ``make_request(reply_to)`` to an actor and wait for its answer.

    The actor must answer through :func:`reply` or :func:`serve_request`, which always close
    ``reply_to``; closing it without answering (for instance by crashing inside
    ``with request.reply_to:``) means the actor is gone. For mypy to infer the reply type, pass a
    ``def`` (or annotate the result, ``x: int = await ask(...)``); a bare lambda infers ``Never``.

    Args:
        mailbox: The actor's mailbox.
        make_request: Builds the request message around the reply end.
        actor: Names the actor in :class:`ActorGone`.

    Returns:
        The value the actor replied with.

    Raises:
        ActorGone: The actor's mailbox has no receivers (or this sender is closed), the actor closed
            the reply without answering, or the request was still buffered when the last receiver
            of the mailbox closed.
        RequestDropped: A drop-oldest mailbox evicted the request before the actor read it.
        Exception: Whatever the actor replied with as an ``outcome.Error`` is re-raised here.

    Cancellation:
        Cancelling the asker closes the reply channel; the actor's later reply is discarded.
    """
    reply_to, replies = trio.open_memory_channel[outcome.Outcome[T]](1)
    request = make_request(reply_to)
    dropped = False

    def on_undelivered(reason: UndeliveredReason) -> None:
        # The request can never be read: wake the wait below with EndOfChannel.
        nonlocal dropped
        dropped = reason == "dropped"
        reply_to.close()

    with replies:
        mailbox._watch(request, on_undelivered)
        try:
            try:
                await mailbox.post(request)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ActorGone(actor) from exc
            try:
                result = await replies.receive()
            except trio.EndOfChannel:
                if dropped:
                    raise RequestDropped(actor, mailbox.name) from None
                raise ActorGone(actor) from None
        finally:
            mailbox._unwatch(request)
    return result.unwrap()


def reply(reply_to: ReplyTo[T], result: outcome.Outcome[T]) -> None:
    """Answer a request and close its reply channel; never blocks, never fails.

    An asker that has gone (cancelled, or told that the request was undeliverable) is ignored.
    """
    with reply_to:
        try:
            reply_to.send_nowait(result)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def serve_request(
    reply_to: ReplyTo[T], fn: Callable[[*Ts], Awaitable[T]], *args: *Ts
) -> None:
    """Await ``fn(*args)`` and reply with its value or its exception.

    Cancellation and other ``BaseException``s are not sent to the asker (they belong to this task):
    the reply channel is closed, so the asker gets :class:`ActorGone`, and the exception propagates.
    """
    with reply_to:
        result: outcome.Outcome[T] = await outcome.acapture(fn, *args)
        if isinstance(result, outcome.Error) and not isinstance(result.error, Exception):
            result.unwrap()
        reply(reply_to, result)
