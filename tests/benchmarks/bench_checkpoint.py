"""Checkpointing throughput: a 2-node loop (A -> B -> A ...) of 1,000 supersteps, each node adding
one to a counter, run by ``AppRunner`` with every checkpointer and durability mode.

Run: ``python tests/benchmarks/bench_checkpoint.py [steps] [--repeats N] [--postgres URL] [--cpu N]
[--langgraph PYTHON]``. ``--cpu N`` pins the whole benchmark process (the Trio thread and every
worker thread) to CPU ``N``, as a deployment might with ``taskset -c N``. ``--langgraph PYTHON`` adds
the same loop in LangGraph with its SQLite saver (``langgraph_loop.py``, run by ``PYTHON``, an
interpreter that has LangGraph installed) to every round, and the ratio of the two ``sync`` rates
round by round: the comparison that holds however fast the machine is that day.
Configurations are interleaved round by round (the machine is shared and its speed drifts); the
table shows the median and best steps/s over the repeats. PostgreSQL rows are included when the
server at ``--postgres`` (default ``TREADLE_TEST_POSTGRES_URL`` or the local test server) answers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
import trio
from _pg_schemas import drop_run_schemas, schema_name

# After the path setup:
from treadle import END, START, AppRunner, GraphBuilder, NodePartial, VersionedState
from treadle.runtime.checkpointers import PostgresCheckpointer, SQLiteCheckpointer


def loop_app(steps: int) -> Any:
    async def a(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial(extra={"counter": snapshot.extra.get("counter", 0) + 1})

    async def b(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial(extra={"counter": snapshot.extra["counter"] + 1})

    def again(snapshot: Any) -> str:
        return END if snapshot.extra["counter"] >= steps else "a"

    return (
        GraphBuilder()
        .add_node("a", a)
        .add_node("b", b)
        .add_edge(START, "a")
        .add_edge("a", "b")
        .add_conditional_edges("b", again, path_map=["a", END])
        .compile()
    )


async def one_run(app: Any, steps: int, checkpointer: Any, durability: str) -> float:
    """Seconds for one whole session of ``steps`` supersteps (runner start and close excluded)."""
    autosave = durability != "off"
    durability = durability if autosave else "sync"
    async with AppRunner(
        app, checkpointer=checkpointer, durability=durability, autosave=autosave
    ) as runner:
        await runner.create_session("bench", VersionedState())
        started = time.perf_counter()
        final = await runner.run_until_complete("bench")
        # "async" and "exit" owe their writes until flushed: count them in.
        await runner.checkpoints.flush()
        elapsed = time.perf_counter() - started
    assert final.extra["counter"] == steps, final.extra
    return elapsed


def configurations(folder: Path, pg_url: str | None) -> list[tuple[str, Callable[[], Any], str]]:
    def sqlite() -> Any:
        return SQLiteCheckpointer(folder / f"{uuid.uuid4().hex}.db")

    configs: list[tuple[str, Callable[[], Any], str]] = [
        ("no checkpoints", lambda: None, "off"),
        ("in-memory sync", lambda: None, "sync"),
        ("SQLite sync", sqlite, "sync"),
        ("SQLite async", sqlite, "async"),
        ("SQLite exit", sqlite, "exit"),
    ]
    if pg_url is not None:

        def postgres() -> Any:
            return PostgresCheckpointer(pg_url, schema=schema_name())

        # The same server with synchronous_commit=off for this connection (libpq options): a
        # server crash may then lose the last ~0.6 s of acknowledged commits, never corrupt.
        relaxed = pg_url + ("&" if "?" in pg_url else "?") + "options=-csynchronous_commit%3Doff"

        def postgres_relaxed() -> Any:
            return PostgresCheckpointer(relaxed, schema=schema_name())

        configs += [
            ("PostgreSQL sync", postgres, "sync"),
            ("PostgreSQL async", postgres, "async"),
            ("PostgreSQL sync, no fsync wait", postgres_relaxed, "sync"),
        ]
    return configs


def _postgres_url(url: str) -> str | None:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            pass
    except Exception as exc:
        print(f"(PostgreSQL skipped: {exc})".splitlines()[0])
        return None
    return url


def langgraph_round(python: str, steps: int) -> tuple[dict[str, float], dict[str, str]]:
    """One run of the loop in LangGraph per durability: seconds by durability, and its versions."""
    script = Path(__file__).with_name("langgraph_loop.py")
    done = subprocess.run(
        [python, str(script), str(steps), "--durability", *LANGGRAPH_DURABILITIES],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{python} {script.name} failed:\n{done.stderr.strip()}")
    report = json.loads(done.stdout)
    return report["seconds"], report["versions"]


LANGGRAPH_DURABILITIES = ("sync", "async")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", nargs="?", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "TREADLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    parser.add_argument(
        "--langgraph",
        metavar="PYTHON",
        default=None,
        help="an interpreter with LangGraph installed: add its SQLite saver to every round",
    )
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # before any thread starts: they all inherit it
    pg_url = _postgres_url(args.postgres) if args.postgres else None
    app = loop_app(args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        configs = configurations(Path(tmp), pg_url)
        timings: dict[str, list[float]] = {name: [] for name, _, _ in configs}
        versions: dict[str, str] = {}
        try:
            for _ in range(args.repeats):
                for name, make, durability in configs:
                    seconds = trio.run(one_run, app, args.steps, make(), durability)
                    timings[name].append(seconds)
                if args.langgraph is not None:
                    by_durability, versions = langgraph_round(args.langgraph, args.steps)
                    for durability, seconds in by_durability.items():
                        timings.setdefault(f"LangGraph SQLite {durability}", []).append(seconds)
        finally:
            if pg_url is not None:
                drop_run_schemas(pg_url)
    pinned = f", pinned to CPU {args.cpu}" if args.cpu is not None else ""
    print(f"{args.steps}-step 2-node loop, {args.repeats} interleaved repeats{pinned} (steps/s)")
    print(f"{'configuration':<32} {'median':>8} {'best':>8}")
    for name, seconds in timings.items():
        median = args.steps / statistics.median(seconds)
        best = args.steps / min(seconds)
        print(f"{name:<32} {median:>8.0f} {best:>8.0f}")
    if versions:
        ratios = [
            theirs / ours
            for ours, theirs in zip(
                timings["SQLite sync"], timings["LangGraph SQLite sync"], strict=True
            )
        ]
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        named = ", ".join(f"{name} {version}" for name, version in versions.items())
        print(
            f"SQLite sync, treadle over LangGraph ({named}), round by round: median "
            f"{statistics.median(ratios):.2f}x (quartiles {quartiles[0]:.2f}-{quartiles[-1]:.2f})"
        )


if __name__ == "__main__":
    main()
