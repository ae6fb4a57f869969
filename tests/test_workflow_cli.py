"""``treadle run MODULE:ATTR`` runs a Workflow: task events on stdout, outcomes, a resumable store."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from treadle.runtime.cli.main import main

FLOWS = textwrap.dedent(
    """
    from pathlib import Path
    from treadle import Task, Workflow, task

    @task
    def extract():
        with open("runs.txt", "a") as f:
            f.write("extract\\n")
        return {"count": 3}

    @task(retries=1)
    def load(extract):
        if Path("broken").exists():
            raise RuntimeError("warehouse is down")
        return extract["count"]

    pipeline = Workflow("cli-etl")
    pipeline.add_task(extract)
    pipeline.add_task(load, depends_on=["extract"])
    """
)


@pytest.fixture
def flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "cli_flows.py").write_text(FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("cli_flows", None)


def test_run_accepts_a_workflow_and_resumes_from_its_state_store(
    flows: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (flows / "broken").touch()
    code = main(["run", "cli_flows:pipeline", "--executor", "threaded", "--state-store", "s.db"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "task.failed: task 'load' failed: warehouse is down" in out
    assert out.rstrip().endswith("extract: completed\nload: failed")
    assert err.count("\n") == 1
    assert "workflow 'cli-etl' failed at task 'load'" in err
    (flows / "broken").unlink()
    sys.modules.pop("cli_flows", None)
    code = main(["run", "cli_flows:pipeline", "--state-store", "s.db"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "task.skipped: task 'extract' completed in an earlier run" in out
    assert "task.completed: task 'load' completed" in out
    assert (flows / "runs.txt").read_text().split() == ["extract"]
