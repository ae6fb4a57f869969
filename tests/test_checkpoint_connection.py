"""The connection thread: one worker thread owns a blocking connection from opening to closing.

Real threads, so no autojump clock here; every test has a ``fail_after`` watchdog.
"""

from __future__ import annotations

import gc
import threading
import time
import warnings
import weakref
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from treadle.runtime.checkpointers.connection import ConnectionThread
from treadle.runtime.errors import CheckpointerError


class Conn:
    """A stand-in connection that records which thread opened, used and closed it."""

    def __init__(self) -> None:
        self.opened_in = threading.get_ident()
        self.used_in: set[int] = set()
        self.closed_in: int | None = None


def make(**kwargs: Any) -> tuple[ConnectionThread[Conn], list[Conn]]:
    made: list[Conn] = []

    def connect() -> Conn:
        made.append(Conn())
        return made[-1]

    def disconnect(conn: Conn) -> None:
        conn.closed_in = threading.get_ident()

    return ConnectionThread("treadle-test", connect, disconnect, **kwargs), made


async def test_the_connection_lives_and_dies_in_one_thread() -> None:
    thread, made = make()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            conn = await nursery.start(thread.run)
            assert conn is made[0]
            assert conn.opened_in != threading.get_ident()  # never the Trio thread

            def use() -> str:
                conn.used_in.add(threading.get_ident())
                return threading.current_thread().name

            names = [await thread.call(use) for _ in range(20)]
            await thread.aclose()
    assert set(names) == {"treadle-test"}
    assert conn.used_in == {conn.opened_in}
    assert conn.closed_in == conn.opened_in


async def test_results_and_errors_come_back_to_their_caller() -> None:
    thread, _ = make()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(thread.run)
            assert await thread.call(lambda: 41 + 1) == 42
            with pytest.raises(ZeroDivisionError):
                await thread.call(lambda: 1 / 0)
            assert await thread.call(lambda: "still serving") == "still serving"
            await thread.aclose()


async def test_a_failing_connect_fails_the_start_unwrapped_and_leaks_nothing() -> None:
    def connect() -> Conn:
        raise OSError("no such database")

    thread: ConnectionThread[Conn] = ConnectionThread("treadle-test", connect, lambda c: None)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            with pytest.raises(OSError, match="no such database"):
                await nursery.start(thread.run)
    with pytest.raises(CheckpointerError, match="takes no calls"):
        await thread.call(lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        del thread
        gc.collect()  # its sockets were closed, so collecting it warns about nothing


@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=12))
@settings(max_examples=25, deadline=None)
def test_concurrent_callers_take_turns_and_each_gets_its_own_answer(delays: list[int]) -> None:
    async def scenario() -> None:
        thread, _ = make()
        order: list[int] = []
        answers: dict[int, int] = {}

        async def caller(i: int, delay: int) -> None:
            def job() -> int:
                order.append(i)
                time.sleep(delay / 1000)
                return i * 10

            answers[i] = await thread.call(job)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(thread.run)
                async with trio.open_nursery() as callers:
                    for i, delay in enumerate(delays):
                        callers.start_soon(caller, i, delay)
                await thread.aclose()
        assert answers == {i: i * 10 for i in range(len(delays))}
        assert sorted(order) == list(range(len(delays)))  # each job ran exactly once

    trio.run(scenario)


async def test_a_cancelled_caller_still_waits_for_its_job_and_the_next_call_is_not_confused() -> (
    None
):
    thread, _ = make()
    started = threading.Event()
    release = threading.Event()
    finished: list[str] = []

    def slow() -> str:
        started.set()
        release.wait(5)
        finished.append("slow")
        return "slow"

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(thread.run)
            with trio.CancelScope() as scope:

                async def cancel_when_running() -> None:
                    await trio.to_thread.run_sync(started.wait)
                    scope.cancel()
                    await trio.sleep(0.05)
                    release.set()

                nursery.start_soon(cancel_when_running)
                result = await thread.call(slow)
            # The call did not give up half way: like trio.to_thread.run_sync, it delivered the
            # finished job's result, and the cancellation waits for the next checkpoint.
            assert scope.cancel_called
            assert result == "slow"
            assert finished == ["slow"]
            assert await thread.call(lambda: "mine") == "mine"
            await thread.aclose()


async def test_cancelling_the_host_closes_the_connection_and_later_calls_fail_clearly() -> None:
    thread, made = make()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(thread.run)
            nursery.cancel_scope.cancel()
        await thread.aclose()  # waits for the thread to be gone
        assert made[0].closed_in == made[0].opened_in
        with pytest.raises(CheckpointerError, match="takes no calls"):
            await thread.call(lambda: None)
        await thread.aclose()  # idempotent
    assert "closed" in repr(thread)


async def test_calls_wait_while_the_trio_thread_holds_the_connection_between_calls() -> None:
    thread, _ = make()
    order: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(thread.run)

            async def call() -> None:
                await thread.call(lambda: order.append("call"))

            async with thread.between_calls():
                nursery.start_soon(call)
                await trio.sleep(0.05)  # real time: the thread would have run the call by now
                order.append("held")
            await thread.aclose()
        assert order == ["held", "call"]
        with pytest.raises(CheckpointerError, match="takes no calls"):
            async with thread.between_calls():
                pass


async def test_a_thread_runs_only_once() -> None:
    thread, _ = make()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(thread.run)
            with pytest.raises(RuntimeError, match="only once"):
                await thread.run()
            await thread.aclose()


async def test_a_start_cancelled_while_connecting_closes_the_connection_and_leaks_nothing() -> None:
    # A slow server: the host gives up while connect() is still running in the thread. Nobody will
    # ever call aclose(): the thread must close the connection itself, and its sockets must be
    # closed, without a ResourceWarning, once nothing refers to it any more.
    connecting = threading.Event()
    release = threading.Event()
    closed = threading.Event()

    def connect() -> Conn:
        connecting.set()
        release.wait(10)
        return Conn()

    thread: ConnectionThread[Conn] = ConnectionThread(
        "treadle-test", connect, lambda conn: closed.set()
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:

                async def give_up_while_connecting() -> None:
                    await trio.to_thread.run_sync(connecting.wait)
                    scope.cancel()

                nursery.start_soon(give_up_while_connecting)
                await nursery.start(thread.run)
        assert scope.cancelled_caught
        release.set()
        await trio.to_thread.run_sync(closed.wait)  # the abandoned thread closes the connection
        await trio.lowlevel.wait_readable(thread._wake_reader)  # its last act: the stop byte
        with pytest.raises(CheckpointerError, match="takes no calls"):
            await thread.call(lambda: None)
        alive = weakref.ref(thread)
        del thread
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            while alive() is not None:  # until Trio's worker thread lets go of it
                gc.collect()
                await trio.sleep(0.001)
            gc.collect()  # collected: its sockets were closed, so nothing warned
