"""Creating a session that starts with many messages: seconds for ``create_session`` (the first
checkpoint, every message stored) and for 10 steps after it, per store.

Run: ``python tests/benchmarks/bench_big_state.py [--messages 100000] [--rounds 3]
[--stores json,sqlite,postgres] [--postgres URL]``. Each round creates one new session per store, in
a fresh directory or schema, stores interleaved; the table shows min/median/max. Side by side with
LangGraph, see ``../shared/bench/probes/probe_a_state_size.py`` (creation to the first node).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
import trio

# After the path setup:
from _pg_schemas import drop_run_schemas, schema_name

from treadle import END, START, AppRunner, GraphBuilder, Message, NodePartial, VersionedState
from treadle.runtime.checkpointers import JSONCheckpointer, PostgresCheckpointer, SQLiteCheckpointer

STEPS = 10


def app() -> Any:
    async def step(snapshot: Any, ctx: Any) -> NodePartial:
        n = snapshot.extra["n"] + 1
        return NodePartial(extra={"n": n}, messages=[Message.assistant(f"step {n}")])

    def again(snapshot: Any) -> str:
        return END if snapshot.extra["n"] >= STEPS else "a"

    return (
        GraphBuilder()
        .add_node("a", step)
        .add_edge(START, "a")
        .add_conditional_edges("a", again, path_map=["a", END])
        .compile()
    )


async def one(checkpointer: Any, state: VersionedState) -> tuple[float, float]:
    """Seconds to create the session, and to run its 10 steps."""
    async with AppRunner(app(), checkpointer=checkpointer) as runner:
        started = time.perf_counter()
        await runner.create_session("big", state)
        created = time.perf_counter()
        final = await runner.run_until_complete("big")
        done = time.perf_counter()
    assert final.extra["n"] == STEPS
    return created - started, done - created


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="json,sqlite,postgres")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "TREADLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    state = VersionedState(
        messages=[Message.user(f"message {i}") for i in range(args.messages)], extra={"n": 0}
    )
    stores = args.stores.split(",")
    times: dict[str, list[tuple[float, float]]] = {store: [] for store in stores}
    loads = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                for store in stores:
                    loads.append(os.getloadavg()[0])
                    folder = Path(tmp) / uuid.uuid4().hex
                    folder.mkdir()
                    if store == "json":
                        checkpointer: Any = JSONCheckpointer(folder / "runs")
                    elif store == "sqlite":
                        checkpointer = SQLiteCheckpointer(folder / "runs.db")
                    else:
                        checkpointer = PostgresCheckpointer(args.postgres, schema=schema_name())
                    times[store].append(trio.run(one, checkpointer, state))
    finally:
        if "postgres" in stores:
            drop_run_schemas(args.postgres)
    print(
        f"{args.messages:,} messages, {args.rounds} rounds, load (1-min) "
        f"{min(loads):.1f}/{statistics.median(loads):.1f}/{max(loads):.1f} (min/median/max)"
    )
    print(f"{'store':<10} {'create_session (s)':<24} {STEPS} steps after it (s)")
    for store, pairs in times.items():
        create = [c for c, _ in pairs]
        steps = [s for _, s in pairs]
        print(
            f"{store:<10} {min(create):.3f} / {statistics.median(create):.3f} / "
            f"{max(create):.3f}    {min(steps):.3f} / {statistics.median(steps):.3f} / "
            f"{max(steps):.3f}"
        )


if __name__ == "__main__":
    main()
