"""Shared fixtures. How we write tests here:

- pytest-trio runs every ``async def test_*`` (``trio_mode = true``); take the ``autojump_clock``
  fixture instead of sleeping and assert exact virtual times with ``==``.
- Wrap each test body in ``with trio.fail_after(...)`` so a deadlock fails fast instead of hanging.
- Interleaving properties are sync ``@given`` tests that call ``trio.run`` themselves with
  ``MockClock(autojump_threshold=0)`` and ``st.random_module()``.
- Real parts where users use them: a real SQLite file under ``tmp_path``, the PostgreSQL server named
  by ``TREADLE_TEST_POSTGRES_URL``, real loopback sockets.
"""

from __future__ import annotations
