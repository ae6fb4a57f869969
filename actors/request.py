"""Request/reply between actors that cannot hang: a one-shot reply slot carrying an outcome."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, Self, TypeVar, TypeVarTuple

import outcome
import trio

from .errors import ActorGone, RequestDropped
from .mailbox import MailboxSender, UndeliveredReason

T = TypeVar("T")
M = TypeVar("M")
Ts = TypeVarTuple("Ts")


class ReplyTo(Generic[T]):
    """The one-shot reply end a request carries; answer it with :func:`reply`.

    It holds one answer (an ``outcome.Outcome``) and never blocks: ``send_nowait`` stores the answer
    and wakes the asker. It is a slot, not a channel, because every request is answered once: a
    request costs no channel pair and its answer no extra trip through a buffer.

    ``close()`` (or leaving ``with reply_to:``) without answering tells the asker that the actor is
    gone. Once the asker has stopped waiting (it was cancelled), ``send_nowait`` raises
    ``trio.BrokenResourceError``; after an answer, a ``close()`` or the mailbox reporting the
    request undeliverable, ``trio.ClosedResourceError``. :func:`reply` swallows both.
    """

    __slots__ = ("_answer", "_asker_gone", "_closed", "_waiter")

    def __init__(self) -> None:
        self._answer: outcome.Outcome[T] | None = None
        self._closed = False
        self._asker_gone = False
        self._waiter: trio.lowlevel.Task | None = None

    def __repr__(self) -> str:
        state = (
            "answered"
            if self._answer is not None
            else "asker gone"
            if self._asker_gone
            else "closed"
            if self._closed
            else "open"
        )
        return f"<ReplyTo {state}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send_nowait(self, answer: outcome.Outcome[T]) -> None:
        """Store the answer and wake the asker.

        Raises:
            trio.ClosedResourceError: Already answered or closed.
            trio.BrokenResourceError: The asker has stopped waiting.
        """
        if self._closed:
            raise trio.ClosedResourceError("this request was already answered or closed")
        if self._asker_gone:
            raise trio.BrokenResourceError("the asker has stopped waiting")
        self._answer = answer
        self._closed = True
        self._wake()

    def close(self) -> None:
        """End the request; without an answer the asker learns that the actor is gone."""
        if not self._closed:
            self._closed = True
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)

    def _give_up(self) -> None:
        # The asker stops waiting: a later answer is refused (and so discarded by reply()).
        self._asker_gone = True
        self._waiter = None

    async def _wait(self) -> outcome.Outcome[T] | None:
        """The answer, or ``None`` if the request was closed without one (the asker's side)."""
        if not self._closed:
            self._waiter = trio.lowlevel.current_task()

            def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
                self._give_up()
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        else:
            await trio.lowlevel.checkpoint()
        return self._answer


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
        Cancelling the asker closes the reply end; the actor's later reply is discarded.
    """
    reply_to: ReplyTo[T] = ReplyTo()  # not ReplyTo[T](): subscripting costs at run time
    request = make_request(reply_to)
    dropped = False

    def on_undelivered(reason: UndeliveredReason) -> None:
        # The request can never be read: wake the wait below with no answer.
        nonlocal dropped
        dropped = reason == "dropped"
        reply_to.close()

    mailbox._watch(request, on_undelivered)
    try:
        try:
            await mailbox.post(request)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ActorGone(actor) from exc
        result = await reply_to._wait()
        if result is None:
            if dropped:
                raise RequestDropped(actor, mailbox.name) from None
            raise ActorGone(actor) from None
    finally:
        mailbox._unwatch(request)
        if not reply_to._closed:
            reply_to._give_up()  # cancelled before waiting, or a perturbation raised in post()
    return result.unwrap()


def reply(reply_to: ReplyTo[T], result: outcome.Outcome[T]) -> None:
    """Answer a request and close its reply end; never blocks, never fails.

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
    the reply end is closed, so the asker gets :class:`ActorGone`, and the exception propagates.
    """
    with reply_to:
        result: outcome.Outcome[T] = await outcome.acapture(fn, *args)
        if isinstance(result, outcome.Error) and not isinstance(result.error, Exception):
            result.unwrap()
        reply(reply_to, result)
