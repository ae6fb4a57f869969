"""Real ``treadle worker`` processes on one PostgreSQL schema, for the acceptance tests and the
worker benchmark: start, signal and wait for them; enqueue a batch; watch the queue; audit who
stored each step; compare every final state with a single-process run.

The audit is a trigger on ``steps`` that records, for every row written, the writing connection's
``application_name``, which a worker sets to ``treadle worker <owner>``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import attrs
import psycopg
import trio
import worker_apps

from treadle import AppRunner, VersionedState
from treadle.runtime.workers import queue

TESTS = Path(__file__).resolve().parent
SCRIPT = Path(sys.executable).parent / "treadle"

AUDIT = """
CREATE TABLE IF NOT EXISTS step_writes (
    session_id TEXT NOT NULL, step BIGINT NOT NULL, writer TEXT NOT NULL, op TEXT NOT NULL
);
CREATE OR REPLACE FUNCTION {schema}.audit_step() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.step_writes VALUES
        (NEW.session_id, NEW.step, current_setting('application_name'), TG_OP);
    RETURN NEW;
END $$;
CREATE TRIGGER audit_step AFTER INSERT OR UPDATE ON steps
    FOR EACH ROW EXECUTE FUNCTION {schema}.audit_step();
"""


def connect(base_url: str, schema: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(base_url, autocommit=True)
    conn.execute(f'SET search_path TO "{schema}"'.encode())
    return conn


@attrs.define
class WorkerProc:
    proc: subprocess.Popen[str]
    owner: str
    log: Path

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text()


@attrs.define
class Fleet:
    """Worker processes of ``worker_apps:app`` on ``base_url``'s ``schema``."""

    base_url: str
    schema: str
    workdir: Path
    lease_ttl: float = 10.0
    concurrency: int = 8
    delay_ms: float = 4.0
    workers: list[WorkerProc] = attrs.field(factory=list)

    @property
    def url(self) -> str:
        return f"{self.base_url}?schema={self.schema}"

    async def prepare(self, count: int, *, audit: bool = True) -> None:
        """Create the schema (by opening it), install the audit trigger, enqueue ``count``
        sessions ``s0…`` of :func:`worker_apps.initial`."""
        async with AppRunner(worker_apps.build(0), checkpointer=self.url) as runner:
            if audit:
                with connect(self.base_url, self.schema) as conn:
                    conn.execute(AUDIT.format(schema=f'"{self.schema}"').encode())
            for i in range(count):
                await runner.enqueue(f"s{i}", worker_apps.initial(i))

    def enqueue_batch(self, count: int) -> None:
        """Enqueue sessions ``s0…`` of :func:`worker_apps.initial` in one transaction: the workers
        hear one notification, at its commit, and find the whole batch pending."""
        app = worker_apps.build(0).graph_metadata().graph_hash
        with connect(self.base_url, self.schema) as conn, conn.transaction():
            for i in range(count):
                queue.enqueue(conn, self.schema, f"s{i}", app, worker_apps.initial(i), 0)

    def start(self, count: int) -> list[WorkerProc]:
        started = [self._spawn(len(self.workers) + i) for i in range(count)]
        for worker in started:
            worker.owner = _wait_for_owner(worker)
        self.workers.extend(started)
        return started

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait until every started worker has looked at the queue once and is waiting (its
        connection idle after its first claim; it listens from before it prints its name)."""
        names = [f"treadle worker {w.owner}"[:63] for w in self.workers]
        deadline = time.monotonic() + timeout
        with connect(self.base_url, self.schema) as conn:
            while True:
                idle = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s) "
                    "AND state = 'idle' AND query NOT LIKE 'SELECT pg_advisory_lock%%' "
                    "AND query NOT LIKE 'LISTEN%%'",
                    (names,),
                ).fetchone()
                if idle is not None and idle[0] == len(names):
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"workers not idle after {timeout} s:\n" + self.logs())
                time.sleep(0.02)

    def _spawn(self, index: int) -> WorkerProc:
        log = self.workdir / f"worker-{index}.log"
        env = {
            **os.environ,
            "PYTHONPATH": str(TESTS),
            "PYTHONUNBUFFERED": "1",
            "WORKER_APP_DELAY_MS": str(self.delay_ms),
        }
        with log.open("w") as out:
            proc = subprocess.Popen(
                [
                    str(SCRIPT),
                    "worker",
                    "worker_apps:app",
                    "--checkpointer",
                    self.url,
                    "--concurrency",
                    str(self.concurrency),
                    "--lease-ttl",
                    str(self.lease_ttl),
                    "--poll-interval",
                    "1",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=self.workdir,
            )
        return WorkerProc(proc, "", log)

    def stop(self, timeout: float = 30) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(timeout)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.wait(10)

    # -- the queue ---------------------------------------------------------------------------------

    def statuses(self) -> dict[str, tuple[str, str | None, int, Any, str | None]]:
        with connect(self.base_url, self.schema) as conn:
            rows = conn.execute(
                "SELECT session_id, status, owner, attempts, claimed_at, last_error "
                "FROM session_queue"
            ).fetchall()
        return {row[0]: row[1:] for row in rows}

    def counts(self) -> dict[str, int]:
        with connect(self.base_url, self.schema) as conn:
            rows = conn.execute("SELECT status, count(*) FROM session_queue GROUP BY 1").fetchall()
        return {status: int(n) for status, n in rows}

    def wait_for(self, completed: int, timeout: float) -> float:
        """Wait until ``completed`` sessions are; the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout
        while self._completed() < completed:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.counts()} after {timeout} s; logs:\n" + self.logs())
            time.sleep(0.1)
        return time.monotonic() - start

    def sessions_past_step(self, step: int) -> int:
        """How many sessions have stored a step after ``step``."""
        with connect(self.base_url, self.schema) as conn:
            row = conn.execute(
                "SELECT count(DISTINCT session_id) FROM steps WHERE step > %s", (step,)
            ).fetchone()
        return int(row[0]) if row else 0

    def _completed(self) -> int:
        try:
            return self.counts().get("completed", 0)
        except psycopg.OperationalError:
            return -1  # the server is restarting (a test of another checkout may do that)

    def logs(self) -> str:
        return "\n".join(f"--- {w.owner or w.log.name}\n{w.output()[-3000:]}" for w in self.workers)

    def server_now(self) -> Any:
        with connect(self.base_url, self.schema) as conn:
            row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        return row[0]

    # -- the checks --------------------------------------------------------------------------------

    def check_lineages(self, count: int, *, once: bool = True) -> dict[str, list[str]]:
        """Every session's stored steps are 0..STEPS, each stored by one worker (``once``: and
        written once); returns, per session, the writer of each step."""
        with connect(self.base_url, self.schema) as conn:
            rows = conn.execute("SELECT session_id, step, writer, op FROM step_writes").fetchall()
        writers: dict[tuple[str, int], set[str]] = defaultdict(set)
        writes: dict[tuple[str, int], int] = defaultdict(int)
        for sid, step, writer, _op in rows:
            writers[sid, step].add(writer)
            writes[sid, step] += 1
        owners = {f"treadle worker {w.owner}"[:63] for w in self.workers}
        lineage: dict[str, list[str]] = {}
        for i in range(count):
            sid = f"s{i}"
            chain = []
            for step in range(worker_apps.STEPS + 1):
                found = writers.get((sid, step), set())
                assert len(found) == 1, (sid, step, found)
                (writer,) = found
                assert writer in owners, (sid, step, writer, owners)
                if once:
                    assert writes[sid, step] == 1, (sid, step, writes[sid, step])
                chain.append(writer)
            lineage[sid] = chain
        assert {sid for sid, _ in writers} == set(lineage)
        return lineage

    async def check_results(self, count: int) -> None:
        """Every session completed, with the final state of a single-process run."""
        expected = await reference(count)
        async with AppRunner(worker_apps.build(0), checkpointer=self.url) as runner:
            for sid, state in expected.items():
                stored = await runner.checkpoints.load_latest(sid)
                assert stored is not None, sid
                assert stored.step == worker_apps.STEPS, (sid, stored.step)
                assert stored.state == state, sid
        statuses = self.statuses()
        assert {sid: row[0] for sid, row in statuses.items()} == dict.fromkeys(
            expected, "completed"
        )


async def reference(count: int) -> dict[str, VersionedState]:
    """Each session's final state, run in one process in memory (no node delays)."""
    found = {}
    async with AppRunner(worker_apps.build(0)) as runner:
        for i in range(count):
            await runner.create_session(f"s{i}", worker_apps.initial(i))
            found[f"s{i}"] = await runner.run_until_complete(f"s{i}")
    return found


def _wait_for_owner(worker: WorkerProc, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        first = worker.output().partition("\n")
        if first[1]:
            words = first[0].split()
            assert words[:1] == ["worker"], worker.output()
            return words[1]
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited with {worker.proc.returncode}: {worker.output()}")
        time.sleep(0.05)
    raise AssertionError(f"worker did not start: {worker.output()}")


def run_sync(fn: Any, *args: Any) -> Any:
    """``trio.run`` for the sync tests that drive processes."""
    return trio.run(fn, *args)


SIGKILL = signal.SIGKILL
SIGTERM = signal.SIGTERM
