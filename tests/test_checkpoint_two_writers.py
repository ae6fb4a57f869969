"""One writer per session on every durable backend: two processes that resume one SQLite or JSON
session at the same instant cannot both run it. Every save states the step it builds on, so exactly
one process runs; the other gets ``ConcurrencyConflict`` at its first step, and the stored history
is one lineage, step for step the history of an uninterrupted run. (PostgreSQL refuses the second
process earlier, by its lease: ``test_checkpoint_crash.py``.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_checkpoint_crash as crash


def start(url: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-u", crash.__file__, "run", url, "sync", "shared"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CRASH_TEST_WAIT_GO": "1", "CRASH_TEST_PACE": "0.005"},
    )
    assert crash.wait_ready(proc), proc.communicate(timeout=60)
    return proc


@pytest.mark.parametrize("scheme", ["sqlite", "json"])
def test_two_processes_resuming_one_session_leave_one_lineage(tmp_path: Path, scheme: str) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}" if scheme == "sqlite" else f"json:///{tmp_path}/cps"
    # The first worker stores step 0; the second resumes it. Both then start at the same instant.
    procs = [start(url), start(url)]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("GO\n")
        proc.stdin.flush()
    outs = [proc.communicate(timeout=120) for proc in procs]
    codes = sorted(proc.returncode for proc in procs)
    assert codes == [0, 3], outs
    loser = next(out for proc, out in zip(procs, outs, strict=True) if proc.returncode == 3)
    # Refused at its first step: the step it built on was step 0, where both started.
    assert "CONFLICT expected=0 session 'shared' was written by someone else" in loser[0], loser
    crash.check_against_reference(tmp_path, url, ["shared"])
