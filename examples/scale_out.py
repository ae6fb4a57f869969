"""Scale-out: two worker processes share one PostgreSQL work queue; one is killed half-way and
the other resumes its sessions from their last stored step, to the same results.

Needs a PostgreSQL server: ``TREADLE_POSTGRES_URL`` (or ``DATABASE_URL``) names it, for example
``TREADLE_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test python examples/scale_out.py``.
The workers are ``python -m treadle worker scale_out:app`` (this file is the module), the same
command as on any other machine. Each run uses a fresh batch of session ids.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import trio

from treadle import (
    END,
    START,
    AppRunner,
    GraphBuilder,
    NodeContext,
    NodePartial,
    QueueRow,
    StateSnapshot,
    VersionedState,
)

JOBS = 24
STEPS = 6


async def fetch(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    await trio.sleep(0.02)  # stands for a call to a service
    total = snapshot.extra.get("total", 0) + snapshot.extra["job"] * ctx.step
    return NodePartial(extra={"total": total, "steps": snapshot.extra.get("steps", 0) + 1})


def more(snapshot: StateSnapshot) -> str:
    return END if snapshot.extra["steps"] >= STEPS else "fetch"


app = (
    GraphBuilder()
    .add_node("fetch", fetch)
    .add_edge(START, "fetch")
    .add_conditional_edges("fetch", more, path_map=["fetch", END])
    .compile()
)


def start_worker(url: str) -> tuple[subprocess.Popen[str], str]:
    """A worker process, and its name in the queue (printed on its first line)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "treadle", "worker", "scale_out:app", "--checkpointer", url,
         "--concurrency", "4", "--poll-interval", "1"],
        cwd=Path(__file__).resolve().parent,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()[1]


async def batch_rows(runner: AppRunner, ids: list[str]) -> dict[str, QueueRow]:
    return {sid: row for sid, row in (await runner.queued_sessions()).items() if sid in ids}


async def wait_until(runner: AppRunner, ids: list[str], done: Callable[[list[str]], bool]) -> None:
    """Look at the batch's queue statuses every 0.1 s until ``done(statuses)``."""
    while True:
        if done([row.status for row in (await batch_rows(runner, ids)).values()]):
            return
        await trio.sleep(0.1)


async def main() -> None:
    url = os.environ.get("TREADLE_POSTGRES_URL") or os.environ.get("DATABASE_URL")
    if not url:
        sys.exit(
            "set TREADLE_POSTGRES_URL to a PostgreSQL server, e.g. postgresql://localhost/treadle"
        )
    batch = uuid.uuid4().hex[:6]
    ids = [f"{batch}-{i}" for i in range(JOBS)]
    async with AppRunner(app, checkpointer=url) as runner:
        for i, sid in enumerate(ids):
            await runner.enqueue(sid, VersionedState(extra={"job": i}), priority=i % 2)
        print(f"queued {JOBS} sessions of {STEPS} steps")

        (first, first_name), (second, second_name) = start_worker(url), start_worker(url)
        print("two workers started")
        await wait_until(runner, ids, lambda statuses: statuses.count("completed") >= 6)
        first.send_signal(signal.SIGKILL)  # no cleanup at all: its connection simply ends
        first.wait()
        print("first worker killed")
        killed = time.monotonic()
        await wait_until(runner, ids, lambda statuses: set(statuses) == {"completed"})
        print(
            f"all {JOBS} sessions completed within 15 s of the kill: {time.monotonic() - killed < 15}"
        )
        second.send_signal(signal.SIGTERM)  # drains: nothing is running, so it exits at once
        print(f"second worker exit code after SIGTERM: {second.wait(timeout=30)}")

        # The sessions the first worker was running when it died: the second found them (its
        # connection was gone) and put them back, recording why, then resumed them.
        rows = await batch_rows(runner, ids)
        orphans = [sid for sid, row in rows.items() if first_name in (row.last_error or "")]
        resumed = all(rows[sid].owner == second_name and rows[sid].attempts == 1 for sid in orphans)
        print(
            f"the first worker's unfinished sessions were resumed by the second: {bool(orphans) and resumed}"
        )
        same = True
        for i, sid in enumerate(ids):
            stored = await runner.checkpoints.load_latest(sid)
            alone = await app.invoke(VersionedState(extra={"job": i}))
            history = await runner.get_state_history(sid)
            same &= stored is not None and stored.state == alone
            same &= [info.step for info in history] == list(range(STEPS + 1))
        print(
            f"every result equals a single-process run, every history is steps 0..{STEPS}: {same}"
        )


if __name__ == "__main__":
    trio.run(main)
