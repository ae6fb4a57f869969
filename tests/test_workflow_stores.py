"""State stores: resume skips completed tasks and injects their stored results (after a failure
and after SIGKILL), falsy results survive, records are namespaced, the ``tasks`` table is queryable,
a corrupt JSON file is reported and treated as empty."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_fixtures import require_postgres_url

from treadle import (
    AsyncExecutor,
    JSONStateStore,
    PostgresStateStore,
    SequentialExecutor,
    SQLiteStateStore,
    StateStore,
    Task,
    TaskStatus,
    ThreadedExecutor,
    Workflow,
    WorkflowExecutionError,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def postgres_store() -> Iterator[PostgresStateStore]:
    url = require_postgres_url()
    schema = f"wf_{uuid.uuid4().hex[:12]}"
    store = PostgresStateStore(url, schema=schema)
    try:
        yield store
    finally:
        store.close()
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


StoreFactory = Callable[[Path], StateStore]
STORES = [
    pytest.param(lambda p: JSONStateStore(p / "state.json"), id="json"),
    pytest.param(lambda p: SQLiteStateStore(p / "state.db"), id="sqlite"),
]


@pytest.fixture(params=["json", "sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "json":
        return JSONStateStore(tmp_path / "state.json")
    if request.param == "sqlite":
        return SQLiteStateStore(tmp_path / "state.db")
    return request.getfixturevalue("postgres_store")  # type: ignore[no-any-return]


def diamond(log: Path, *, fail_c: bool, name: str = "diamond") -> Workflow:
    """a, b -> c(a, b) -> d(c); each run of a task appends its name to ``log``."""

    def record(task: str) -> None:
        with log.open("a") as f:
            f.write(task + "\n")

    def a() -> dict[str, int]:
        record("a")
        return {"v": 1}

    def b() -> list[int]:
        record("b")
        return [1, 2]

    def c(a: dict[str, int], b: list[int]) -> int:
        record("c")
        if fail_c:
            raise RuntimeError("c is broken today")
        return a["v"] + sum(b)

    def d(c: int) -> int:
        record("d")
        return c * 10

    wf = Workflow(name)
    wf.add_task(Task("a", a))
    wf.add_task(Task("b", b))
    wf.add_task(Task("c", c), depends_on=["a", "b"])
    wf.add_task(Task("d", d), depends_on=["c"])
    return wf


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda s: SequentialExecutor(state_store=s), id="sequential"),
        pytest.param(lambda s: ThreadedExecutor(max_workers=2, state_store=s), id="threaded"),
        pytest.param(lambda s: AsyncExecutor(max_concurrent=2, storage=s), id="async"),
    ],
)
def test_resume_after_failure_reruns_only_what_did_not_complete(
    any_store: StateStore, tmp_path: Path, make: Callable[[StateStore], Any]
) -> None:
    log = tmp_path / "runs.txt"
    with pytest.raises(WorkflowExecutionError, match="'c'"):
        make(any_store).execute(diamond(log, fail_c=True))
    assert sorted(log.read_text().split()) == ["a", "b", "c"]
    fixed = diamond(log, fail_c=False)  # a fresh program: new workflow, new functions
    results = make(any_store).execute(fixed)
    assert results == {"a": {"v": 1}, "b": [1, 2], "c": 4, "d": 40}
    assert sorted(log.read_text().split()) == ["a", "b", "c", "c", "d"]
    assert fixed.get_task_status("a") is TaskStatus.COMPLETED
    assert fixed.get_task_result("a") == {"v": 1}
    # A third run finds everything completed and runs nothing.
    make(any_store).execute(diamond(log, fail_c=False))
    assert sorted(log.read_text().split()) == ["a", "b", "c", "c", "d"]


FALSY: list[Any] = [0, [], "", False, None, {}, 0.0]


def test_falsy_results_survive_every_store(any_store: StateStore, tmp_path: Path) -> None:
    calls: list[str] = []

    def build(fail: bool) -> Workflow:
        wf = Workflow("falsy")
        for i, value in enumerate(FALSY):

            def produce(value: Any = value, i: int = i) -> Any:
                calls.append(f"p{i}")
                return value

            wf.add_task(Task(f"p{i}", produce))

        def consume(**kwargs: Any) -> list[Any]:
            calls.append("consume")
            if fail:
                raise ValueError("not yet")
            return [kwargs[f"p{i}"] for i in range(len(FALSY))]

        wf.add_task(Task("consume", consume), depends_on=[f"p{i}" for i in range(len(FALSY))])
        return wf

    with pytest.raises(WorkflowExecutionError):
        build(fail=True).run(state_store=any_store)
    calls.clear()
    results = build(fail=False).run(state_store=any_store)
    assert calls == ["consume"]
    assert results["consume"] == FALSY
    assert [type(v) for v in results["consume"]] == [type(v) for v in FALSY]


def test_records_are_namespaced_by_workflow_name(any_store: StateStore, tmp_path: Path) -> None:
    log = tmp_path / "runs.txt"
    diamond(log, fail_c=False, name="first").run(state_store=any_store)
    diamond(log, fail_c=False, name="second").run(state_store=any_store)
    assert sorted(log.read_text().split()) == sorted(["a", "b", "c", "d"] * 2)
    assert set(any_store.load("first")) == {"a", "b", "c", "d"}
    any_store.clear("first")
    assert any_store.load("first") == {}
    assert set(any_store.load("second")) == {"a", "b", "c", "d"}


def test_sqlite_tasks_table_has_the_operator_columns(tmp_path: Path) -> None:
    store = SQLiteStateStore(tmp_path / "state.db")
    with pytest.raises(WorkflowExecutionError):
        diamond(tmp_path / "runs.txt", fail_c=True).run(state_store=store)
    with sqlite3.connect(tmp_path / "state.db") as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(tasks)")]
        rows = conn.execute(
            "SELECT workflow, task_name, status, attempts, result, error FROM tasks "
            "ORDER BY task_name"
        ).fetchall()
    assert columns == [
        "workflow", "task_name", "status", "attempts", "result", "error", "started_at",
        "completed_at", "timestamp",
    ]  # fmt: skip
    assert rows == [
        ("diamond", "a", "completed", 1, '{"v": 1}', None),
        ("diamond", "b", "completed", 1, "[1, 2]", None),
        ("diamond", "c", "failed", 1, None, "c is broken today"),
    ]


def test_postgres_tasks_table_has_the_operator_columns(
    postgres_store: PostgresStateStore, tmp_path: Path
) -> None:
    diamond(tmp_path / "runs.txt", fail_c=False).run(state_store=postgres_store)
    import psycopg

    with psycopg.connect(postgres_store.url) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = 'tasks' ORDER BY ordinal_position",
                (postgres_store.schema,),
            )
        ]
        count = conn.execute(
            f'SELECT count(*) FROM "{postgres_store.schema}".tasks WHERE status = %s',
            ("completed",),
        ).fetchone()
    assert columns[:4] == ["workflow", "task_name", "status", "attempts"]
    assert set(columns) >= {"result", "error", "started_at", "completed_at", "timestamp"}
    assert count == (4,)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"[1, 2, 3]", b"\xff\xfe\x00garbage", b'{"workflows": {"diamond": '],
)
def test_a_corrupt_json_store_is_reported_and_treated_as_empty(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    store = JSONStateStore(path)
    log = tmp_path / "runs.txt"
    with caplog.at_level(logging.ERROR, logger="treadle.workflow.store"):
        results = diamond(log, fail_c=False).run(state_store=store)
    assert results["d"] == 40
    assert sorted(log.read_text().split()) == ["a", "b", "c", "d"]
    assert store.corruption is not None
    assert "state.json" in store.corruption
    assert any("treating it as empty" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "state.json.corrupt").read_bytes() == content
    assert set(json.loads(path.read_text())["workflows"]["diamond"]) == {"a", "b", "c", "d"}


def test_a_damaged_json_entry_reruns_only_that_task(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = JSONStateStore(path)
    log = tmp_path / "runs.txt"
    with pytest.raises(WorkflowExecutionError):
        diamond(log, fail_c=True).run(state_store=store)
    data = json.loads(path.read_text())
    data["workflows"]["diamond"]["a"]["status"] = "BOGUS"
    path.write_text(json.dumps(data))
    diamond(log, fail_c=False).run(state_store=store)
    assert sorted(log.read_text().split()) == ["a", "a", "b", "c", "c", "d"]


def test_a_result_json_cannot_hold_fails_its_task_clearly(tmp_path: Path) -> None:
    wf = Workflow("objects")
    wf.add_task(Task("obj", lambda: object()))
    with pytest.raises(WorkflowExecutionError) as info:
        wf.run(state_store=SQLiteStateStore(tmp_path / "s.db"))
    assert "cannot be stored as JSON" in str(info.value.__cause__)
    # Without a store any Python object flows between tasks.
    wf2 = Workflow("objects")
    wf2.add_task(Task("obj", lambda: object()))
    assert type(wf2.run()["obj"]) is object


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from treadle import Task, Workflow, ThreadedExecutor, JSONStateStore, SQLiteStateStore

    here = Path(sys.argv[1])
    store = (JSONStateStore(here / "state.json") if sys.argv[2] == "json"
             else SQLiteStateStore(here / "state.db"))

    def record(name):
        with open(here / "runs.txt", "a") as f:
            f.write(name + "\\n")
            f.flush()
            os.fsync(f.fileno())

    def a(): record("a"); return 0
    def b(a): record("b"); return [a]
    def c(b):
        record("c")
        if not (here / "second").exists():
            os.kill(os.getpid(), signal.SIGKILL)
        return b + [2]
    def d(c): record("d"); return {"c": c}

    wf = Workflow("killed")
    wf.add_task(Task("a", a))
    wf.add_task(Task("b", b), depends_on=["a"])
    wf.add_task(Task("c", c), depends_on=["b"])
    wf.add_task(Task("d", d), depends_on=["c"])
    print(ThreadedExecutor(2, state_store=store).execute(wf)["d"])
    """
)


@pytest.mark.parametrize("kind", ["json", "sqlite"])
def test_resume_after_sigkill_reruns_only_what_did_not_complete(tmp_path: Path, kind: str) -> None:
    script = tmp_path / "killed.py"
    script.write_text(KILL_SCRIPT)
    cmd = [sys.executable, str(script), str(tmp_path), kind]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert (tmp_path / "runs.txt").read_text().split() == ["a", "b", "c"]
    (tmp_path / "second").touch()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "{'c': [0, 2]}"
    assert (tmp_path / "runs.txt").read_text().split() == ["a", "b", "c", "c", "d"]
