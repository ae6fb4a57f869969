"""Crash and resume: worker processes running a 199-step graph (``tests/apps.py``'s rich graph: a
conditional loop, a fan-out, a join half-fired across steps, a version-gated node, a retried node,
extra writes and deletes) are killed with SIGKILL, first on cue where a resume must carry the join
state and the gating, then at random instants, and resumed by new processes; every session must end
with exactly the final state, step count and stored history (every step's full checkpoint) of an
uninterrupted run. Also: two processes resuming one PostgreSQL session at once.

This file is also the worker: ``python test_checkpoint_crash.py run URL DURABILITY SESSION...``.
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

ROUNDS = 40  # tests/apps.py's rich graph: 5 supersteps a round, 4 in the last: 199 steps


async def observe(node: str, ctx: Any) -> None:
    """What the worker does as a node starts: report progress, pace, or kill itself on cue."""
    if node == "plan" and os.environ.get("CRASH_TEST_PROGRESS"):
        print(f"AT {ctx.session_id} {ctx.step}", flush=True)  # lets the parent aim its kill
    cue = os.environ.get("CRASH_TEST_SELF_KILL")  # "node@step": die as node starts at step
    if cue == f"{node}@{ctx.step}":
        os.kill(os.getpid(), signal.SIGKILL)
    pace = float(os.environ.get("CRASH_TEST_PACE", "0"))
    if pace and node == "plan":
        import trio

        await trio.sleep(pace)


def crash_app() -> Any:
    from apps import rich_app

    return rich_app(ROUNDS, observe=observe)


def checkpointer(url: str) -> Any:
    """A URL, or ``postgresql://…#schema`` for a private schema."""
    if url.startswith("postgresql://") and "#" in url:
        from treadle.runtime.checkpointers import PostgresCheckpointer

        base, schema = url.split("#", 1)
        return PostgresCheckpointer(base, schema=schema)
    return url


# -- the worker --------------------------------------------------------------------------------------


async def work(url: str, durability: str, sessions: list[str]) -> None:
    import trio

    from treadle import AppRunner, MockClock, VersionedState

    # A mock clock keeps created_at (and every other time) identical between runs.
    async with AppRunner(
        crash_app(), checkpointer=checkpointer(url), durability=durability, clock=MockClock(0)
    ) as runner:
        for session in sessions:
            await runner.create_session(session, VersionedState.with_user_message("go"))
        print("READY", flush=True)
        if os.environ.get("CRASH_TEST_WAIT_GO"):  # the parent starts several workers at once
            await trio.to_thread.run_sync(sys.stdin.readline)
        async with trio.open_nursery() as nursery:
            for session in sessions:
                nursery.start_soon(runner.run_until_complete, session)
    print("DONE", flush=True)


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def worker_main(argv: list[str]) -> int:
    import trio

    from treadle import ConcurrencyConflict, SessionLeased

    _, url, durability, *sessions = argv
    try:
        trio.run(work, url, durability, sessions)
    except Exception as exc:
        leased = _find(exc, SessionLeased)
        if leased is not None:
            print(f"LEASED {leased}", flush=True)
            return 3
        conflict = _find(exc, ConcurrencyConflict)
        if isinstance(conflict, ConcurrencyConflict):
            print(f"CONFLICT expected={conflict.expected_step} {conflict}", flush=True)
            return 3
        raise
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["run"]:
    sys.exit(worker_main(sys.argv[1:]))


# -- the tests ---------------------------------------------------------------------------------------

pytest_plugins = ["pg_fixtures"]


