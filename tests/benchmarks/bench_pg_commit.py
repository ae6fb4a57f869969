"""PostgreSQL ``sync`` throughput beside LangGraph's ``AsyncPostgresSaver``: one session, and many
sessions at once (where group commit stores the steps of concurrent sessions in one transaction).

Each session runs a 2-node loop (A -> B -> A ...) that adds one to a counter, to ``steps`` supersteps;
every superstep is stored before the next starts (treadle ``durability="sync"``, LangGraph
``durability="sync"``). A round runs each configuration once, treadle and LangGraph interleaved with
the order swapped every round (the machine is shared and its speed drifts), each on a fresh schema
(treadle) or fresh tables (LangGraph). Steps/s counts every stored superstep of every session over the
wall time from the first session's creation to the last one's completion, runner start and close
excluded. Each measurement runs in a fresh process; the run starts with a ``CHECKPOINT`` on the
server and a 5 s pause, so that what earlier runs left to write does not land on its first rounds. The table shows min/median/max over the rounds
and the per-round ratio treadle / LangGraph. ``--before DIR`` adds another treadle (``DIR`` holds a
``treadle`` folder, or a link to an older checkout) to every round, for before/after figures.

Run: ``python tests/benchmarks/bench_pg_commit.py [--sessions 1,100] [--steps 200,20] [--rounds 5]
[--before DIR] [--postgres URL]``. Needs ``langgraph==1.2.22``, ``langgraph-checkpoint-postgres`` and
``psycopg[binary,pool]`` installed beside treadle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, TypedDict

import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
import trio
from _pg_schemas import drop_run_schemas, schema_name

# After the path setup:
from bench_checkpoint import loop_app

from treadle import AppRunner, VersionedState
from treadle.runtime.checkpointers import PostgresCheckpointer


async def treadle_run(url: str, sessions: int, steps: int) -> float:
    """Seconds for ``sessions`` concurrent sessions of ``steps`` supersteps each."""
    app = loop_app(steps)
    checkpointer = PostgresCheckpointer(url, schema=schema_name())
    async with AppRunner(app, checkpointer=checkpointer, durability="sync") as runner:

        async def one(i: int) -> None:
            sid = f"s{i}"
            await runner.create_session(sid, VersionedState(extra={"counter": 0}))
            final = await runner.run_until_complete(sid)
            assert final.extra["counter"] == steps, final.extra

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(sessions):
                nursery.start_soon(one, i)
        return time.perf_counter() - started


class LoopState(TypedDict):
    """LangGraph's state for the loop (at module level: LangGraph resolves the annotations)."""

    counter: int


def langgraph_graph(steps: int) -> Any:
    from langgraph.graph import END as LG_END
    from langgraph.graph import START as LG_START
    from langgraph.graph import StateGraph

    async def step(state: LoopState) -> dict[str, Any]:
        return {"counter": state["counter"] + 1}

    def again(state: LoopState) -> str:
        return LG_END if state["counter"] >= steps else "a"

    builder = StateGraph(LoopState)
    builder.add_node("a", step)
    builder.add_node("b", step)
    builder.add_edge(LG_START, "a")
    builder.add_edge("a", "b")
    builder.add_conditional_edges("b", again, ["a", LG_END])
    return builder


