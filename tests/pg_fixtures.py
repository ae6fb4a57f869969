"""Fixtures for checkpointer tests: a real PostgreSQL server (one private schema per test) and a
factory for every durable backend.

PostgreSQL tests use ``TREADLE_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
When the server is unreachable they skip with the reason, unless ``TREADLE_REQUIRE_POSTGRES=1``, in
which case they fail. Load with ``pytest_plugins = ["pg_fixtures"]``.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

S = TypeVar("S")

DEFAULT_TEST_URL = "postgresql://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def opened(store: S) -> AsyncIterator[S]:
    """``store`` open for direct use, its connection thread in a nursery of its own."""
    async with trio.open_nursery() as nursery:
        await store.open(nursery)  # type: ignore[attr-defined]
        try:
            yield store
        finally:
            await store.aclose()  # type: ignore[attr-defined]


def test_postgres_url() -> str:
    """The server the PostgreSQL tests use."""
    return os.environ.get("TREADLE_TEST_POSTGRES_URL") or DEFAULT_TEST_URL


test_postgres_url.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def postgres_required() -> bool:
    return os.environ.get("TREADLE_REQUIRE_POSTGRES") == "1"


def _unreachable_reason(url: str) -> str | None:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a test dependency
        return "psycopg is not installed (pip install 'treadle[postgres]')"
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at TREADLE_TEST_POSTGRES_URL is unreachable ({first})"
    return None


@functools.cache
def _reachability(url: str) -> str | None:
    return _unreachable_reason(url)


def require_postgres_url() -> str:
    """The test server's URL; skips the test (or fails it under TREADLE_REQUIRE_POSTGRES=1) when
    the server is unreachable. Usable outside fixtures (in Hypothesis tests)."""
    url = test_postgres_url()
    reason = _reachability(url)
    if reason is not None:
        if postgres_required():
            pytest.fail(f"{reason}; TREADLE_REQUIRE_POSTGRES=1 makes this a failure")
        pytest.skip(reason)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's URL; skips (or fails under TREADLE_REQUIRE_POSTGRES=1) if unreachable."""
    return require_postgres_url()


def drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A schema name private to this test, dropped afterwards."""
    schema = f"treadle_test_{uuid.uuid4().hex[:12]}"
    yield schema
    drop_schema(postgres_url, schema)


BACKENDS = ["sqlite", "json", "postgres"]


@pytest.fixture
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    """``make_backend(kind, **options)`` builds an unopened durable checkpointer that all calls with
    the same kind share the storage of (so a test can open two to play two processes)."""
    schema: list[str] = []
    url: list[str] = []

    def make(kind: str, **options: Any) -> Any:
        from treadle.runtime.checkpointers.json_files import JSONCheckpointer
        from treadle.runtime.checkpointers.postgres import PostgresCheckpointer
        from treadle.runtime.checkpointers.sqlite import SQLiteCheckpointer

        if kind == "sqlite":
            return SQLiteCheckpointer(tmp_path / "checkpoints.db", **options)
        if kind == "json":
            return JSONCheckpointer(tmp_path / "checkpoints", **options)
        if kind == "postgres":
            if not url:
                url.append(request.getfixturevalue("postgres_url"))
                schema.append(request.getfixturevalue("pg_schema"))
            return PostgresCheckpointer(url[0], schema=schema[0], **options)
        raise ValueError(kind)

    return make
