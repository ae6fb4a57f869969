"""The test helper that reads a child's output to the end keeps what ``readline`` buffered."""

from __future__ import annotations

import subprocess
import sys

from subprocesses import read_to_end

CHILD = "print('a'); print('b', flush=True); import time; time.sleep(0.2); print('c')"


def test_lines_buffered_by_readline_are_not_lost() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    # The child writes "a" and "b" in one write: readline takes both into the file's buffer.
    assert proc.stdout.readline() == "a\n"
    out, err = read_to_end(proc)
    assert out == "b\nc\n"  # proc.communicate() would give "c\n"
    assert err == ""
    assert proc.returncode == 0
