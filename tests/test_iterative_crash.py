"""Iterative sessions survive SIGKILL: a driver process feeding inputs is killed at random instants
(inside node runs, checkpoint writes, between invocations) and started again; it resumes, finishes
a pending invocation and goes on. Every session must end with the final state, step count and
stored history (every checkpoint) of an uninterrupted run, on SQLite and on PostgreSQL.

This file is also the driver: ``python test_iterative_crash.py run URL SESSION``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

INPUTS = [5, 3, 3, 8, 1, 9, 2, 2, 7, 4]
STEPS_PER_INPUT = 2
FINAL_STEP = STEPS_PER_INPUT * len(INPUTS)
KILL_POINTS = 20


def checkpointer(url: str) -> Any:
    """A URL, or ``postgresql://…#schema`` for a private schema."""
    if url.startswith("postgresql://") and "#" in url:
        from treadle import PostgresCheckpointer

        base, schema = url.split("#", 1)
        return PostgresCheckpointer(base, schema=schema)
    return url


async def drive(url: str, session: str) -> None:
    """The driver script: open the session, finish what a crash left pending, feed the rest."""
    from iterative_apps import accumulator_app

    from treadle import AppRunner, MockClock, NodePartial, VersionedState

    # A mock clock keeps created_at identical between runs.
    async with AppRunner(
        accumulator_app(), checkpointer=checkpointer(url), clock=MockClock(0)
    ) as runner:
        await runner.create_iterative_session(session, VersionedState())
        view = await runner.get_session(session)
        if view.invocation_pending:
            await runner.continue_invocation(session)
        assert view.invocation is not None
        for value in INPUTS[view.invocation :]:
            await runner.invoke_next(session, NodePartial(extra={"x": value}))
        await runner.finish_iterative_session(session)
    print("DONE", flush=True)


if __name__ == "__main__" and sys.argv[1:2] == ["run"]:
    trio.run(drive, sys.argv[2], sys.argv[3])
    sys.exit(0)


# -- the tests ---------------------------------------------------------------------------------------

pytest_plugins = ["pg_fixtures"]


def spawn(url: str, session: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-u", __file__, "run", url, session],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ITERATIVE_PROGRESS": "1"},
    )


async def stored(url: str, session: str) -> tuple[Any, list[str]]:
    """The latest checkpoint of a session and every stored one, as exact JSON text."""
    from pg_fixtures import opened

    from treadle.runtime.checkpointers.checkpoint import resolve_checkpointer

    async with opened(resolve_checkpointer(checkpointer(url))) as store:
        latest = await store.load_latest(session)
        texts = [
            json.dumps((await store.load(session, info.step)).to_json_value(), sort_keys=True)
            for info in await store.list_steps(session)
        ]
    return latest, texts


def kill_at(proc: subprocess.Popen[str], step: int, rng: random.Random) -> None:
    """SIGKILL ``proc`` 0-3 ms after a node of ``step`` (or later) starts."""
    assert proc.stdout is not None
    for line in proc.stdout:
        parts = line.split()
        if parts[:1] == ["AT"] and int(parts[2]) >= step:
            time.sleep(rng.uniform(0.0, 0.003))
            break
    proc.send_signal(signal.SIGKILL)


def crash_repeatedly(url: str, rng: random.Random) -> list[tuple[str, int, bool]]:
    """Kill drivers until KILL_POINTS kills landed, one session after another, then let a last
    driver finish each session. Returns (session, stored step, invocation pending) per kill."""
    kills: list[tuple[str, int, bool]] = []
    session_index = 0
    while len(kills) < KILL_POINTS:
        session = f"s{session_index}"
        latest, _ = trio.run(stored, url, session)
        done = latest.step if latest is not None else 0
        if done >= FINAL_STEP:
            session_index += 1
            continue
        proc = spawn(url, session)
        try:
            kill_at(proc, rng.randint(done + 1, min(done + 3, FINAL_STEP)), rng)
        finally:
            proc.communicate(timeout=120)
        if proc.returncode == -signal.SIGKILL:
            latest, _ = trio.run(stored, url, session)
            if latest is not None:
                pending = latest.invocation > 0 and latest.frontier != ("__end__",)
                kills.append((session, latest.step, pending))
            else:
                kills.append((session, -1, False))
    for index in range(session_index + 1):
        proc = spawn(url, f"s{index}")
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "DONE" in out
    return kills


def check_against_uninterrupted(tmp_path: Path, url: str, sessions: int) -> None:
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    trio.run(drive, reference, "ref")
    ref_latest, ref_texts = trio.run(stored, reference, "ref")
    assert ref_latest.step == FINAL_STEP
    assert ref_latest.state.extra["sum"] == sum(INPUTS)
    assert len(ref_texts) == FINAL_STEP + 1
    ref_texts = [text.replace('"ref"', '"S"') for text in ref_texts]
    for index in range(sessions):
        session = f"s{index}"
        latest, texts = trio.run(stored, url, session)
        assert latest.state == ref_latest.state
        assert latest.step == ref_latest.step
        assert [text.replace(json.dumps(session), '"S"') for text in texts] == ref_texts


def seeded() -> random.Random:
    seed = int(os.environ.get("CRASH_TEST_SEED") or random.randrange(2**32))
    print(f"crash test seed: CRASH_TEST_SEED={seed}")
    return random.Random(seed)


def run_crash_test(tmp_path: Path, url: str) -> None:
    kills = crash_repeatedly(url, seeded())
    print(f"{len(kills)} kill points (session, stored step, invocation pending): {kills}")
    assert len(kills) >= KILL_POINTS
    # Kills landed both inside invocations and between them.
    assert {pending for _, _, pending in kills} == {True, False}, kills
    check_against_uninterrupted(tmp_path, url, len({session for session, _, _ in kills}))


@pytest.mark.slow
def test_iterative_sqlite_sessions_survive_sigkill(tmp_path: Path) -> None:
    run_crash_test(tmp_path, f"sqlite:///{tmp_path / 'crash.db'}")


@pytest.mark.slow
@pytest.mark.postgres
def test_iterative_postgres_sessions_survive_sigkill(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    run_crash_test(tmp_path, f"{postgres_url}#{pg_schema}")
