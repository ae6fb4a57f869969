"""A real-time watchdog around every Trio test, so a deadlock fails in seconds, not at CI's limit.

``conftest.py`` gives every async test a ``trio`` marker whose ``run=`` is :func:`run_with_watchdog`
(pytest-trio takes the first marker that names a runner). The deadline is wall-clock time, read by a
timer thread, so it holds under ``autojump_clock``, a plain ``MockClock`` and real time alike, and
it covers the test's async fixtures (set-up and tear-down) too. A test that needs longer says so with
``@pytest.mark.watchdog(seconds)``. Tests keep their own, tighter ``trio.fail_after`` where virtual
time makes a deadlock fail at once.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio

DEFAULT_SECONDS = 60.0

T = TypeVar("T")


def run_with_watchdog(
    async_fn: Callable[[], Awaitable[T]],
    *,
    seconds: float = DEFAULT_SECONDS,
    clock: trio.abc.Clock | None = None,
    instruments: Sequence[trio.abc.Instrument] = (),
) -> T:
    """``trio.run(async_fn)``, cancelled with ``trio.TooSlowError`` after ``seconds`` of real time."""

    async def guarded() -> T:
        token = trio.lowlevel.current_trio_token()
        scope = trio.CancelScope()
        timer = threading.Timer(seconds, _cancel_from_thread, (token, scope))
        timer.daemon = True
        timer.start()
        try:
            with scope:
                return await async_fn()
        except BaseException as exc:
            # pytest-trio reports a cancelled test as its fixture's doing: say what happened.
            if scope.cancel_called:
                raise trio.TooSlowError(expired) from exc
            raise
        finally:
            timer.cancel()
        raise trio.TooSlowError(expired)

    expired = (
        f"the test ran longer than its {seconds:g} s watchdog (real time): a deadlock, or mark "
        f"it @pytest.mark.watchdog(seconds) if it truly needs longer"
    )
    return trio.run(guarded, clock=clock, instruments=tuple(instruments))


def _cancel_from_thread(token: trio.lowlevel.TrioToken, scope: trio.CancelScope) -> None:
    try:
        token.run_sync_soon(scope.cancel)
    except trio.RunFinishedError:
        pass  # the test ended as the timer fired


def watchdog_runner(seconds: float) -> Callable[..., Any]:
    """A ``run=`` for ``pytest.mark.trio``: :func:`run_with_watchdog` with this deadline."""

    def run(async_fn: Callable[[], Awaitable[Any]], **kwargs: Any) -> Any:
        return run_with_watchdog(async_fn, seconds=seconds, **kwargs)

    run.watchdog_seconds = seconds  # type: ignore[attr-defined]  # read by the watchdog's own test
    return run
