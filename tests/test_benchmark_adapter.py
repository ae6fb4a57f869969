"""The adapter for the shared graph-runtime harness (``tests/benchmarks/harness_adapter.py``) keeps
the harness's contract: every builder is an async context manager yielding ``run``, and each ``run``
answers what the harness checks (items, counter, event counts), at small sizes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio

sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))

from harness_adapter import TreadleAdapter

WATCHDOG = 30


@pytest.fixture
def adapter() -> TreadleAdapter:
    return TreadleAdapter()


async def runs(builder: Any, times: int = 3) -> list[dict[str, Any]]:
    """What the harness does: build once, then call ``run`` repeatedly."""
    with trio.fail_after(WATCHDOG):
        async with builder as run:
            return [await run() for _ in range(times)]


async def test_invoke1_and_chain_give_the_items_in_node_order(adapter: TreadleAdapter) -> None:
    assert [r["items"] for r in await runs(adapter.invoke1())] == [[0]] * 3
    assert [r["items"] for r in await runs(adapter.chain(7))] == [list(range(7))] * 3


async def test_fanout_merges_every_worker_in_the_same_order_whatever_finishes_first(
    adapter: TreadleAdapter, autojump_clock: trio.testing.MockClock
) -> None:
    plain = await runs(adapter.fanout(12))
    jittered = await runs(adapter.fanout(12, jitter_s=0.002), times=6)
    assert {tuple(r["items"]) for r in plain + jittered} == {tuple(range(12))}


@pytest.mark.parametrize(
    ("mode", "expected"), [("updates", 10 + 2), ("custom", 10 * 3), ("both", 10 + 2 + 10 * 3)]
)
async def test_fanout_stream_counts_every_event_of_the_run(
    adapter: TreadleAdapter, mode: str, expected: int
) -> None:
    assert [r["events"] for r in await runs(adapter.fanout_stream(10, mode, 3))] == [expected] * 3


async def test_fanout_stream_refuses_an_unknown_mode(adapter: TreadleAdapter) -> None:
    with pytest.raises(ValueError, match="unknown stream mode 'values'"):
        async with adapter.fanout_stream(4, "values", 1):
            pass


@pytest.mark.parametrize(
    ("ckpt", "durability"),
    [
        ("none", None),
        ("memory", None),
        ("sqlite", None),
        ("sqlite", "sync"),
        ("sqlite", "async"),
        ("sqlite", "exit"),
    ],
)
async def test_loop_runs_exactly_the_asked_steps(
    adapter: TreadleAdapter, tmp_path: Path, ckpt: str, durability: str | None
) -> None:
    db = str(tmp_path / "loop.sqlite") if ckpt == "sqlite" else None
    results = await runs(adapter.loop(40, ckpt, db, durability))
    assert [r["counter"] for r in results] == [40] * 3
    if db is not None:
        stats = adapter.storage_stats(db)
        # Every run is a new session, all written once it returns: steps 0..40, or under "exit"
        # only the last.
        assert stats["checkpoint_rows"] == 3 * (1 if durability == "exit" else 41)
        assert stats["write_rows"] == 0


async def test_growing_loop_stores_each_appended_item_once(
    adapter: TreadleAdapter, tmp_path: Path
) -> None:
    db = str(tmp_path / "grow.sqlite")
    (result,) = await runs(adapter.loop(30, "sqlite", db, None, grow=100), times=1)
    assert result["counter"] == 30
    assert result["items"] == [f"{step:08d}" + "x" * 92 for step in range(1, 31)]
    stats = adapter.storage_stats(db)
    assert stats["write_rows"] == 30
    assert stats["write_blob_bytes"] == 30 * 100


async def test_loop_refuses_unknown_checkpointers_and_a_sqlite_loop_without_a_file(
    adapter: TreadleAdapter,
) -> None:
    with pytest.raises(ValueError, match="unknown checkpointer 'redis'"):
        async with adapter.loop(4, "redis"):
            pass
    with pytest.raises(ValueError, match="needs a db_path"):
        async with adapter.loop(4, "sqlite"):
            pass


def test_run_drives_a_coroutine_function_on_trio_and_reports_versions(
    adapter: TreadleAdapter,
) -> None:
    async def answer(x: int) -> int:
        await adapter.sleep(0)
        return x * 2

    assert adapter.run(answer, 21) == 42
    assert set(adapter.versions()) == {"treadle", "trio", "attrs", "sqlite-utils"}
    assert "not installed" not in adapter.versions().values()
