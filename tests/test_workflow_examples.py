"""The workflow examples (ported from FlowWeaver's documentation) run as a user runs them and print
what docs/workflows.md says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

EXPECTED: dict[str, list[str]] = {
    "workflow_customer_etl.py": [
        "plan: [['extract_customers'], ['validate_data'], ['load_warehouse']]",
        "SequentialExecutor: 3 completed, loaded {'loaded': 1000}",
        "ThreadedExecutor: 3 completed, loaded {'loaded': 1000}",
        "AsyncExecutor: 3 completed, loaded {'loaded': 1000}",
        "second run executed 0 tasks; 3 completed from the store, loaded {'loaded': 1000}",
    ],
    "workflow_ml_pipeline.py": [
        "layer 5: train_model",
        "layer 6: evaluate_model, validate_model",
        "layer 7: generate_report",
        "report: mse below 2: True; verdict: ship it",
        "stats: 8/8 completed, 0 failed",
    ],
    "workflow_async_aggregation.py": [
        "retrying activity_3 (attempt 2)",
        "analytics: {'activity_score': 38.0, 'analytics_score': 39.0, 'profile_score': 37.0}",
        "15 fetches overlapped: True",
        "status changes: {'completed': 16, 'retrying': 1, 'running': 16}",
    ],
    "workflow_resume.py": [
        "first run failed at 'transform': unit price table is missing",
        "first run ran: ['fetch_orders', 'fetch_refunds', 'transform', 'transform']",
        "statuses: [('fetch_orders', 'completed'), ('fetch_refunds', 'completed'), "
        "('transform', 'failed'), ('load', 'pending')]",
        "second run ran: ['transform', 'load']",
        "result: loaded 7 units",
    ],
}


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_workflow_example_prints_what_the_docs_say(script: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    positions = [lines.index(line) for line in EXPECTED[script]]
    assert positions == sorted(positions)
    assert lines[-1] == EXPECTED[script][-1]


def test_every_workflow_example_is_listed_and_tested() -> None:
    scripts = {p.name for p in (ROOT / "examples").glob("workflow_*.py")}
    assert scripts == set(EXPECTED)
    readme = (ROOT / "examples" / "README.md").read_text()
    docs = (ROOT / "docs" / "workflows.md").read_text()
    for script in scripts:
        assert f"`{script}`" in readme
        assert script in docs


def test_the_snippet_at_the_top_of_the_workflows_page_runs(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "workflows.md").read_text()
    block = re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)[0]
    done = subprocess.run(
        [sys.executable, "-c", block + "\nprint(results)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'extract': {'count': 3}, 'validate': 3}"
    assert (tmp_path / "state.db").exists()


def test_workflow_benchmark_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "benchmarks" / "bench_workflow.py"), "--n", "5",
         "--reps", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()
    assert rows[0].split()[:2] == ["system", "executor"]
    assert [r[19:48].strip() for r in rows[1:]] == [
        "SequentialExecutor()", "ThreadedExecutor(4)", "AsyncExecutor(50)",
        "AsyncExecutor(50), Trio tasks",
    ]  # fmt: skip
