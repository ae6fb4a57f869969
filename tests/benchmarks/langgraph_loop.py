"""The checkpoint benchmark's loop in LangGraph, for a comparison measured in the same run.

Run by ``bench_checkpoint.py --langgraph PYTHON`` with an interpreter that has LangGraph and its
SQLite saver installed (``pip install langgraph langgraph-checkpoint-sqlite`` in a venv of its own;
treadle does not depend on either). By hand: ``PYTHON tests/benchmarks/langgraph_loop.py [steps]
[--durability sync async ...]``. It prints one JSON object: the package versions, and for each
durability the seconds one whole run took.

The graph is the harness's W3 loop (``LangGraphAdapter.loop`` in ``langgraph_bench.py``, the script
that measured the LangGraph baseline): ``START -> a -> b``, then ``b`` routes back to ``a`` or to
``END`` once the counter reaches ``steps``; each node adds one to the counter, so every superstep
runs one node. Checkpoints go to a new SQLite file through ``AsyncSqliteSaver`` on the asyncio loop.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import tempfile
import time

from langgraph_bench import LangGraphAdapter


async def one_run(steps: int, durability: str, path: str) -> float:
    """Seconds for one whole run of ``steps`` supersteps (opening the saver excluded)."""
    async with LangGraphAdapter().loop(steps, "sqlite", path, durability) as run:
        started = time.perf_counter()
        final = await run()
        elapsed = time.perf_counter() - started
    assert final["counter"] == steps, final
    return elapsed


async def measure(steps: int, durabilities: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        await one_run(min(steps, 100), durabilities[0], os.path.join(folder, "warm-up.db"))
        return {
            durability: await one_run(steps, durability, os.path.join(folder, f"{durability}.db"))
            for durability in durabilities
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", nargs="?", type=int, default=1000)
    parser.add_argument("--durability", nargs="+", default=["sync", "async"])
    args = parser.parse_args()
    versions = {
        name: importlib.metadata.version(name)
        for name in ("langgraph", "langgraph-checkpoint-sqlite")
    }
    seconds = asyncio.run(measure(args.steps, args.durability))
    print(json.dumps({"versions": versions, "seconds": seconds}))


if __name__ == "__main__":
    main()
