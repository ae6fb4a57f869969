"""The command line: the demo on SQLite (run twice, it resumes), graph output, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def treadle(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "treadle", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"},
    )


def test_demo_runs_on_sqlite_then_resumes(tmp_path: Path) -> None:
    first = treadle("demo", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "sqlite checkpoints" in first.stdout
    assert "started session 'demo'" in first.stdout
    assert "Summary:" in first.stdout
    assert (tmp_path / "treadle.db").exists()
    second = treadle("demo", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resumed session 'demo' at step" in second.stdout
    history = treadle("sessions", "history", "demo", cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    assert "step 1: ran plan" in history.stdout


def test_graph_json_and_user_errors(tmp_path: Path) -> None:
    graph = treadle("graph", "treadle.runtime.demo:build_demo", cwd=tmp_path)
    assert graph.returncode == 0, graph.stderr
    described = json.loads(graph.stdout)
    assert "plan" in described["nodes"]
    bad = treadle("graph", "no_such_module:app", cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.startswith("treadle: cannot import module 'no_such_module'")
    assert "Traceback" not in bad.stderr
    missing = treadle("sessions", "show", "nope", cwd=tmp_path)
    assert missing.returncode == 1
    assert "no checkpoint for session 'nope'" in missing.stderr
