"""Reading a child process's output after reading some of it line by line."""

from __future__ import annotations

import subprocess
import threading


def read_to_end(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    """The rest of ``proc``'s stdout and stderr, once it has exited (killed after ``timeout`` s);
    both pipes are closed after.

    ``proc.communicate()`` reads the pipes themselves, so whatever an earlier
    ``proc.stdout.readline()`` took from the pipe beyond its line, and holds in the file
    object's buffer, would be lost; this reads through the file objects.
    """
    assert proc.stdout is not None
    assert proc.stderr is not None
    stderr = proc.stderr
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(stderr.read()), daemon=True)
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        reader.start()
        out = proc.stdout.read()
        reader.join()
        proc.wait()
    finally:
        killer.cancel()
        proc.stdout.close()
        stderr.close()
    return out, err[0] if err else ""
