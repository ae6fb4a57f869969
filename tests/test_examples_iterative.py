"""examples/sensor_loop.py as a user runs it: run, killed with SIGKILL, run again; it continues where
it stopped and ends exactly like a run that was never killed."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sensor_loop.py"


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_the_sensor_loop_survives_a_kill_and_continues(tmp_path: Path) -> None:
    whole_dir, split_dir = tmp_path / "whole", tmp_path / "split"
    whole_dir.mkdir()
    split_dir.mkdir()
    whole = run(whole_dir)
    assert whole.returncode == 0, whole.stderr
    lines = whole.stdout.splitlines()
    assert lines[0] == "Fresh: step 0, 0 readings already applied"
    assert lines[-1] == "done: 12 readings, 5 alarms, step 17"

    killed = run(split_dir, "--crash-after", "5")
    assert killed.returncode == -signal.SIGKILL
    assert killed.stdout.splitlines()[-1] == "killing this process (SIGKILL)"
    assert killed.stdout.splitlines()[1:6] == lines[1:6]

    resumed = run(split_dir)
    assert resumed.returncode == 0, resumed.stderr
    again = resumed.stdout.splitlines()
    assert again[0] == "Resumed: step 6, 5 readings already applied"
    # The ticks after the kill, and the end, are those of the run that was never killed.
    assert again[1:] == lines[6:]
