"""Ctrl-C on ``treadle run``: a real SIGINT at several points of a run is always exit 130 and one
line naming the step the store really holds; running the command again finishes the session."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from subprocesses import read_to_end
from test_cli import SCRIPT, TESTS, treadle

ENV = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(TESTS)}
INTERRUPTED = re.compile(r"treadle: interrupted; session 's' is stored at step (\d+)")

# (lines of output to wait for, then seconds to wait before SIGINT): before the first step, during
# early and late steps, and at drawn offsets inside a step (each `slow` step sleeps 50 ms).
POINTS = [(1, 0.0), (1, 0.02), (2, 0.0), (3, 0.013), (4, 0.031), (6, 0.045), (9, 0.0), (14, 0.027)]


def interrupt_after(lines: int, delay: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [str(SCRIPT), "run", "cli_flows:slow", "--session", "s"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        seen = [proc.stdout.readline() for _ in range(lines)]
        assert all(seen), seen
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = read_to_end(proc)
    finally:
        watchdog.cancel()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + out, err)


def stored_step(cwd: Path) -> int:
    shown = treadle("sessions", "show", "s", cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    step: int = json.loads(shown.stdout)["step"]
    return step


@pytest.mark.parametrize(("lines", "delay"), POINTS)
def test_ctrl_c_is_one_line_naming_the_stored_step_and_exit_130(
    tmp_path: Path, lines: int, delay: float
) -> None:
    result = interrupt_after(lines, delay, tmp_path)
    assert result.returncode == 130, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    match = INTERRUPTED.match(result.stderr)
    assert match, result.stderr
    assert int(match.group(1)) == stored_step(tmp_path)
    resumed = treadle("run", "cli_flows:slow", "--session", "s", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed session 's' at step {match.group(1)}" in resumed.stdout
    assert "extra['n'] = 40" in resumed.stdout


@pytest.mark.parametrize("delay", [0.0, 0.03, 0.06, 0.09])
def test_ctrl_c_in_the_demo_fan_out_is_one_line_and_exit_130(tmp_path: Path, delay: float) -> None:
    proc = subprocess.Popen(
        [str(SCRIPT), "demo"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=ENV,
    )  # fmt: skip
    assert proc.stdout is not None
    assert "checkpoints" in proc.stdout.readline()
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = read_to_end(proc)
    if proc.returncode == 0:  # the demo finished before the signal: a late Ctrl-C changes nothing
        assert "final state after step 6" in out
        assert err == ""
        return
    assert proc.returncode == 130, err
    assert len(err.splitlines()) == 1, err
    match = re.match(r"treadle: interrupted; session 'demo' is stored at step (\d+)", err)
    if match:
        shown = treadle("sessions", "show", "demo", cwd=tmp_path)
        assert json.loads(shown.stdout)["step"] == int(match.group(1))
    else:
        assert re.match(r"treadle: interrupted (before|while opening) session 'demo'", err), err
    again = treadle("demo", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Summary: storage: 14 notes" in again.stdout
