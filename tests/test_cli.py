"""The command line, run as users run it: the installed ``treadle`` script in a real subprocess.

Every user mistake is one line on stderr and a non-zero exit code; a run's session id, ``--fresh``,
``--input``/``--message``, ``--jsonl`` and ``--verbose`` do what docs/cli.md says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# The console script pip installed beside this interpreter (issue 17: run it, not only -m treadle).
SCRIPT = Path(sys.executable).parent / "treadle"
DEMO = "treadle.runtime.demo:build_demo"
PG_REFUSED = "postgresql://postgres@127.0.0.1:1/test"


def treadle(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(TESTS)},
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (asserting there is exactly one)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("treadle: "), result.stderr
    return lines[0]


def test_the_installed_script_is_the_entry_point() -> None:
    assert SCRIPT.exists(), f"{SCRIPT} missing: install with pip install -e ."
    out = subprocess.run(
        [str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.startswith("usage: treadle")
    for command in ("demo", "run", "sessions", "graph"):
        assert command in out.stdout


def test_demo_runs_on_sqlite_then_resumes(tmp_path: Path) -> None:
    first = treadle("demo", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "sqlite checkpoints" in first.stdout
    assert "started session 'demo'" in first.stdout
    assert "Summary:" in first.stdout
    assert (tmp_path / "treadle.db").exists()
    second = treadle("demo", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resumed session 'demo' at step 6" in second.stdout
    assert "already complete" in second.stdout
    history = treadle("sessions", "history", "demo", cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    assert "step 1: ran plan" in history.stdout


def test_graph_json(tmp_path: Path) -> None:
    graph = treadle("graph", DEMO, cwd=tmp_path)
    assert graph.returncode == 0, graph.stderr
    described = json.loads(graph.stdout)
    assert "plan" in described["nodes"]


MISTAKES = [
    # (arguments, exit code, words the one line must hold)
    (["sessions", "show"], 2, "needs a session id"),
    (["sessions", "history"], 2, "needs a session id"),
    (["sessions", "delete"], 2, "needs a session id"),
    (["sessions", "show", "nope"], 1, "no checkpoint for session 'nope'"),
    (["sessions", "history", "nope"], 1, "no checkpoint for session 'nope'"),
    (["sessions", "delete", "nope"], 1, "no checkpoint for session 'nope'"),
    (["sessions", "prune"], 2, "--keep-last"),
    (["sessions", "list", "--checkpointer", PG_REFUSED], 1, "cannot connect"),
    (["sessions", "list", "--checkpointer", "sqlite:///missing/dir/t.db"], 1, "does not exist"),
    (["sessions", "list", "--checkpointer", "sqlite:////proc/t.db"], 1, "cannot open /proc/t.db"),
    (["sessions", "list", "--checkpointer", "ftp://x"], 1, "ftp"),
    (["sessions", "frobnicate"], 2, "invalid choice"),
    (["sessions", "list", "--keep-last", "x"], 2, "invalid int value"),
    (["run"], 2, "target"),
    (["run", "no_such_module:app"], 2, "cannot import module 'no_such_module'"),
    (["run", "cli_flows"], 2, "is not MODULE:ATTR"),
    (["run", "cli_flows:nope"], 2, "has no attribute 'nope'"),
    (["run", "cli_flows:not_a_graph"], 2, "of type int"),
    (["run", "cli_flows:counter", "--input", "{bad"], 2, "--input is not JSON"),
    (["run", "cli_flows:counter", "--input", "hello"], 2, "--message"),
    (["run", "cli_flows:counter", "--input", '"hello"'], 2, "JSON object"),
    (["run", "cli_flows:counter", "--input", "[1]"], 2, "JSON object"),
    (["run", "cli_flows:counter", "--input", '{"messages": [1]}'], 2, "messages[0]"),
    (["run", "cli_flows:counter", "--input", '{"messages": [{"role": "user"}]}'], 2, "content"),
    (["run", "cli_flows:counter", "--input", '{"extra": []}'], 2, "'extra'"),
    (["run", "cli_flows:counter", "--input", '{"mesages": []}'], 2, "'mesages'"),
    (["run", "cli_flows:counter", "--input", "{}", "--message", "hi"], 2, "not allowed with"),
    (["run", "cli_flows:counter", "--jsonl", "missing/dir/e.jsonl"], 2, "missing/dir/e.jsonl"),
    (["run", "cli_flows:counter", "--session", ""], 2, "session id"),
    (["run", "cli_flows:failing"], 1, "node 'boom' failed at step 1: RuntimeError"),
    (["graph", "cli_flows:nope"], 2, "has no attribute 'nope'"),
]


@pytest.mark.parametrize(
    ("args", "code", "words"), MISTAKES, ids=[" ".join(m[0]) for m in MISTAKES]
)
def test_a_user_mistake_is_one_line_and_an_exit_code(
    tmp_path: Path, args: list[str], code: int, words: str
) -> None:
    result = treadle(*args, cwd=tmp_path)
    line = one_line_error(result)
    assert words in line
    assert result.returncode == code


def test_jsonl_that_cannot_be_opened_fails_before_the_run(tmp_path: Path) -> None:
    result = treadle("run", "cli_flows:counter", "--jsonl", "missing/e.jsonl", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    listed = treadle("sessions", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == ""


def test_verbose_shows_the_failed_nodes_traceback(tmp_path: Path) -> None:
    result = treadle("run", "cli_flows:failing", "--verbose", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert 'raise RuntimeError("the model said no")' in result.stderr
    assert result.stderr.splitlines()[-1].startswith("treadle: node 'boom' failed at step 1")


def test_run_session_id_derives_from_the_target_and_fresh_starts_over(tmp_path: Path) -> None:
    first = treadle("run", "cli_flows:counter", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "started session 'cli_flows:counter'" in first.stdout
    assert "extra['n'] = 3" in first.stdout
    listed = treadle("sessions", "list", cwd=tmp_path)
    assert listed.stdout.split() == ["cli_flows:counter"]
    again = treadle("run", "cli_flows:counter", cwd=tmp_path)
    assert "resumed session 'cli_flows:counter' at step 3" in again.stdout
    assert "already complete" in again.stdout
    fresh = treadle("run", "cli_flows:counter", "--fresh", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert "started session 'cli_flows:counter'" in fresh.stdout
    history = treadle("sessions", "history", "cli_flows:counter", cwd=tmp_path)
    assert [line.split(":")[0] for line in history.stdout.splitlines()] == [
        "step 0",
        "step 1",
        "step 2",
        "step 3",
    ]


@pytest.mark.parametrize("target", ["cli_flows:counter_builder", "cli_flows:build_counter"])
def test_run_takes_a_graph_builder_or_a_factory(tmp_path: Path, target: str) -> None:
    result = treadle("run", target, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "extra['n'] =" in result.stdout


def test_input_json_and_message(tmp_path: Path) -> None:
    state = {"messages": [{"role": "system", "content": "be brief"}], "extra": {"n": 1}}
    result = treadle("run", "cli_flows:counter", "--input", json.dumps(state), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[system] be brief" in result.stdout
    assert "extra['n'] = 3" in result.stdout
    assert "step 2: ran tick" in result.stdout
    message = treadle("run", "cli_flows:counter", "--fresh", "--message", "{hi", cwd=tmp_path)
    assert message.returncode == 0, message.stderr
    assert "[user] {hi" in message.stdout


def test_jsonl_gets_every_event(tmp_path: Path) -> None:
    result = treadle("run", "cli_flows:counter", "--jsonl", "events.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert lines
    assert all(json.loads(line) for line in lines)


def test_output_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(SCRIPT), "run", "cli_flows:slow"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(TESTS)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("started session")
    proc.stdout.close()  # what `| head -1` does
    _, err = proc.communicate(timeout=60)
    assert err == ""
    assert proc.returncode == 141


def test_the_cli_example_runs_the_documented_commands(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(TESTS.parent / "examples" / "cli_flow.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    expected = [
        "$ treadle run cli_flow:app --message storage",
        "started session 'cli_flow:app'",
        "step 2: ran summarize; next __end__",
        "  [assistant] storage: 7 notes",
        "$ treadle run cli_flow:app",
        "resumed session 'cli_flow:app' at step 2",
        "session 'cli_flow:app' is already complete (--fresh starts it over)",
        "  [assistant] scheduling: 10 notes",
        "(exit code 2)",
        "$ treadle sessions list",
        "cli_flow:app",
        "step 2: ran summarize; updated messages",
        "treadle: no checkpoint for session 'nope'",
        "(exit code 1)",
    ]
    position = 0
    for line in expected:
        assert line in lines[position:], f"{line!r} missing after line {position}:\n{result.stdout}"
        position = lines.index(line, position) + 1
    assert (tmp_path / "treadle.db").exists()
