"""Many sessions one after another on one runner: memory, tasks and close time stay flat.

Run: ``python tests/benchmarks/bench_sessions.py [--sessions 100000] [--batch 10000] [--mode M]``.
Each session runs the 10-step two-node loop of ``probe_e_seq_sessions.py``; per batch it prints ms
per session, current RSS and the tasks alive. Modes: ``close`` calls ``close_session`` after each
run; ``ttl`` relies on ``idle_session_ttl=0`` (retired by the runner as soon as it is idle);
``open`` keeps every session open (``idle_session_ttl=None, max_idle_sessions=None``), the
behaviour before retirement.
The in-memory checkpointer keeps each session's latest checkpoint, so with ``--ckpt memory`` the
store itself grows; ``--ckpt none`` (``autosave=False``) measures the runner alone. ``--ckpt
postgres`` stores every step on PostgreSQL (``--postgres URL``, default
``$TREADLE_TEST_POSTGRES_URL`` or the local server) in a schema of its own, dropped at the end:
each open session holds a lease, which closing the runner gives up.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
import trio
import trio.lowlevel

from treadle import END, START, AppRunner, GraphBuilder, NodePartial, VersionedState

STEPS = 10


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def tasks_alive() -> int:
    count, stack = 0, [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def build() -> Any:
    async def step(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial(extra={"counter": snapshot.extra["counter"] + 1})

    def route(snapshot: Any) -> str:
        return END if snapshot.extra["counter"] >= STEPS else "a"

    return (
        GraphBuilder()
        .add_node("a", step)
        .add_node("b", step)
        .add_edge(START, "a")
        .add_edge("a", "b")
        .add_conditional_edges("b", route, path_map=["a", END])
        .compile()
    )


async def main(sessions: int, batch: int, mode: str, ckpt: str, url: str) -> None:
    ttl = {"close": None, "ttl": 0.0, "open": None}[mode]
    cap = None if mode == "open" else 1000
    store: Any = None
    if ckpt == "postgres":
        from _pg_schemas import schema_name

        from treadle.runtime.checkpointers import PostgresCheckpointer

        store = PostgresCheckpointer(url, schema=schema_name())
    async with AppRunner(
        build(),
        checkpointer=store,
        autosave=ckpt != "none",
        idle_session_ttl=ttl,
        max_idle_sessions=cap,
    ) as runner:
        started = time.perf_counter()
        for i in range(sessions):
            sid = f"s{i}"
            await runner.create_session(sid, VersionedState(extra={"counter": 0}))
            await runner.run_until_complete(sid)
            if mode == "close":
                await runner.close_session(sid)
            if (i + 1) % batch == 0:
                await trio.lowlevel.checkpoint()  # let a retiring session's actors finish
                now = time.perf_counter()
                row = {
                    "sessions": i + 1,
                    "ms_per_session": round((now - started) / batch * 1e3, 3),
                    "rss_mib": round(rss_mib(), 1),
                    "tasks": tasks_alive(),
                    "open_sessions": runner.statistics().sessions,
                    "load1": os.getloadavg()[0],
                }
                print(json.dumps(row), flush=True)
                started = time.perf_counter()
        closing = time.perf_counter()
    print(json.dumps({"runner_close_s": round(time.perf_counter() - closing, 4)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--mode", choices=["close", "ttl", "open"], default="close")
    parser.add_argument("--ckpt", choices=["memory", "postgres", "none"], default="none")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "TREADLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    try:
        trio.run(main, args.sessions, args.batch, args.mode, args.ckpt, args.postgres)
    finally:
        if args.ckpt == "postgres":
            from _pg_schemas import drop_run_schemas

            drop_run_schemas(args.postgres)
