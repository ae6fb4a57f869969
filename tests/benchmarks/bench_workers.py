"""Scale-out: sessions per second with 1, 2 and 4 ``treadle worker`` processes on one PostgreSQL
work queue, and claim latency (enqueue → the session's first step starting).

Run: ``python tests/benchmarks/bench_workers.py [--sessions 400] [--rounds 3] [--workers 1 2 4]
[--delay-ms 4] [--concurrency 8] [--postgres URL]``.

The graph is ``tests/worker_apps.py``: 20 steps (ten rounds of one node, then two in parallel),
each node awaiting a random 0..``--delay-ms`` ms (a stand-in for I/O: a call to a model or a
service), every step stored in PostgreSQL before the next (``durability="sync"``).

Throughput: N workers start and the benchmark waits until every one is up, listening and idle (its
first look at the queue done); then a batch of ``--sessions`` is enqueued in one transaction, so
all N hear of it at the same commit. The rate is the batch size over the server-side span from the
first claim to the last completion. Configurations are interleaved round by round; min/median/max
over the rounds. Each round also prints the CPU, in cores, that its workers, their server backends
and everything else on the machine used meanwhile (from ``/proc``; everything else includes
PostgreSQL's own background processes, this script's polling and whatever else runs on a shared
machine; a worker connection that the server ended during the round is not counted): the rates
follow how much of the two cores the others leave. The last figure, sessions per second of a core
spent by the workers and their backends, says whether N workers spend more per session than one
(contention) rather than how many cores they were left.

(The benchmark used to enqueue the batch before the workers started: with N > 1 the span then began
at the first worker's first claim and so included the other workers' start-up (imports,
connecting), which a single worker never paid. The default batch grew from 120 to 400 sessions for
a like reason: at the end of a batch fewer than N times ``--concurrency`` sessions are left to run,
and that tail weighs less in a longer batch.)

Claim latency: two workers run idle; sessions are enqueued one every ``--latency-interval``
seconds (0.25: well below what two workers complete, so this is the latency of an idle worker
waking, not of a backlog); for each, the time
from its queue row's ``created_at`` to its step 0 being stored (``steps.created_at``), which is the
moment its first step starts. Both clocks are this machine's. Median and p99.

What it measures: the whole path a deployment pays (claim, lease, step-by-step checkpoints,
outcome), with PostgreSQL on the same two cores as the workers. It does not measure a remote
server's round trips or more cores than two.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
import attrs
import trio

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

import worker_apps  # noqa: E402
from pg_fixtures import drop_schema  # noqa: E402
from worker_fleet import Fleet, connect  # noqa: E402

from treadle import AppRunner  # noqa: E402


@attrs.frozen
class Round:
    """One throughput run: its rate, and the CPU (in cores) its workers, their server backends
    and everything else on the machine used meanwhile (Linux ``/proc``; ``nan`` elsewhere)."""

    rate: float
    workers_cpu: float
    backends_cpu: float
    others_cpu: float

    @property
    def per_core(self) -> float:
        """Sessions per second of a core spent by the workers and their backends."""
        spent = self.workers_cpu + self.backends_cpu
        return self.rate / spent if spent > 0 else math.nan


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone, or no /proc
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return math.nan
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user .. steal


def throughput(url: str, workers: int, sessions: int, delay_ms: float, concurrency: int) -> Round:
    schema = f"workers_bench_{uuid.uuid4().hex[:8]}"  # not bench_%: bench_checkpoint.py drops those
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(url, schema, Path(tmp), delay_ms=delay_ms, concurrency=concurrency)
        try:
            trio.run(lambda: fleet.prepare(0, audit=False))
            fleet.start(workers)
            fleet.wait_idle()  # all N up, listening and idle: none starts late
            worker_pids = [w.proc.pid for w in fleet.workers]
            # This fleet's connections only (other processes may run workers on the server).
            names = [f"treadle worker {w.owner}"[:63] for w in fleet.workers]
            names += [f"{name} listen"[:63] for name in names]
            with connect(url, schema) as conn:
                backend_pids = [
                    pid
                    for (pid,) in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = ANY(%s)",
                        (names,),
                    )
                ]
            cpu = (_cpu_seconds(worker_pids), _cpu_seconds(backend_pids))
            busy, start = _machine_busy_seconds(), time.monotonic()
            fleet.enqueue_batch(sessions)
            fleet.wait_for(sessions, timeout=600)
            wall = time.monotonic() - start
            used = [(_cpu_seconds(worker_pids) - cpu[0]), (_cpu_seconds(backend_pids) - cpu[1])]
            others = _machine_busy_seconds() - busy - sum(used)
            with connect(url, schema) as conn:
                row = conn.execute(
                    "SELECT extract(epoch FROM max(updated_at) - min(claimed_at)) "
                    "FROM session_queue"
                ).fetchone()
            assert row is not None
            return Round(sessions / float(row[0]), used[0] / wall, used[1] / wall, others / wall)
        finally:
            fleet.stop()
            drop_schema(url, schema)


def claim_latency(url: str, sessions: int, delay_ms: float, interval: float) -> list[float]:
    schema = f"workers_bench_{uuid.uuid4().hex[:8]}"  # not bench_%: bench_checkpoint.py drops those
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(url, schema, Path(tmp), delay_ms=delay_ms)
        try:
            trio.run(lambda: fleet.prepare(0, audit=False))
            fleet.start(2)
            fleet.wait_idle()  # both up, listening and idle

            async def enqueue() -> None:
                async with AppRunner(worker_apps.build(0), checkpointer=fleet.url) as runner:
                    for i in range(sessions):
                        await runner.enqueue(f"s{i}", worker_apps.initial(i))
                        await trio.sleep(interval)

            trio.run(enqueue)
            fleet.wait_for(sessions, timeout=600)
            with connect(url, schema) as conn:
                rows = conn.execute(
                    "SELECT s.created_at - extract(epoch FROM q.created_at) * 1000 "
                    "FROM session_queue q JOIN steps s USING (session_id) WHERE s.step = 0"
                ).fetchall()
            return sorted(float(ms) for (ms,) in rows)
        finally:
            fleet.stop()
            drop_schema(url, schema)


def spread(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--delay-ms", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-sessions", type=int, default=60)
    parser.add_argument("--latency-interval", type=float, default=0.25)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "TREADLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.1f}")
    rates: dict[int, list[float]] = {n: [] for n in args.workers}
    for round_ in range(args.rounds):
        for n in args.workers:
            run = throughput(args.postgres, n, args.sessions, args.delay_ms, args.concurrency)
            rates[n].append(run.rate)
            print(
                f"round {round_ + 1}: {n} worker(s): {run.rate:.1f} sessions/s; CPU in cores: "
                f"workers {run.workers_cpu:.2f}, their backends {run.backends_cpu:.2f}, "
                f"everything else {run.others_cpu:.2f}; "
                f"{run.per_core:.0f} sessions per second of "
                "a core spent by the workers and their backends",
                flush=True,
            )
    latencies = (
        claim_latency(args.postgres, args.latency_sessions, args.delay_ms, args.latency_interval)
        if args.latency_sessions
        else []
    )
    print(f"load after: {os.getloadavg()[0]:.1f}")
    print()
    print(
        f"| workers | sessions/s min / median / max ({args.rounds} rounds) | vs 1 worker (medians) |"
    )
    print("| ---: | ---: | ---: |")
    base = statistics.median(rates[args.workers[0]])
    for n in args.workers:
        median = statistics.median(rates[n])
        print(f"| {n} | {spread(rates[n])} | {median / base:.2f}x |")
    if not latencies:
        return
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    print()
    print(
        f"claim latency over {len(latencies)} sessions: median {statistics.median(latencies):.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(latencies):.1f} ms"
    )


if __name__ == "__main__":
    main()
