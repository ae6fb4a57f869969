"""``treadle run --ws`` serves a run's events; ``treadle events URL`` prints them from another
process, as StdOutSink would."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from subprocesses import read_to_end

ENV = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
if "PYTHONPATH" in os.environ:  # a checkout tested without installing it
    ENV["PYTHONPATH"] = os.environ["PYTHONPATH"]

APP = """
from pathlib import Path
import trio
from treadle import END, START, GraphBuilder, NodePartial

async def slow(snapshot, ctx):
    while not Path("go").exists():  # the test says go once the second process follows the run
        await trio.sleep(0.05)
    await ctx.emit("work", "half-way there")
    return NodePartial(extra={"done": True})

app = GraphBuilder().add_node("slow", slow).add_edge(START, "slow").add_edge("slow", END).compile()
"""


def treadle(*args: str, cwd: Path) -> list[str]:
    return [sys.executable, "-m", "treadle", *args]


@pytest.mark.watchdog(90)
def test_run_serves_its_events_and_events_prints_them(tmp_path: Path) -> None:
    (tmp_path / "wsflow.py").write_text(textwrap.dedent(APP))
    run = subprocess.Popen(
        treadle("run", "wsflow:app", "--session", "job", "--ws", "0", "--ws-token", "tok",
                "--checkpointer", "memory://", cwd=tmp_path),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        assert run.stdout is not None
        first = run.stdout.readline()
        assert first.startswith("serving events at ws://127.0.0.1:"), first
        url = first.split()[3]
        assert url.endswith("/sessions/job/events")
        tail = subprocess.Popen(
            treadle("events", url, "--token", "tok", "--from-seq", "0", cwd=tmp_path),
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip
        assert tail.stdout is not None
        # Its first line is the node's start, replayed: it follows the run, which may go on.
        head = tail.stdout.readline()
        (tmp_path / "go").touch()
        rest, tail_err = read_to_end(tail)
        out, err = read_to_end(run)
    finally:
        run.kill()
    assert run.returncode == 0, err
    assert tail.returncode == 0, tail_err
    lines = (head + rest).splitlines()
    assert lines[0] == "[job #0] slow@1 node.started: slow started at step 1"
    assert "[job #1] slow@1 work: half-way there" in lines
    assert lines[-1].startswith("[job #")
    assert "__treadle_stream_end__: session=job" in lines[-1]
    # The run printed the same events itself (StdOutSink), in the same form.
    missing = [line for line in lines if line not in out]
    assert not missing, f"the run's own output lacks {missing}:\n{out}"


def test_events_reports_a_refused_or_unreachable_server_in_one_line(tmp_path: Path) -> None:
    bad = subprocess.run(
        treadle("events", "http://127.0.0.1:1/events", cwd=tmp_path),
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=ENV,
    )  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("treadle: an event stream URL starts with ws://")
    assert "Traceback" not in bad.stderr
