"""Mailboxes: trio channel semantics, overflow policies, statistics and the perturbation hook."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import given, settings

from treadle.actors import (
    MailboxOp,
    MailboxReceiver,
    MailboxSender,
    MailboxStatistics,
    Overflow,
    open_mailbox,
    perturbation_from_plan,
)

BOTH = pytest.mark.parametrize("overflow", [Overflow.BLOCK, Overflow.DROP_OLDEST])


def test_open_mailbox_returns_typed_channel_ends() -> None:
    tx, rx = open_mailbox[int](4, name="m")
    assert isinstance(tx, MailboxSender)
    assert isinstance(tx, trio.abc.SendChannel)
    assert isinstance(rx, MailboxReceiver)
    assert isinstance(rx, trio.abc.ReceiveChannel)
    assert tx.name == rx.name == "m"


@pytest.mark.parametrize(
    ("capacity", "overflow", "error", "match"),
    [
        (-1, Overflow.BLOCK, ValueError, "mailbox 'm': capacity must be >= 0"),
        (0, Overflow.DROP_OLDEST, ValueError, "drop-oldest mailbox needs capacity >= 1"),
        (1.5, Overflow.BLOCK, TypeError, "capacity must be an int"),
        (True, Overflow.BLOCK, TypeError, "capacity must be an int"),
        (1, "block", TypeError, "overflow must be an Overflow"),
    ],
)
def test_open_mailbox_rejects_bad_arguments(
    capacity: object, overflow: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        open_mailbox[int](capacity, name="m", overflow=overflow)  # type: ignore[arg-type]


@BOTH
async def test_end_of_channel_after_every_sender_clone_closes(overflow: Overflow) -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[int](4, name="m", overflow=overflow)
        tx2 = tx.clone()
        await tx.send(1)
        tx.close()
        tx2.send_nowait(2)
        assert rx.receive_nowait() == 1
        tx2.close()
        # Buffered messages are still delivered after the senders close...
        assert await rx.receive() == 2
        # ...then the end is reported, by every kind of receive.
        with pytest.raises(trio.EndOfChannel):
            await rx.receive()
        with pytest.raises(trio.EndOfChannel):
            rx.receive_nowait()
        assert rx.drain_nowait() == []


@BOTH
async def test_closing_last_sender_wakes_waiting_receivers(overflow: Overflow) -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[int](1, name="m", overflow=overflow)
        ended: list[str] = []

        async def wait(label: str, receiver: MailboxReceiver[int]) -> None:
            with pytest.raises(trio.EndOfChannel):
                await receiver.receive()
            ended.append(label)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, "a", rx)
            nursery.start_soon(wait, "b", rx.clone())
            await trio.testing.wait_all_tasks_blocked()
            assert tx.statistics().waiting_receivers == 2
            tx.close()
        assert sorted(ended) == ["a", "b"]


@BOTH
async def test_async_for_ends_at_end_of_channel(overflow: Overflow) -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[int](4, name="m", overflow=overflow)
        got: list[int] = []

        async def consume() -> None:
            with rx:
                async for msg in rx:
                    got.append(msg)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            with tx:
                for i in range(10):
                    await tx.send(i)
        assert got == list(range(10))


@BOTH
async def test_sending_without_receivers_is_broken(overflow: Overflow) -> None:
    tx, rx = open_mailbox[int](2, name="inbox", overflow=overflow)
    rx2 = rx.clone()
    rx.close()
    tx.send_nowait(1)  # one receiver is still open
    rx2.close()
    with pytest.raises(trio.BrokenResourceError, match="mailbox 'inbox' has no open receivers"):
        await tx.send(2)
    with pytest.raises(trio.BrokenResourceError):
        tx.send_nowait(2)
    assert tx.statistics().sent == 1


async def test_closing_last_receiver_breaks_blocked_sender() -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[int](0, name="m")
        async with trio.open_nursery() as nursery:

            async def blocked_send() -> None:
                with pytest.raises(trio.BrokenResourceError):
                    await tx.send(1)

            nursery.start_soon(blocked_send)
            await trio.testing.wait_all_tasks_blocked()
            assert tx.statistics().waiting_senders == 1
            rx.close()
        assert tx.statistics().sent == 0


@BOTH
async def test_closed_ends_raise_closed_resource_error(overflow: Overflow) -> None:
    tx, rx = open_mailbox[int](2, name="m", overflow=overflow)
    keep_tx, keep_rx = tx.clone(), rx.clone()  # so the mailbox itself is neither ended nor broken
    tx.close()
    tx.close()  # idempotent
    await tx.aclose()
    rx.close()
    for call in (lambda: tx.send_nowait(1), tx.clone, rx.receive_nowait, rx.drain_nowait, rx.clone):
        with pytest.raises(trio.ClosedResourceError, match="of mailbox 'm' is closed"):
            call()
    with pytest.raises(trio.ClosedResourceError):
        await tx.send(1)
    with pytest.raises(trio.ClosedResourceError):
        await rx.receive()
    keep_tx.send_nowait(5)
    assert keep_rx.receive_nowait() == 5


@BOTH
async def test_closing_a_receiver_wakes_only_its_own_waiters(overflow: Overflow) -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[int](1, name="m", overflow=overflow)
        other = rx.clone()
        results: dict[str, object] = {}

        async def wait(label: str, receiver: MailboxReceiver[int]) -> None:
            try:
                results[label] = await receiver.receive()
            except trio.ClosedResourceError as exc:
                results[label] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, "closed", rx)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(wait, "other", other)
            await trio.testing.wait_all_tasks_blocked()
            rx.close()
            await trio.testing.wait_all_tasks_blocked()
            tx.send_nowait(7)
        assert isinstance(results["closed"], trio.ClosedResourceError)
        assert results["other"] == 7


@BOTH
async def test_with_and_async_with_close_the_end(overflow: Overflow) -> None:
    tx, rx = open_mailbox[int](1, name="m", overflow=overflow)
    with tx.clone():
        pass
    async with tx.clone():
        pass
    with rx.clone():
        pass
    async with rx.clone():
        pass
    stats = tx.statistics()
    assert (stats.open_senders, stats.open_receivers) == (1, 1)
    async with tx, rx:
        pass
    stats = tx.statistics()
    assert (stats.open_senders, stats.open_receivers) == (0, 0)


@BOTH
async def test_async_with_does_not_mask_errors_with_cancelled(overflow: Overflow) -> None:
    # trio's own ``async with send_channel:`` checkpoints in aclose(), so inside a cancelled scope
    # the pending Cancelled replaces the real error; a mailbox closes without a checkpoint.
    tx, rx = open_mailbox[int](1, name="m", overflow=overflow)

    async def fail_while_cancelled() -> None:
        with trio.CancelScope() as scope:
            async with tx, rx:
                scope.cancel()
                raise ValueError("the real error")

    with pytest.raises(ValueError, match="the real error"):
        await fail_while_cancelled()
    assert tx.statistics().open_senders == 0


async def test_block_send_waits_for_room(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        tx, rx = open_mailbox[str](1, name="m")
        sent_at: list[float] = []

        async def slow_consumer() -> None:
            for _ in range(3):
                await trio.sleep(1)
                await rx.receive()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_consumer)
            for msg in "abc":
                await tx.send(msg)
                sent_at.append(trio.current_time())
        # The first fits in the buffer; each later one waits until the consumer makes room.
        assert sent_at == [0.0, 1.0, 2.0]
        tx.send_nowait("d")
        with pytest.raises(trio.WouldBlock):
            tx.send_nowait("e")
        assert rx.receive_nowait() == "d"
        with pytest.raises(trio.WouldBlock):
            rx.receive_nowait()


async def test_drop_oldest_never_waits_and_keeps_the_newest() -> None:
    tx, rx = open_mailbox[int](3, name="events", overflow=Overflow.DROP_OLDEST)
    for i in range(10):
        await tx.send(i)
    tx.send_nowait(10)
    assert rx.drain_nowait() == [8, 9, 10]
    stats = rx.statistics()
    assert stats.dropped == 8
    assert stats.sent == 11
    assert stats.received == 3
    assert stats.peak_buffered == 3


async def test_drop_oldest_hands_over_to_a_waiting_receiver_without_dropping() -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[int](1, name="m", overflow=Overflow.DROP_OLDEST)
        got: list[int] = []

        async def receive_one() -> None:
            got.append(await rx.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive_one)
            await trio.testing.wait_all_tasks_blocked()
            tx.send_nowait(1)  # handed to the waiting receiver, not buffered
            tx.send_nowait(2)  # fills the buffer, evicts nothing
        assert got == [1]
        assert rx.receive_nowait() == 2
        assert rx.statistics().dropped == 0


@BOTH
async def test_drain_nowait_batches_and_respects_limit(overflow: Overflow) -> None:
    tx, rx = open_mailbox[int](8, name="m", overflow=overflow)
    assert rx.drain_nowait() == []
    for i in range(5):
        tx.send_nowait(i)
    assert rx.drain_nowait(limit=0) == []
    assert rx.drain_nowait(limit=2) == [0, 1]
    assert rx.drain_nowait() == [2, 3, 4]
    with pytest.raises(ValueError, match="drain limit must be >= 0"):
        rx.drain_nowait(limit=-1)
    assert rx.statistics().received == 5


async def test_block_drain_takes_messages_of_blocked_senders() -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[int](0, name="m")
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(tx.send, i)
                await trio.testing.wait_all_tasks_blocked()
            assert sorted(rx.drain_nowait()) == [0, 1, 2]
        assert tx.statistics().sent == 3


@BOTH
async def test_statistics_are_exact(overflow: Overflow) -> None:
    with trio.fail_after(1):
        tx, rx = open_mailbox[int](2, name="stats", overflow=overflow)
        tx2 = tx.clone()
        for i in range(3 if overflow is Overflow.DROP_OLDEST else 2):
            tx.send_nowait(i)
        assert rx.receive_nowait() in (0, 1)
        rx2 = rx.clone()
        rx2.close()
        drop = overflow is Overflow.DROP_OLDEST
        assert tx2.statistics() == MailboxStatistics(
            name="stats",
            capacity=2,
            overflow=overflow,
            buffered=1,
            peak_buffered=2,
            sent=3 if drop else 2,
            received=1,
            dropped=1 if drop else 0,
            open_senders=2,
            open_receivers=1,
            waiting_senders=0,
            waiting_receivers=0,
        )
        assert rx.statistics() == tx.statistics()
        rx.drain_nowait()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rx.receive)
            await trio.testing.wait_all_tasks_blocked()
            assert rx.statistics().waiting_receivers == 1
            tx.send_nowait(9)
        stats = rx.statistics()
        assert (stats.waiting_receivers, stats.buffered, stats.received) == (
            0,
            0,
            stats.sent - stats.dropped,
        )


# -- drop-oldest against a deque model ----------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 1000)),
        st.tuples(st.just("receive"), st.none()),
        st.tuples(st.just("drain"), st.one_of(st.none(), st.integers(0, 4))),
    ),
    max_size=60,
)


@given(capacity=st.integers(1, 5), operations=ops)
@settings(deadline=None)
def test_drop_oldest_matches_a_bounded_deque(
    capacity: int, operations: list[tuple[str, int | None]]
) -> None:
    tx, rx = open_mailbox[int](capacity, name="model", overflow=Overflow.DROP_OLDEST)
    model: deque[int] = deque()
    sent = received = dropped = peak = 0
    for op, arg in operations:
        if op == "send":
            assert arg is not None
            tx.send_nowait(arg)
            sent += 1
            if len(model) == capacity:
                model.popleft()
                dropped += 1
            model.append(arg)
            peak = max(peak, len(model))
        elif op == "receive":
            if model:
                assert rx.receive_nowait() == model.popleft()
                received += 1
            else:
                with pytest.raises(trio.WouldBlock):
                    rx.receive_nowait()
        else:
            n = len(model) if arg is None else min(arg, len(model))
            expected = [model.popleft() for _ in range(n)]
            assert rx.drain_nowait(arg) == expected
            received += n
        stats = rx.statistics()
        assert (stats.buffered, stats.sent, stats.received, stats.dropped, stats.peak_buffered) == (
            len(model),
            sent,
            received,
            dropped,
            peak,
        )
    # Whatever happened, the mailbox holds the newest messages still unread, oldest first.
    assert rx.drain_nowait() == list(model)


@given(
    capacity=st.integers(1, 4),
    messages=st.integers(0, 30),
    consumer_pace=st.lists(st.integers(0, 3), min_size=1, max_size=5),
    random_state=st.random_module(),
)
@settings(deadline=None, max_examples=60)
def test_drop_oldest_concurrent_accounting_holds_on_any_schedule(
    capacity: int, messages: int, consumer_pace: list[int], random_state: object
) -> None:
    # A fast producer and a consumer yielding a drawn number of times between receives: whatever
    # the schedule, every message is received once or counted as dropped, in order, never waiting.
    async def main() -> tuple[list[int], MailboxStatistics]:
        tx, rx = open_mailbox[int](capacity, name="m", overflow=Overflow.DROP_OLDEST)
        got: list[int] = []

        async def consume() -> None:
            with rx:
                i = 0
                async for msg in rx:
                    got.append(msg)
                    for _ in range(consumer_pace[i % len(consumer_pace)]):
                        await trio.lowlevel.checkpoint()
                    i += 1

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                with tx:
                    for i in range(messages):
                        await tx.send(i)
        return got, rx.statistics()

    got, stats = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert got == sorted(set(got))
    assert stats.sent == messages
    assert stats.received == len(got)
    assert stats.received + stats.dropped == messages
    if messages:
        assert got[-1] == messages - 1  # the newest message is never the one dropped


# -- the perturbation hook ----------------------------------------------------------------------


@attrs.define
class Recorder:
    ops: list[tuple[MailboxOp, float]] = attrs.Factory(list)

    async def __call__(self, op: MailboxOp) -> None:
        self.ops.append((op, trio.current_time()))


@BOTH
async def test_perturbation_is_awaited_once_per_send_and_receive_only(
    overflow: Overflow,
) -> None:
    recorder = Recorder()
    tx, rx = open_mailbox[int](4, name="p", overflow=overflow, perturb=recorder)
    await tx.send(1)
    tx.send_nowait(2)
    with tx.clone() as tx2:
        await tx2.send(3)
    assert await rx.receive() == 1
    assert rx.receive_nowait() == 2
    assert rx.drain_nowait() == [3]
    tx.close()
    async for _ in rx:
        pass  # the final receive that meets the end is perturbed too
    assert [op for op, _ in recorder.ops] == [
        MailboxOp("p", "send"),
        MailboxOp("p", "send"),
        MailboxOp("p", "receive"),
        MailboxOp("p", "receive"),
    ]


@BOTH
async def test_plan_delays_every_operation_by_exact_virtual_times(
    autojump_clock: trio.testing.MockClock, overflow: Overflow
) -> None:
    with trio.fail_after(100):
        tx, rx = open_mailbox[int](
            4, name="m", overflow=overflow, perturb=perturbation_from_plan([(0, 1.0), (2, 0.5)])
        )
        times: list[float] = []
        await tx.send(1)  # plan[0]: +1.0
        times.append(trio.current_time())
        await tx.send(2)  # plan[1]: +0.5
        times.append(trio.current_time())
        await rx.receive()  # plan[0] again: the plan cycles
        times.append(trio.current_time())
        tx.send_nowait(3)  # not perturbed
        rx.receive_nowait()
        times.append(trio.current_time())
        await rx.receive()  # plan[1]
        times.append(trio.current_time())
        assert times == [1.0, 1.5, 2.5, 2.5, 3.0]


async def test_plan_makes_exactly_n_extra_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real_checkpoint = trio.lowlevel.checkpoint

    async def counting_checkpoint() -> None:
        nonlocal calls
        calls += 1
        await real_checkpoint()

    perturb = perturbation_from_plan([(3, 0.0), (0, 0.0), (1, 0.0)])
    monkeypatch.setattr(trio.lowlevel, "checkpoint", counting_checkpoint)
    counts = []
    for _ in range(4):
        before = calls
        await perturb(MailboxOp("m", "send"))
        counts.append(calls - before)
    monkeypatch.undo()
    assert counts == [3, 0, 1, 3]


@pytest.mark.parametrize(
    "plan", [[], [(-1, 0.0)], [(0, -0.5)], [(0, float("inf"))], [(0, float("nan"))]]
)
def test_perturbation_plan_is_validated(plan: list[tuple[int, float]]) -> None:
    with pytest.raises(ValueError, match="perturbation plan"):
        perturbation_from_plan(plan)


async def test_one_plan_shared_by_clones_steps_in_global_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Clones share the mailbox's perturbation, so the plan advances once per operation on any end.
    with trio.fail_after(100):
        perturb = perturbation_from_plan([(0, 0.0), (0, 10.0)])
        tx, rx = open_mailbox[str](8, name="m", perturb=perturb)
        arrivals: list[tuple[str, float]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tx.send, "first")  # op 0: no delay
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(tx.send, "second")  # op 1: 10 s
            await trio.testing.wait_all_tasks_blocked()
        tx.close()
        async for msg in rx.clone():  # ops 2, 3, 4 alternate 0 s and 10 s
            arrivals.append((msg, trio.current_time()))
        assert arrivals == [("first", 10.0), ("second", 20.0)]


# -- BLOCK behaves as a trio memory channel ------------------------------------------------------

channel_ops = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "send",
                "receive",
                "send_nowait",
                "receive_nowait",
                "drain",
                "close_tx",
                "close_rx",
                "clone_tx",
                "clone_rx",
                "cancel",
            ]
        ),
        st.integers(0, 3),
    ),
    max_size=40,
)


def _replay_on(ends: tuple[Any, Any], operations: list[tuple[str, int]]) -> list[object]:
    """What a program of operations observes on one channel: after each operation, the outcome of
    every finished task and of the operation itself, and the channel's counts."""

    async def main() -> list[object]:
        txs: list[Any] = [ends[0]]
        rxs: list[Any] = [ends[1]]
        results: dict[int, str] = {}
        scopes: list[trio.CancelScope] = []
        seen: list[object] = []

        def name(exc: BaseException) -> str:
            return type(exc).__name__

        async def parked(i: int, call: Callable[[], Awaitable[object]]) -> None:
            with scopes[i]:
                try:
                    results[i] = repr(await call())
                except (trio.TooSlowError, Exception) as exc:
                    results[i] = name(exc)
            if scopes[i].cancelled_caught:
                results[i] = "cancelled"

        async with trio.open_nursery() as nursery:
            for n, (op, k) in enumerate(operations):
                tx, rx = txs[k % len(txs)], rxs[k % len(rxs)]
                outcome: str = ""
                try:
                    if op in ("send", "receive"):
                        scopes.append(trio.CancelScope())
                        call = functools.partial(tx.send, n) if op == "send" else rx.receive
                        nursery.start_soon(parked, len(scopes) - 1, call)
                    elif op == "send_nowait":
                        tx.send_nowait(n)
                    elif op == "receive_nowait":
                        outcome = repr(rx.receive_nowait())
                    elif op == "drain":
                        got = []
                        while True:
                            try:
                                got.append(rx.receive_nowait())
                            except (trio.WouldBlock, trio.EndOfChannel):
                                break
                        outcome = repr(got)
                    elif op == "close_tx":
                        tx.close()
                    elif op == "close_rx":
                        rx.close()
                    elif op == "clone_tx":
                        txs.append(tx.clone())
                    elif op == "clone_rx":
                        rxs.append(rx.clone())
                    elif scopes:
                        scopes[k % len(scopes)].cancel()
                except Exception as exc:
                    outcome = name(exc)
                await trio.testing.wait_all_tasks_blocked()
                stats = rxs[0].statistics()
                if isinstance(stats, MailboxStatistics):
                    counts = (stats.buffered, stats.open_senders, stats.open_receivers)
                    waits = (stats.waiting_senders, stats.waiting_receivers)
                else:
                    counts = (
                        stats.current_buffer_used,
                        stats.open_send_channels,
                        stats.open_receive_channels,
                    )
                    waits = (stats.tasks_waiting_send, stats.tasks_waiting_receive)
                seen.append((op, outcome, dict(results), counts, waits))
            nursery.cancel_scope.cancel()
        return seen

    return trio.run(main)


@given(capacity=st.integers(0, 2), operations=channel_ops)
@settings(deadline=None, max_examples=300)
def test_block_mailbox_behaves_as_a_trio_memory_channel(
    capacity: int, operations: list[tuple[str, int]]
) -> None:
    mailbox = _replay_on(open_mailbox[int](capacity, name="m"), operations)
    channel = _replay_on(trio.open_memory_channel[int](capacity), operations)
    assert mailbox == channel