async def langgraph_run(url: str, sessions: int, steps: int) -> float:
    """The same as :func:`treadle_run` with LangGraph and ``AsyncPostgresSaver`` (one connection,
    as ``from_conn_string`` makes it), on fresh tables in a schema of its own."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    schema = schema_name("lg_")
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute(f'CREATE SCHEMA "{schema}"'.encode())
    scoped = url + ("&" if "?" in url else "?") + f"options=-csearch_path%3D{schema}"
    async with contextlib.AsyncExitStack() as stack:
        saver = await stack.enter_async_context(AsyncPostgresSaver.from_conn_string(scoped))
        await saver.setup()
        graph = langgraph_graph(steps).compile(checkpointer=saver)

        async def one(i: int) -> None:
            config = {"configurable": {"thread_id": f"t{i}"}, "recursion_limit": 2 * steps + 10}
            final = await graph.ainvoke({"counter": 0}, config, durability="sync")
            assert final["counter"] == steps, final

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(sessions)))
        return time.perf_counter() - started


def measure(args: argparse.Namespace) -> None:
    """One measurement in this process (the driver runs each in a fresh one): seconds on stdout."""
    if args.one == "langgraph":
        seconds = asyncio.run(langgraph_run(args.postgres, args.sessions, args.steps))
    else:
        seconds = trio.run(treadle_run, args.postgres, args.sessions, args.steps)
    print(json.dumps({"seconds": seconds}))


def settle(url: str) -> None:
    """Write out what earlier runs left in the server's buffers (``CHECKPOINT``) and let the
    machine rest a moment, so that the server's own background writes do not fall on the first
    rounds. Needs a role allowed to run ``CHECKPOINT``; without one the run starts at once."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.Error as exc:
        print(f"no CHECKPOINT before the run ({exc.sqlstate}): starting at once", flush=True)
        return
    time.sleep(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,100", help="comma-separated session counts")
    parser.add_argument("--steps", default="200,20", help="supersteps per session, per count")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--before",
        metavar="DIR",
        default=None,
        help="a directory holding another treadle (a `treadle` folder or link to a checkout): "
        "measured too, as 'before'",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "TREADLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--one", choices=["treadle", "langgraph"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        args.sessions, args.steps = int(args.sessions), int(args.steps)
        measure(args)
        return
    counts = [int(x) for x in args.sessions.split(",")]
    steps_for = [int(x) for x in args.steps.split(",")]
    if len(steps_for) != len(counts):
        raise SystemExit("--steps needs one value per --sessions value")
    if any(steps % 2 for steps in steps_for):
        raise SystemExit("--steps must be even (the loop ends after B)")
    libs = ["treadle", "langgraph"] + (["before"] if args.before else [])
    settle(args.postgres)
    loads: list[float] = []
    rates: dict[tuple[int, str], list[float]] = {}
    ratios: dict[int, list[float]] = {}
    try:
        for round_no in range(args.rounds):
            for sessions, steps in zip(counts, steps_for, strict=True):
                loads.append(os.getloadavg()[0])
                got: dict[str, float] = {}
                for lib in libs[round_no % len(libs) :] + libs[: round_no % len(libs)]:
                    env = dict(os.environ)
                    if lib == "before":
                        env["PYTHONPATH"] = args.before
                    for attempt in range(3):
                        done = subprocess.run(
                            [
                                sys.executable,
                                __file__,
                                "--one",
                                "langgraph" if lib == "langgraph" else "treadle",
                                "--sessions",
                                str(sessions),
                                "--steps",
                                str(steps),
                                "--postgres",
                                args.postgres,
                            ],
                            capture_output=True,
                            text=True,
                            env=env,
                            check=False,
                        )
                        if done.returncode == 0:
                            break
                        # The server is shared: another program may restart it or end connections.
                        last = done.stderr.strip().splitlines()[-1:]
                        print(f"{lib} failed (attempt {attempt + 1}): {last}", flush=True)
                        time.sleep(5)  # a restarting server takes a few seconds to come back
                    else:
                        raise SystemExit(f"{lib} failed 3 times:\n{done.stderr.strip()}")
                    seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
                    got[lib] = sessions * steps / seconds
                    rates.setdefault((sessions, lib), []).append(got[lib])
                ratios.setdefault(sessions, []).append(got["treadle"] / got["langgraph"])
                print(
                    f"round {round_no} sessions={sessions}: "
                    + ", ".join(f"{lib} {rate:.0f}" for lib, rate in got.items())
                    + " steps/s",
                    flush=True,
                )
    finally:
        drop_run_schemas(args.postgres)
    print(
        f"\nPostgreSQL sync, {args.rounds} interleaved rounds, load (1-min) "
        f"{min(loads):.1f}/{statistics.median(loads):.1f}/{max(loads):.1f} (min/median/max)"
    )
    print(f"{'sessions':>8} {'library':<10} {'min':>7} {'median':>7} {'max':>7}  steps/s")
    for sessions in counts:
        for lib in libs:
            values = rates[(sessions, lib)]
            print(
                f"{sessions:>8} {lib:<10} {min(values):>7.0f} {statistics.median(values):>7.0f} "
                f"{max(values):>7.0f}"
            )
        r = ratios[sessions]
        print(
            f"{sessions:>8} {'ratio':<10} {min(r):>7.2f} {statistics.median(r):>7.2f} "
            f"{max(r):>7.2f}  treadle / LangGraph, per round"
        )


if __name__ == "__main__":
    main()
