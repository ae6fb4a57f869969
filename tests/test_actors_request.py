"""Request/reply: ask() returns the answer, re-raises the actor's error, and never hangs."""

from __future__ import annotations

import functools
from collections.abc import Callable

import attrs
import hypothesis.strategies as st
import outcome
import pytest
import trio
import trio.testing
from hypothesis import given, settings

from treadle.actors import (
    ActorGone,
    MailboxReceiver,
    MailboxSender,
    Overflow,
    ReplyTo,
    RequestDropped,
    ask,
    open_mailbox,
    reply,
    serve_request,
)


@attrs.frozen
class Double:
    value: int
    reply_to: ReplyTo[int]


async def doubler(inbox: MailboxReceiver[Double], *, crash_on: int | None = None) -> None:
    """A well-behaved actor: answers every request; raising inside ``with reply_to`` closes it."""
    with inbox:
        async for req in inbox:
            with req.reply_to:
                if req.value == crash_on:
                    raise RuntimeError("actor crashed")
                reply(req.reply_to, outcome.Value(req.value * 2))


def double(value: int) -> Callable[[ReplyTo[int]], Double]:
    """The request builder to pass to ask(); a def (not a lambda) lets mypy infer the reply type."""
    return lambda reply_to: Double(value, reply_to)


def watched(tx: MailboxSender[Double]) -> int:
    return len(tx._core.watched)


async def test_ask_returns_the_reply() -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[Double](0, name="doubler")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(doubler, rx)
            with tx:
                assert await ask(tx, double(21), actor="doubler") == 42
                assert await ask(tx, double(5), actor="doubler") == 10
                assert watched(tx) == 0


async def test_ask_reraises_the_actors_exception() -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[Double](1, name="m")

        async def failing_actor() -> None:
            with rx:
                req = await rx.receive()
                reply(req.reply_to, outcome.Error(KeyError("no such thing")))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(failing_actor)
            with pytest.raises(KeyError, match="no such thing"):
                await ask(tx, double(1), actor="m")


async def test_actor_dying_while_handling_the_request_is_actor_gone() -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[Double](1, name="m")
        async with trio.open_nursery() as nursery:

            async def actor() -> None:
                with pytest.raises(RuntimeError, match="actor crashed"):
                    await doubler(rx, crash_on=7)

            nursery.start_soon(actor)
            with pytest.raises(ActorGone, match="actor 'worker' stopped before it answered") as err:
                await ask(tx, double(7), actor="worker")
            assert err.value.actor == "worker"


@pytest.mark.parametrize("overflow", [Overflow.BLOCK, Overflow.DROP_OLDEST])
async def test_actor_dying_before_reading_the_request_is_actor_gone(overflow: Overflow) -> None:
    # The request sits in the buffer when the actor's inbox closes: nobody will ever read it.
    with trio.fail_after(1):
        tx, rx = open_mailbox[Double](4, name="m", overflow=overflow)
        async with trio.open_nursery() as nursery:

            async def actor_that_dies() -> None:
                with rx:
                    await trio.testing.wait_all_tasks_blocked()

            nursery.start_soon(actor_that_dies)
            with pytest.raises(ActorGone) as err:
                await ask(tx, double(1), actor="m")
            assert type(err.value) is ActorGone
            assert watched(tx) == 0


async def test_other_buffered_requests_are_stranded_too() -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[Double](4, name="m")
        outcomes: list[object] = []

        async def asker(value: int) -> None:
            try:
                outcomes.append(await ask(tx, double(value), actor="m"))
            except ActorGone as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as nursery:
            for value in range(3):
                nursery.start_soon(asker, value)
            await trio.testing.wait_all_tasks_blocked()
            # The actor answers the first request, then stops with two still buffered.
            with rx:
                req = rx.receive_nowait()
                reply(req.reply_to, outcome.Value(-1))
        assert sorted(type(o).__name__ for o in outcomes) == ["ActorGone", "ActorGone", "int"]


async def test_receiver_closing_after_reading_does_not_orphan_the_reply() -> None:
    # A request already read is the actor's to answer, even if its inbox closes meanwhile.
    with trio.fail_after(1):
        tx, rx = open_mailbox[Double](1, name="m")
        async with trio.open_nursery() as nursery:

            async def actor() -> None:
                with rx:
                    req = await rx.receive()
                with req.reply_to:
                    await trio.lowlevel.checkpoint()
                    reply(req.reply_to, outcome.Value(req.value))

            nursery.start_soon(actor)
            assert await ask(tx, double(3), actor="m") == 3


