"""PostgreSQL schemas of one benchmark run: named after the run, dropped by the run, so two runs
against one database (or a run beside the test suite) never drop each other's tables."""

from __future__ import annotations

import os
import uuid

# Set once per run; child processes a driver starts inherit it and name their schemas alike.
RUN = os.environ.setdefault("TREADLE_BENCH_RUN", uuid.uuid4().hex[:8])


def schema_name(kind: str = "") -> str:
    """A fresh schema name of this run (``kind`` tells whose tables it holds, e.g. ``lg``)."""
    return f"bench_{RUN}_{kind}{uuid.uuid4().hex[:10]}"


def drop_run_schemas(url: str) -> None:
    """Drop every schema this run (and its child processes) created."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for (name,) in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"bench\\_{RUN}\\_%",)
        ).fetchall():
            conn.execute(f'DROP SCHEMA "{name}" CASCADE'.encode())