def spawn(url: str, durability: str, sessions: list[str], **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-u", __file__, "run", url, durability, *sessions],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def wait_ready(proc: subprocess.Popen[str], timeout: float = 60) -> bool:
    """Wait for the worker's READY line; False if it ended before that."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY"):
            return True
        if not line and proc.poll() is not None:
            return False
    raise AssertionError("the worker did not start in time")


async def history(url: str, session: str) -> tuple[Any, list[str]]:
    """The latest checkpoint and every stored checkpoint of a session, as exact JSON text."""
    from pg_fixtures import opened

    from treadle.runtime.checkpointers.checkpoint import resolve_checkpointer

    async with opened(resolve_checkpointer(checkpointer(url))) as store:
        steps = await store.list_steps(session)
        stored = [
            json.dumps((await store.load(session, info.step)).to_json_value(), sort_keys=True)
            for info in steps
        ]
        latest = await store.load_latest(session)
    assert latest is not None
    return latest, stored


async def latest_steps(url: str, sessions: list[str]) -> dict[str, int | None]:
    from pg_fixtures import opened

    from treadle.runtime.checkpointers.checkpoint import resolve_checkpointer

    async with opened(resolve_checkpointer(checkpointer(url))) as store:
        found = {s: await store.load_latest(s) for s in sessions}
    return {s: cp.step if cp is not None else None for s, cp in found.items()}


def run_to_completion(url: str, durability: str, sessions: list[str]) -> None:
    proc = spawn(url, durability, sessions)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "DONE" in out


FINAL_STEP = 5 * ROUNDS - 1
# plan runs at steps 1, 6, ..., 196: the only steps a worker reports
LAST_PLAN_STEP = FINAL_STEP - 3
# Where a worker kills itself on cue: as right starts at step 3 (step 2, stored, half-fired the
# join), and as plan starts at step 11 (step 10 changed nothing, so check must stay skipped).
CUES = [("right@3", 2), ("plan@11", 10)]
KILL_POINTS = 20


def kill_during(proc: subprocess.Popen[str], session: str, step: int, rng: random.Random) -> None:
    """SIGKILL ``proc`` a random instant (0-5 ms) after ``session`` reaches ``step``: the kill
    lands anywhere in the steps that follow, inside node runs, checkpoint writes or commits."""
    assert proc.stdout is not None
    for line in proc.stdout:
        parts = line.split()
        if parts[:2] == ["AT", session] and int(parts[2]) >= step:
            time.sleep(rng.uniform(0.0, 0.005))
            break
    proc.send_signal(signal.SIGKILL)


def crash_repeatedly(
    url: str, durability: str, sessions: list[str], rng: random.Random
) -> list[tuple[str, int | None]]:
    """SIGKILL workers at random points until at least KILL_POINTS unfinished sessions were
    interrupted; sessions join one per process so they are at different depths when it dies. A last
    worker then finishes every session.

    Returns the kill points: (session, latest stored step right after the kill).
    """
    kill_points: list[tuple[str, int | None]] = []
    latest: dict[str, int | None] = dict.fromkeys(sessions)
    for cue, _ in CUES:
        proc = spawn(url, durability, sessions[:1], CRASH_TEST_SELF_KILL=cue)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, cue
        latest.update(trio.run(latest_steps, url, sessions[:1]))
        kill_points.append((sessions[0], latest[sessions[0]]))
    for attempt in range(40):
        if len(kill_points) >= KILL_POINTS:
            break
        active = [s for s in sessions[: attempt + 1] if latest[s] != FINAL_STEP]
        # A target must still have a plan step ahead of it to report, or the kill never comes.
        targets = [s for s in active if (latest[s] or 0) < LAST_PLAN_STEP]
        if not targets:
            continue
        target = rng.choice(targets)
        # Aim a short way ahead, so sessions take several crashes to finish.
        start = (latest[target] or 0) + 1
        aim = rng.randint(start, min(start + 50, LAST_PLAN_STEP))
        proc = spawn(url, durability, active, CRASH_TEST_PROGRESS="1")
        try:
            if wait_ready(proc):
                kill_during(proc, target, aim, rng)
        finally:
            proc.communicate(timeout=60)
        latest.update(trio.run(latest_steps, url, active))
        if proc.returncode == -signal.SIGKILL:
            kill_points += [(s, latest[s]) for s in active if latest[s] != FINAL_STEP]
    run_to_completion(url, durability, sessions)
    return kill_points


def check_against_reference(tmp_path: Path, url: str, sessions: list[str]) -> None:
    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    run_to_completion(reference_url, "sync", ["ref"])
    ref_latest, ref_stored = trio.run(history, reference_url, "ref")
    assert ref_latest.step == FINAL_STEP
    assert len(ref_stored) == FINAL_STEP + 1
    ref_texts = [text.replace('"ref"', '"S"') for text in ref_stored]
    for session in sessions:
        latest, stored = trio.run(history, url, session)
        assert latest.state == ref_latest.state
        assert latest.step == ref_latest.step
        texts = [text.replace(json.dumps(session), '"S"') for text in stored]
        assert len(texts) == len(ref_texts)  # no step missing, none stored twice
        assert texts == ref_texts


def check_cued_kills(kills: list[tuple[str, int | None]], session: str, durability: str) -> None:
    """The cued kills left the session where a resume must carry the join state and the gating
    (under ``durability="async"`` a write in flight may be lost, so the session may be behind)."""
    for (killed, stored), (cue, expected) in zip(kills, CUES, strict=False):
        assert killed == session, cue
        if durability == "sync":
            assert stored == expected, cue
        else:
            assert stored is not None, cue
            assert stored <= expected, cue


def seeded() -> random.Random:
    seed = int(os.environ.get("CRASH_TEST_SEED") or random.randrange(2**32))
    print(f"crash test seed: CRASH_TEST_SEED={seed}")
    return random.Random(seed)


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["sync", "async"])
def test_sqlite_sessions_survive_sigkill(tmp_path: Path, durability: str) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    sessions = [f"s{i}" for i in range(6)]
    kills = crash_repeatedly(url, durability, sessions, seeded())
    print(f"{len(kills)} kill points (session, stored step): {kills}")
    assert len(kills) >= KILL_POINTS, kills
    assert len({step for _, step in kills}) > KILL_POINTS // 2, kills  # spread over the run
    check_cued_kills(kills, "s0", durability)
    check_against_reference(tmp_path, url, sessions)


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_sessions_survive_sigkill(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    url = f"{postgres_url}#{pg_schema}"
    sessions = [f"s{i}" for i in range(6)]
    kills = crash_repeatedly(url, "sync", sessions, seeded())
    print(f"{len(kills)} kill points (session, stored step): {kills}")
    assert len(kills) >= KILL_POINTS, kills
    assert len({step for _, step in kills}) > KILL_POINTS // 2, kills
    check_cued_kills(kills, "s0", "sync")
    check_against_reference(tmp_path, url, sessions)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_processes_cannot_run_one_postgres_session(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    url = f"{postgres_url}#{pg_schema}"
    # Both start at once; paced nodes keep the winner busy for seconds, so the two surely overlap.
    procs = [spawn(url, "sync", ["shared"], CRASH_TEST_PACE="0.03") for _ in range(2)]
    deadline = time.monotonic() + 120
    loser = None
    while loser is None and time.monotonic() < deadline:
        for index, proc in enumerate(procs):
            if proc.poll() is not None:
                loser = index
                break
        time.sleep(0.01)
    assert loser is not None, "neither process finished"
    winner = procs[1 - loser]
    still_running = winner.poll() is None
    out_loser, err_loser = procs[loser].communicate(timeout=60)
    out_winner, err_winner = winner.communicate(timeout=180)
    assert procs[loser].returncode == 3, (out_loser, err_loser)
    assert "LEASED session 'shared' is being run by another process" in out_loser
    assert winner.returncode == 0, err_winner
    assert "DONE" in out_winner
    assert still_running  # the refusal came while the winner was running: it failed fast
    check_against_reference(tmp_path, url, ["shared"])
