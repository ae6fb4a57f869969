"""The real-time watchdog that ``conftest.py`` puts around every Trio test."""

from __future__ import annotations

import inspect
import time

import pytest
import trio
import trio.testing
from trio_watchdog import DEFAULT_SECONDS, run_with_watchdog


def test_every_trio_test_runs_under_the_watchdog(request: pytest.FixtureRequest) -> None:
    trio_tests = [
        item
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and inspect.iscoroutinefunction(getattr(item.obj, "__wrapped__", item.obj))
    ]
    unguarded = [
        item.nodeid
        for item in trio_tests
        if not hasattr(
            next(m for m in item.iter_markers("trio") if "run" in m.kwargs).kwargs["run"],
            "watchdog_seconds",
        )
    ]
    assert unguarded == []


def test_a_deadlock_under_a_frozen_mock_clock_fails_in_real_time() -> None:
    async def deadlock() -> None:
        await trio.Event().wait()

    started = time.monotonic()
    with pytest.raises(trio.TooSlowError, match=r"0.2 s watchdog"):
        run_with_watchdog(deadlock, seconds=0.2, clock=trio.testing.MockClock())
    assert time.monotonic() - started < 5


def test_a_test_that_finishes_returns_its_value_and_leaves_no_timer() -> None:
    async def quick() -> int:
        await trio.sleep(3600)  # virtual: autojump moves past it at once
        return 7

    assert (
        run_with_watchdog(quick, seconds=0.5, clock=trio.testing.MockClock(autojump_threshold=0))
        == 7
    )
    time.sleep(0.6)  # the timer was cancelled: nothing fires into a finished run


@pytest.mark.watchdog(DEFAULT_SECONDS + 1)
async def test_a_marker_sets_a_longer_watchdog(request: pytest.FixtureRequest) -> None:
    run = next(m for m in request.node.iter_markers("trio") if "run" in m.kwargs).kwargs["run"]
    assert run.watchdog_seconds == DEFAULT_SECONDS + 1


def test_an_expired_watchdog_names_itself_whatever_the_test_raised_on_cancellation() -> None:
    async def hangs_then_complains() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            raise RuntimeError("a fixture saw the cancellation") from None

    with pytest.raises(trio.TooSlowError, match="watchdog") as info:
        run_with_watchdog(hangs_then_complains, seconds=0.2, clock=trio.testing.MockClock())
    assert isinstance(info.value.__cause__, RuntimeError)
