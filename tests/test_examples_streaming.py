"""The streaming examples run as a user runs them (``python examples/x.py``) and print what they
promise: every sink fed, exact drop counts, JSON that reads back equal, a sink restarted and one
detached."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# Regular expressions matched, in order, against whole output lines.
EXPECTED: dict[str, list[str]] = {
    "streaming_sinks.py": [
        r"\[etl #0\] fetch@1 fetch: downloaded 3 rows",
        r"\[etl #3\] clean@2 clean: row 15 ok",
        r"\[etl #5\] __treadle_stream_end__: session=etl status=completed step=3",
        r"total: 27",
        r"memory sink: 6 events",
        r"subscriber: 6 events, last __treadle_stream_end__",
        r"events.jsonl: 6 lines, same events: True",
        r"sink stdout: stopped, errors=0",
        r"sink memory: stopped, errors=0",
        r"sink jsonl: stopped, errors=0",
    ],
    "streaming_backpressure.py": [
        r"run took 2.00 s of virtual time; the memory sink holds 201 events",
        r"run took 2.00 s of virtual time; the memory sink holds 201 events",
        r"slow reader: received \d+, dropped \d+, together 201",
        r"slow reader's last event: __treadle_stream_end__",
        r"stuck reader: dropped 185 \(= 201 - its capacity of 16\)",
        r"stuck reader, read late: 16 events, ending with __treadle_stream_end__",
        r"same virtual time with slow readers: True",
        r"lossless reader: received 201, dropped 0",
        r"the run waited for it: 1\d\.\d\d s of virtual time",
    ],
    "streaming_slow_sinks.py": [
        r"run finished before the slow sink caught up: True",
        r"slow sink handled 101 of 101 events by the time the runner closed",
        r"run with a hung sink completed 100 steps",
        r"hung sink: failed, errors=1, dropped=\d+",
        r"  SinkTimeout: sink 'hung': handle did not return within 0.2 s; it was abandoned .*",
        r"NodeRunError: node='parse' key='tags'",
        r"stream ended once: status=error",
    ],
    "websocket_stream.py": [
        r"serving ws://127\.0\.0\.1:\d+/sessions/job/events",
        r"live: #0 node\.started: \w+ started at step 1",
        r"live: #9 step\.completed: step 1 completed: ran a, bb, ccc",
        r"live: #10 node\.started: summary started at step 2",
        r"live: #11 summary: 3 parts done",
        r"live: #14 __treadle_stream_end__: session=job status=completed step=2",
        r"final extra: \{'a': True, 'bb': True, 'ccc': True, 'parts': 3\}",
        r"the live reader saw all 15 events once, in order: True",
        r"replayed from seq 3: 3\.\.14 \(12 events\)",
        r"server: 2 connections, 0 events dropped",
    ],
    "streaming_json.py": [
        r"one event as JSON:",
        r'  "timestamp": 1700000000.0,',
        r'compact: \{"type":"node","scope":"prompt","message":"asking the model",.*',
        r"LLM scopes: \['chunk', 'chunk', 'chunk', 'final'\]",
        r"answer: Treadle streams events.",
        r"run.jsonl: 6 lines, read back equal: True",
        r"thread.jsonl: 6 lines, read back equal: True",
        r"keys: \['message', 'metadata', 'scope', 'seq', 'session_id', 'timestamp', 'type'\].*",
        r"canonical order is the emission order here: True",
    ],
    "streaming_custom_sink.py": [
        r"webhook: connected",
        r"webhook: closed after 15 deliveries",
        r"run completed: True",
        r"  #1 broken: ValueError: cannot encode 'tick'",
        r"  #2 webhook: ConnectionError: connection reset by peer",
        r"  #6 broken: ValueError: cannot encode '.*'",
        r"memory: stopped, errors=0, restarts=0, last error at -",
        r"webhook: stopped, errors=2, restarts=2, last error at 0.12 s",
        r"broken: failed, errors=6, restarts=5, last error at 3.10 s",
        r"memory: all 10 ticks, and 8 sink.error events, first:",
        r"  broken: ValueError: cannot encode 'tick'",
    ],
}


def run_example(name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_patterns_in_order(output: str, patterns: list[str]) -> None:
    lines = output.splitlines()
    position = 0
    for pattern in patterns:
        for index in range(position, len(lines)):
            if re.fullmatch(pattern, lines[index]):
                position = index + 1
                break
        else:
            pytest.fail(f"no line (in order) matching {pattern!r} in output:\n{output}")
    assert position == len(lines), f"unexpected lines after the last expected one:\n{output}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_streaming_example_prints_expected_lines(name: str, tmp_path: Path) -> None:
    result = run_example(name, tmp_path)
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stderr}"
    assert_patterns_in_order(result.stdout, EXPECTED[name])


def test_pattern_matching_detects_missing_reordered_and_extra_lines() -> None:
    assert_patterns_in_order("a1\nb\nc", [r"a\d", "c"])
    with pytest.raises(pytest.fail.Exception):
        assert_patterns_in_order("a\nb\nc", ["c", "a"])
    with pytest.raises(AssertionError):
        assert_patterns_in_order("a\nb\nc", ["a", "b"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_streaming_example_uses_only_the_public_api(name: str) -> None:
    tree = ast.parse((EXAMPLES / name).read_text(encoding="utf-8"))
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    private = [module for module in imported if module.startswith("treadle.")]
    assert not private, f"{name} imports {private}; import from the package root instead"


def test_every_streaming_example_is_tested() -> None:
    names = {
        path.name for path in (*EXAMPLES.glob("streaming_*.py"), *EXAMPLES.glob("websocket_*.py"))
    }
    assert names == set(EXPECTED)


def test_streaming_doc_snippets_parse_and_name_public_things() -> None:
    import importlib

    treadle = importlib.import_module("treadle")
    text = (ROOT / "docs" / "streaming.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) >= 5
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module == "treadle":
                for alias in node.names:
                    assert hasattr(treadle, alias.name), f"streaming.md: treadle.{alias.name}"
    for name in EXPECTED:
        assert f"examples/{name}" in text, f"streaming.md does not list {name}"
