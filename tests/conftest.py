"""Shared fixtures. How we write tests here:

- pytest-trio runs every ``async def test_*`` (``trio_mode = true``); take the ``autojump_clock``
  fixture instead of sleeping and assert exact virtual times with ``==``.
- Every async test runs under a real-time watchdog (``trio_watchdog.py``, 60 s unless marked
  ``@pytest.mark.watchdog(seconds)``), so a deadlock fails fast instead of hanging CI. Under
  ``autojump_clock`` also wrap the body in ``with trio.fail_after(...)``: virtual time jumps to that
  deadline at once when everything is blocked.
- Interleaving properties are sync ``@given`` tests that call ``trio.run`` themselves with
  ``MockClock(autojump_threshold=0)`` and ``st.random_module()``.
- Real parts where users use them: a real SQLite file under ``tmp_path``, the PostgreSQL server named
  by ``TREADLE_TEST_POSTGRES_URL``, real loopback sockets.
"""

from __future__ import annotations

import pytest
from trio_watchdog import DEFAULT_SECONDS, watchdog_runner


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every Trio test (marked by pytest-trio's trio mode) runs under a real-time watchdog."""
    for item in items:
        if item.get_closest_marker("trio") is None:
            continue
        marker = item.get_closest_marker("watchdog")
        seconds = float(marker.args[0]) if marker else DEFAULT_SECONDS
        item.add_marker(pytest.mark.trio(run=watchdog_runner(seconds)), append=False)
