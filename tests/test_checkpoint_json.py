"""The JSON-files store: readable atomic files, and corrupt files (truncated, emptied, garbage)
logged, listed and skipped, never fatal, also under a running AppRunner."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trio
from apps import counter_app

from treadle import AppRunner, Resumed, VersionedState
from treadle.runtime.checkpointers import JSONCheckpointer
from treadle.runtime.checkpointers.checkpoint import Checkpoint
from treadle.runtime.errors import CheckpointBackendError, CheckpointNotFound
from treadle.runtime.graph.state import Message


def checkpoint(step: int, session: str = "s") -> Checkpoint:
    return Checkpoint(
        session_id=session,
        step=step,
        state=VersionedState(
            messages=[Message.user(f"m{i}") for i in range(step + 1)],
            # A large value written once keeps the first snapshot bigger than the deltas after it,
            # so every later step is a delta in one chain.
            extra={"step": step, "blob": "x" * 4000},
            messages_version=step + 1,
            extra_version=step + 1,
        ),
        frontier=("a",),
        versions_seen={"a": (step, step)},
        join_state={},
        concurrency_limit=1,
        created_at=step,
        ran_nodes=("a",),
    )


def step_file(root: Path, step: int, session: str = "s") -> Path:
    return root / session / f"{step:012d}.json"


async def filled(root: Path, nursery: trio.Nursery, steps: int = 6) -> JSONCheckpointer:
    store = JSONCheckpointer(root, max_chain=100)
    await store.open(nursery)
    for step in range(steps):
        await store.save(checkpoint(step))
    return store


async def test_files_are_readable_json_and_no_temporary_file_remains(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    store = await filled(tmp_path, nursery)
    files = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert files == [f"{step:012d}.json" for step in range(6)]
    first = json.loads(step_file(tmp_path, 0).read_text())
    assert first["format"] == "treadle.checkpoint/1"
    assert first["kind"] == "snapshot"
    assert first["body"]["messages"] == [{"role": "user", "content": "m0"}]
    later = json.loads(step_file(tmp_path, 1).read_text())
    assert later["kind"] == "delta"
    assert later["base_step"] == 0
    assert later["body"]["messages_appended"] == [{"role": "user", "content": "m1"}]
    assert "\n  " in step_file(tmp_path, 1).read_text()  # indented for people
    await store.aclose()


@pytest.mark.parametrize("indent", [2, None])
async def test_a_big_snapshot_is_written_with_its_body_on_one_line_and_reads_back(
    tmp_path: Path, nursery: trio.Nursery, indent: int | None
) -> None:
    # 100,000 messages: indenting them would take the json module's Python encoder seconds.
    store = JSONCheckpointer(tmp_path, indent=indent)
    await store.open(nursery)
    big = Checkpoint(
        session_id="s",
        step=0,
        state=VersionedState(
            messages=[Message.user(f"m{i} \u00e9") for i in range(100_000)], extra={"k": [1.5]}
        ),
        frontier=("a",),
        versions_seen={},
        join_state={},
        concurrency_limit=1,
        created_at=0,
    )
    await store.save(big)
    text = step_file(tmp_path, 0).read_text(encoding="utf-8")
    assert len(text.splitlines()) < 20
    doc = json.loads(text)
    assert doc["body"]["messages"][99_999] == {"role": "user", "content": "m99999 \u00e9"}
    assert doc["step"] == 0
    await store.aclose()
    again = JSONCheckpointer(tmp_path, indent=indent)
    await again.open(nursery)
    assert await again.load("s", 0) == big
    await again.aclose()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda text: "", "empty"),
        (lambda text: text[: len(text) // 2], "not valid JSON"),
        (lambda text: "\x00\xff garbage {{{", "not valid JSON"),
        (lambda text: json.dumps({"hello": "world"}), "not a treadle checkpoint"),
    ],
)
async def test_a_corrupt_latest_file_is_reported_and_the_previous_step_is_used(
    tmp_path: Path,
    damage: object,
    reason: str,
    caplog: pytest.LogCaptureFixture,
    nursery: trio.Nursery,
) -> None:
    store = await filled(tmp_path, nursery)
    latest = step_file(tmp_path, 5)
    latest.write_text(damage(latest.read_text()))  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="treadle.checkpointer.json"):
        found = await store.load_latest("s")
    assert found is not None
    assert found.step == 4
    assert found.state.extra["step"] == 4
    assert [c.path for c in store.corrupt_files()] == [latest]
    assert reason in store.corrupt_files()[0].reason
    assert str(latest) in caplog.text
    assert [i.step for i in await store.list_steps("s")] == [0, 1, 2, 3, 4]
    with pytest.raises(CheckpointNotFound):
        await store.load("s", 5)
    await store.aclose()

    # A fresh open finds it too, and saving goes on (the session continues from step 4).
    again = JSONCheckpointer(tmp_path)
    await again.open(nursery)
    assert [c.path for c in again.corrupt_files()] == [latest]
    await again.save(checkpoint(6))
    found = await again.load_latest("s")
    assert found is not None
    assert found.step == 6
    await again.aclose()


async def test_a_corrupt_middle_file_costs_only_the_steps_built_on_it(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    store = await filled(tmp_path, nursery)
    step_file(tmp_path, 3).write_text("")
    # Steps 4 and 5 are deltas on 3: they cannot be rebuilt, and are reported too.
    found = await store.load_latest("s")
    assert found is not None
    assert found.step == 2
    reported = {c.path.name for c in store.corrupt_files()}
    assert reported == {f"{3:012d}.json", f"{5:012d}.json", f"{4:012d}.json"}
    assert (await store.load("s", 1)).state.extra["step"] == 1
    await store.aclose()


async def test_stray_files_are_ignored(tmp_path: Path, nursery: trio.Nursery) -> None:
    store = await filled(tmp_path, nursery, steps=2)
    (tmp_path / "s" / "notes.txt").write_text("hello")
    (tmp_path / "s" / ".000000000009.json.abc.tmp").write_text("half")
    (tmp_path / "README").write_text("not a session")
    assert await store.list_sessions() == ["s"]
    assert [i.step for i in await store.list_steps("s")] == [0, 1]
    assert await store.delete_session("s") is True
    assert await store.list_sessions() == []
    await store.aclose()


async def test_an_unusable_directory_fails_open_clearly(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(
        CheckpointBackendError, match=r"cannot use .*file.* as a checkpoint directory"
    ):
        await JSONCheckpointer(blocker).open(nursery)


async def test_the_runner_resumes_past_corrupt_files(tmp_path: Path) -> None:
    app = counter_app(limit=6, pause=0)
    with trio.fail_after(30):
        async with AppRunner(app, checkpointer=f"json:///{tmp_path / 'runs'}") as runner:
            await runner.create_session("s", VersionedState())
            for _ in range(3):
                await runner.run_step("s")
        # Damage the newest step: the next runner resumes from the one before it.
        newest = step_file(tmp_path / "runs", 3)
        newest.write_text(newest.read_text()[:10])
        async with AppRunner(app, checkpointer=f"json:///{tmp_path / 'runs'}") as runner:
            assert await runner.create_session("s", VersionedState()) == Resumed(2)
            store = runner.checkpointer
            assert isinstance(store, JSONCheckpointer)
            assert [c.path for c in store.corrupt_files()] == [newest]
            final = await runner.run_until_complete("s")
            assert final.extra["n"] == 6
            # Step 3 was run again and its file rewritten whole.
            assert store.corrupt_files() == []
            assert json.loads(newest.read_text())["step"] == 3


async def test_a_damaged_file_in_the_latest_steps_delta_chain_heals_for_every_later_run(
    tmp_path: Path,
) -> None:
    url = f"json:///{tmp_path / 'runs'}"
    app = counter_app(limit=8, pause=0)
    with trio.fail_after(30):
        async with AppRunner(app, checkpointer=url) as runner:
            await runner.create_session("s", VersionedState(extra={"n": 0, "blob": "x" * 4000}))
            for _ in range(5):
                await runner.run_step("s")
        folder = tmp_path / "runs"
        kinds = {s: json.loads(step_file(folder, s).read_text())["kind"] for s in range(6)}
        assert kinds == {0: "snapshot", 1: "delta", 2: "delta", 3: "delta", 4: "delta", 5: "delta"}
        step_file(folder, 3).write_text("")  # step 5 builds on 4, which builds on 3
        for attempt in range(2):  # a retry after the failure, then a new runner: both resume
            async with AppRunner(app, checkpointer=url) as runner:
                assert await runner.create_session("s") == Resumed(2 if attempt == 0 else 8)
                final = await runner.run_until_complete("s")
                assert final.extra["n"] == 8
                store = runner.checkpointer
                assert isinstance(store, JSONCheckpointer)
                history = await runner.get_state_history("s")
                assert [i.step for i in history] == list(range(9))
                for step in range(9):
                    assert (await runner.load_checkpoint("s", step)).state.extra["n"] == step
        # The first step after the damage was written whole: no stored step builds on old files.
        assert json.loads(step_file(folder, 3).read_text())["kind"] == "snapshot"
        # The damaged file and the two built on it were set aside, never deleted.
        aside = sorted(p.name.split(".set-aside")[0] for p in (folder / "s").glob(".*set-aside*"))
        assert aside == [f".{s:012d}.json" for s in (3, 4, 5)]
        async with AppRunner(app, checkpointer=url) as runner:
            # A fresh open reads the index only; the set-aside files were all rewritten since.
            assert runner.checkpointer.corrupt_files() == []  # type: ignore[attr-defined]
