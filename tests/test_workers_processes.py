"""Scale-out acceptance with real ``treadle worker`` processes on a real PostgreSQL server: three
workers run 300 queued sessions of a 20-step graph to the single-process results, each stored
history one lineage with every step stored once by one worker; the same with a worker SIGKILLed at
a drawn point (its sessions resumed elsewhere within ``lease_ttl`` + 5 s); a worker stopped with
SIGTERM drains and exits 0 within 10 s while others finish its sessions; a server restart mid-batch.

The default run kills at one drawn point; ``TREADLE_WORKER_KILL_RUNS=5`` runs five (separate runs,
points drawn from seeds 0..4):
``TREADLE_WORKER_KILL_RUNS=5 python -m pytest tests/test_workers_processes.py -k sigkill``.
"""

from __future__ import annotations

import datetime
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from test_checkpoint_pg_restart import restart_server, server_left_running  # noqa: F401
from worker_fleet import SCRIPT, SIGKILL, SIGTERM, Fleet

pytest_plugins = ["pg_fixtures"]
pytestmark = pytest.mark.postgres

SESSIONS = 300
LEASE_TTL = 10.0
KILL_RUNS = int(os.environ.get("TREADLE_WORKER_KILL_RUNS", "1"))


@pytest.fixture
def fleet(postgres_url: str, pg_schema: str, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(postgres_url, pg_schema, tmp_path, lease_ttl=LEASE_TTL)
    yield fleet
    fleet.stop()


def running_on(fleet: Fleet, owner: str) -> set[str]:
    return {sid for sid, row in fleet.statuses().items() if row[0] == "running" and row[1] == owner}


@pytest.mark.slow
def test_three_workers_run_300_sessions_to_the_single_process_results(fleet: Fleet) -> None:
    trio.run(fleet.prepare, SESSIONS)
    fleet.start(3)
    fleet.wait_for(SESSIONS, timeout=240)
    trio.run(fleet.check_results, SESSIONS)
    lineage = fleet.check_lineages(SESSIONS)
    # Each session ran on one worker from start to end (nobody died), and all three took part.
    assert all(len(set(chain)) == 1 for chain in lineage.values())
    assert len({chain[0] for chain in lineage.values()}) == 3
    fleet.stop()
    assert [w.proc.returncode for w in fleet.workers] == [0, 0, 0]


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(KILL_RUNS))
def test_a_sigkilled_workers_sessions_are_resumed_elsewhere(fleet: Fleet, seed: int) -> None:
    draw = random.Random(seed)
    kill_after = draw.randint(20, SESSIONS * 2 // 3)
    trio.run(fleet.prepare, SESSIONS)
    workers = fleet.start(3)
    victim = workers[draw.randrange(3)]
    fleet.wait_for(kill_after, timeout=240)
    killed_at = fleet.server_now()  # just before: the limit below is measured conservatively
    victim.signal(SIGKILL)
    victim.wait(10)
    fleet.wait_for(SESSIONS, timeout=240)
    trio.run(fleet.check_results, SESSIONS)
    lineage = fleet.check_lineages(SESSIONS)
    statuses = fleet.statuses()
    # The sessions the victim was running: another worker found them and put them back.
    orphans = {sid for sid, row in statuses.items() if row[4] and victim.owner in row[4]}
    assert orphans, "the victim held no session when it was killed"
    limit = datetime.timedelta(seconds=LEASE_TTL + 5)
    last = max(statuses[sid][3] for sid in orphans) - killed_at
    print(f"seed {seed}: killed after {kill_after} completed; {len(orphans)} sessions resumed, ")
    print(f"the last claimed again {last.total_seconds():.2f} s after the kill")
    for sid in orphans:
        _, owner, attempts, claimed_at, last_error = statuses[sid]
        assert owner != victim.owner
        assert attempts == 1
        assert last_error == f"worker {victim.owner} stopped while running it"
        assert claimed_at - killed_at <= limit, (sid, claimed_at - killed_at)
        # The victim's steps, then the new owner's: one lineage, handed over once.
        chain = lineage[sid]
        changes = sum(1 for a, b in itertools.pairwise(chain) if a != b)
        assert changes <= 1, chain


@pytest.mark.slow
def test_sigterm_drains_a_worker_and_others_finish_its_sessions(fleet: Fleet) -> None:
    count = 60
    trio.run(fleet.prepare, count)
    first, *_ = fleet.start(3)
    fleet.wait_for(10, timeout=120)
    held = running_on(fleet, first.owner)
    assert held
    sent = time.monotonic()
    first.signal(SIGTERM)
    code = first.wait(10)  # raises if it takes longer
    took = time.monotonic() - sent
    assert code == 0, first.output()
    assert took < 10
    assert "SIGTERM: draining" in first.output()
    assert "handed back" in first.output().splitlines()[-1]
    assert running_on(fleet, first.owner) == set()  # nothing left behind as running
    fleet.wait_for(count, timeout=180)
    trio.run(fleet.check_results, count)
    fleet.check_lineages(count)
    statuses = fleet.statuses()
    # Handed back without a fault: no attempt counted.
    assert {statuses[sid][2] for sid in held} == {0}
    assert any(statuses[sid][1] != first.owner for sid in held)


@pytest.mark.slow
@pytest.mark.pg_restart
def test_a_server_restart_mid_batch_and_the_batch_completes(
    fleet: Fleet,
    server_left_running: None,  # noqa: F811
) -> None:
    count = 60
    trio.run(fleet.prepare, count)
    fleet.start(2)
    fleet.wait_for(15, timeout=120)
    restart_server()
    fleet.wait_for(count, timeout=180)
    trio.run(fleet.check_results, count)
    # A save whose answer the restart swallowed may be written again, by the same worker.
    fleet.check_lineages(count, once=False)
    for worker in fleet.workers:
        assert worker.proc.poll() is None, worker.output()
    fleet.stop()
    assert [w.proc.returncode for w in fleet.workers] == [0, 0]
    # The restart did cut steps short (they were not stored, and ran again after reconnecting).
    assert "was not stored" in fleet.logs()


def test_submit_and_sessions_list_from_the_command_line(fleet: Fleet) -> None:
    def treadle(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=fleet.workdir,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
        )

    for i in (1, 2):
        done = treadle(
            "submit", "worker_apps:app", "--session", f"j{i}", "--input",
            f'{{"extra": {{"seed": {i}}}}}', "--checkpointer", fleet.url,
        )  # fmt: skip
        assert (done.returncode, done.stdout) == (0, f"queued session 'j{i}'\n"), done.stderr
    again = treadle("submit", "worker_apps:app", "--session", "j1", "--checkpointer", fleet.url)
    assert again.stdout == "session 'j1' is already queued; left as it is\n"
    listed = treadle("sessions", "list", "--checkpointer", fleet.url)
    assert listed.stdout.splitlines() == [
        "j1  pending  owner=-  attempts=0",
        "j2  pending  owner=-  attempts=0",
    ]
    ran = treadle(
        "worker", "worker_apps:app", "--checkpointer", fleet.url, "--until-idle",
        "--poll-interval", "0.5",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    owner = ran.stdout.split()[1]
    assert f"worker {owner} stopped: claimed 2, completed 2" in ran.stdout
    listed = treadle("sessions", "list", "--checkpointer", fleet.url)
    assert listed.stdout.splitlines() == [
        f"j1  completed  owner={owner}  attempts=0",
        f"j2  completed  owner={owner}  attempts=0",
    ]
    wrong = treadle("submit", "worker_apps:app", "--session", "x", "--checkpointer", "memory://")
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("treadle: enqueue needs a PostgreSQL checkpointer")
    assert len(wrong.stderr.splitlines()) == 1


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "scale_out.py"


def test_the_scale_out_example_runs_two_workers_through_a_failover(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    env = {**os.environ, "TREADLE_POSTGRES_URL": f"{postgres_url}?schema={pg_schema}"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, env=env,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "queued 24 sessions of 6 steps",
        "two workers started",
        "first worker killed",
        "all 24 sessions completed within 15 s of the kill: True",
        "second worker exit code after SIGTERM: 0",
        "the first worker's unfinished sessions were resumed by the second: True",
        "every result equals a single-process run, every history is steps 0..6: True",
    ]


def test_a_second_ctrl_c_stops_a_draining_worker_at_once(fleet: Fleet) -> None:
    trio.run(fleet.prepare, 40)
    # Long steps (nodes wait up to 5 s; the longest of eight running sessions almost surely more
    # than 1 s): the first Ctrl-C leaves the worker draining while the second arrives.
    fleet.delay_ms = 5000
    (worker,) = fleet.start(1)
    # Every slot mid-run: eight sessions have stored a step and are in the next one.
    while fleet.sessions_past_step(0) < 8:
        time.sleep(0.05)
    worker.signal(signal.SIGINT)
    while "Ctrl-C: draining" not in worker.output():
        time.sleep(0.05)
    worker.signal(signal.SIGINT)
    assert worker.wait(10) == 130
    assert worker.output().splitlines()[-1] == "treadle: interrupted"
    # Cancelled mid-step: its sessions were handed back (not left running for a failover).
    assert running_on(fleet, worker.owner) == set()