async def test_ask_to_a_gone_actor_is_actor_gone() -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[Double](1, name="m")
        rx.close()
        with pytest.raises(ActorGone) as err:
            await ask(tx, double(1), actor="m")
        assert isinstance(err.value.__cause__, trio.BrokenResourceError)
        tx.close()
        with pytest.raises(ActorGone) as err:
            await ask(tx, double(1), actor="m")
        assert isinstance(err.value.__cause__, trio.ClosedResourceError)


async def test_actor_dying_while_the_asker_is_blocked_sending() -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[Double](0, name="m")
        async with trio.open_nursery() as nursery:

            async def actor_that_dies() -> None:
                with rx:
                    await trio.testing.wait_all_tasks_blocked()
                    assert rx.statistics().waiting_senders == 1

            nursery.start_soon(actor_that_dies)
            with pytest.raises(ActorGone):
                await ask(tx, double(1), actor="m")


async def test_request_evicted_from_a_drop_oldest_mailbox_is_request_dropped() -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[Double](1, name="inbox", overflow=Overflow.DROP_OLDEST)
        async with trio.open_nursery() as nursery:

            async def first_asker() -> None:
                with pytest.raises(RequestDropped, match="dropped from its full mailbox 'inbox'"):
                    await ask(tx, double(1), actor="slow")

            nursery.start_soon(first_asker)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(functools.partial(ask, tx, double(2), actor="slow"))
            await trio.testing.wait_all_tasks_blocked()
            req = rx.receive_nowait()
            assert req.value == 2
            reply(req.reply_to, outcome.Value(4))
        assert issubclass(RequestDropped, ActorGone)


async def test_cancelled_asker_leaves_the_actor_unharmed() -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[Double](1, name="m")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(ask, tx, double(1), actor="m"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        req = rx.receive_nowait()
        with pytest.raises(trio.BrokenResourceError):
            req.reply_to.send_nowait(outcome.Value(2))
        reply(req.reply_to, outcome.Value(2))  # the asker is gone: silently discarded
        assert watched(tx) == 0


async def test_a_reply_end_takes_one_answer_and_refuses_the_rest() -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[Double](1, name="m")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(doubler, rx)
            with tx:
                answered: list[ReplyTo[int]] = []

                def keep(reply_to: ReplyTo[int]) -> Double:
                    answered.append(reply_to)
                    return Double(3, reply_to)

                assert await ask(tx, keep, actor="m") == 6
        with pytest.raises(trio.ClosedResourceError):
            answered[0].send_nowait(outcome.Value(0))
        answered[0].close()  # closing again is harmless


async def test_serve_request_replies_with_value_or_exception() -> None:
    async def work(x: int) -> int:
        await trio.lowlevel.checkpoint()
        if x < 0:
            raise ValueError("negative")
        return x + 1

    with trio.fail_after(1):
        tx, rx = open_mailbox[Double](0, name="m")

        async def actor() -> None:
            with rx:
                async for req in rx:
                    await serve_request(req.reply_to, work, req.value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor)
            with tx:
                assert await ask(tx, double(1), actor="m") == 2
                with pytest.raises(ValueError, match="negative"):
                    await ask(tx, double(-1), actor="m")


async def test_serve_request_keeps_cancellation_to_itself() -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[Double](1, name="m")
        async with trio.open_nursery() as nursery:

            async def actor() -> None:
                req = await rx.receive()
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await serve_request(req.reply_to, trio.sleep_forever)
                assert scope.cancelled_caught

            nursery.start_soon(actor)
            with pytest.raises(ActorGone):
                await ask(tx, double(1), actor="m")


@given(
    crash_on=st.one_of(st.none(), st.integers(0, 9)),
    buffer=st.integers(0, 3),
    askers=st.integers(1, 6),
    random_state=st.random_module(),
)
@settings(deadline=None, max_examples=80)
def test_ask_never_hangs_on_any_schedule(
    crash_on: int | None, buffer: int, askers: int, random_state: object
) -> None:
    # Several askers race an actor that may crash at any request: every ask ends, with the right
    # answer or ActorGone, and nothing stays watched.
    async def main() -> list[tuple[int, int | str]]:
        tx, rx = open_mailbox[Double](buffer, name="m")
        results: list[tuple[int, int | str]] = []

        async def asker(value: int, mine: MailboxSender[Double]) -> None:
            with mine:
                try:
                    results.append((value, await ask(mine, double(value), actor="m")))
                except ActorGone:
                    results.append((value, "gone"))

        async def actor() -> None:
            try:
                await doubler(rx, crash_on=crash_on)
            except RuntimeError:
                pass

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(actor)
                for i in range(askers):
                    nursery.start_soon(asker, i, tx.clone())
                tx.close()
        assert watched(tx) == 0
        return results

    results = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(results) == askers
    for value, answer in results:
        assert answer in (value * 2, "gone")
        if answer == "gone":
            assert crash_on is not None
