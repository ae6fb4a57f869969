"""``examples/crash_and_resume.py`` runs and shows a killed process resumed by a new one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "crash_and_resume.py"


def test_crash_and_resume_example(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "killing myself during step 7" in out
    assert "exit code -9" in out or "exit code 137" in out
    assert "create_session -> Resumed(step=6)" in out
    assert "finished, done=12" in out
    assert "stored steps: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]" in out
    assert "exit code 0" in out
