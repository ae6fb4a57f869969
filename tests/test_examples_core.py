"""The core examples run as a user runs them and print what the docs say; the docs stay in step.

Each example is a subprocess (``python examples/x.py``) started in a fresh temporary directory, so
files it writes (``quickstart.db``) land there. Its output must hold the expected lines, in order,
and end with the last of them.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs"
CORE_DOCS = ("architecture.md", "quickstart.md", "graphs.md")
# Pages other engineers own; a link to one is only checked once the page exists.
OTHER_DOCS = frozenset({"streaming.md", "persistence.md", "benchmarks.md"})

EXPECTED: dict[str, list[str]] = {
    "quickstart.py": [
        "invoke: ['Ada', 'Hello, Ada!', 'HELLO, ADA!']",
        "step 1: ran ['greet'], next ['shout']",
        "step 2: ran ['shout'], next ['__end__']",
        "extra: {'greeted': 'Grace'}",
        "event #0 greet: greeting Linus",
        "event #1 __treadle_stream_end__: session=stream status=completed step=2",
        "streamed final: HELLO, LINUS!",
        "resumed s2 at step 1",
        "history: [(0, []), (1, ['greet']), (2, ['shout'])]",
        "persisted final: HELLO, BARBARA!",
    ],
    "fanout_join.py": [
        "step 1: ran ['plan'] -> next ['web', 'papers', 'code_fetch']",
        "step 2: ran ['web', 'papers', 'code_fetch'] -> next ['code_read']",
        "step 3: ran ['code_read'] -> next ['summarize']",
        "step 4: ran ['summarize'] -> next ['__end__']",
        "messages (frontier order):",
        "  user: research treadle",
        "  assistant: plan: ask web, papers and code",
        "  assistant: web: found something",
        "  assistant: papers: found something",
        "  assistant: code_fetch: found something",
        "  assistant: summary of finding.code, finding.code_fetch, finding.papers, finding.web",
        "extra['lead'] = 'code_fetch' (last writer in frontier order)",
        "'status' in extra: False",
        "concurrency_limit=1 gives the same state: True (4 events)",
    ],
    "conditional_loop.py": [
        "step 1: ran ['tick'] skipped [] updated ['messages', 'extra'] -> next ['tick']",
        "step 2: ran ['tick'] skipped [] updated ['messages', 'extra'] -> next ['tick']",
        "step 3: ran ['tick'] skipped [] updated ['messages', 'extra'] -> next ['dedupe']",
        "step 4: ran ['dedupe'] skipped [] updated ['extra'] -> next ['dedupe']",
        "step 5: ran ['dedupe'] skipped [] updated ['extra'] -> next ['dedupe']",
        "step 6: ran ['dedupe'] skipped [] updated [] -> next ['dedupe']",
        "step 7: ran [] skipped ['dedupe'] updated [] -> next []",
        "count: 3",
        "items: ['a', 'b', 'c']",
        "messages: ['tick 2', 'tick 3']",
        "versions: messages=4 extra=6",
        "run_steps: last step 7, completed True",
    ],
    "interrupts_and_retries.py": [
        "  fetch attempt 1",
        "  fetch attempt 2",
        "  fetch attempt 3",
        "paused after_node fetch at step 1",
        "paused before_node approve: step 1, frontier ['approve'], document 'draft v1'",
        "NodeRunError: node=publish step=3 cause=RuntimeError('the publishing service is down')",
        "after the failure: step 3, frontier ['publish'], published=False",
        "recorded error: scope=node:publish@3 RuntimeError: the publishing service is down",
        "paused after_step at step 4: ran ['publish'], completed=True",
        "completed at step 4: published=True, errors=1",
    ],
    "checkpoints_tour.py": [
        "essay steps: [(0, []), (1, ['draft']), (2, ['draft']), (3, ['draft']), (4, ['draft'])]",
        "essay last: draft 4 (plain)",
        "step 2 held version 2",
        "fork steps: [2, 3, 4]",
        "fork last: draft 4 (formal)",
        "essay untouched: 4",
        "durability=sync: stored steps [0, 1, 2, 3, 4]",
        "durability=async: stored steps [0, 1, 2, 3, 4]",
        "durability=exit: stored steps [4]",
        "reported: json-store/notes/000000000004.json (not valid JSON (truncated or garbage?))",
        "resumed from: Resumed(step=3)",
        "rewritten, last: draft 4 (plain)",
        "corrupt files left: []",
        "prune keep_last=2 on 'old': removed 3",
        "prune older than 3 minutes: removed 2",
        "old: steps [4]",
        "new: steps [1, 2, 3, 4]",
        "sessions: ['new']",
        "direct: sessions ['essay', 'essay-formal']",
        "direct: step 2 ran ['draft']",
        "direct: step 3 ran ['draft']",
        "direct: step 4 ran ['draft']",
    ],
    "big_state.py": [
        "final: 50100 messages, 50101 extra keys",
        "last message: note 100",
        "stored steps: 101",
        "first snapshot: 50000 messages, count=0",
        "messages read like a tuple: True",
        "extra as JSON: 50101 keys, note100 = {'step': 100}",
    ],
    "blocking_entry.py": [
        "CycleDetected: unconditional edges form a cycle: split -> count -> report -> split; "
        "loop through a conditional edge or a frontier command instead",
        "graph: 3 nodes, 4 edges",
        "[words #0] split@1 split: 8 words",
        "[words #1] count@2 count: 2 most common words",
        "[words #2] __treadle_stream_end__: session=words status=completed step=3",
        "most common: the x3, and x2",
        "NodeRunError: node 'broken' failed at step 1: ValueError: no words to count",
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


def assert_lines_in_order(output: str, expected: list[str]) -> None:
    lines = output.splitlines()
    position = 0
    for line in expected:
        try:
            position = lines.index(line, position) + 1
        except ValueError:
            pytest.fail(f"missing (or out of order) line {line!r} in output:\n{output}")
    assert lines[-1] == expected[-1], f"output does not end with {expected[-1]!r}:\n{output}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_prints_expected_lines(name: str, tmp_path: Path) -> None:
    result = run_example(name, tmp_path)
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stderr}"
    assert_lines_in_order(result.stdout, EXPECTED[name])


def test_quickstart_runs_twice_in_one_directory(tmp_path: Path) -> None:
    # It recreates its SQLite file, so a second run starts fresh instead of resuming old sessions.
    first = run_example("quickstart.py", tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "quickstart.db").exists()
    second = run_example("quickstart.py", tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout


def test_line_matching_detects_missing_and_reordered_lines() -> None:
    assert_lines_in_order("a\nb\nc", ["a", "c"])
    with pytest.raises(pytest.fail.Exception):
        assert_lines_in_order("a\nb\nc", ["c", "a"])
    with pytest.raises(AssertionError):
        assert_lines_in_order("a\nb\nc", ["a", "b"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_uses_only_the_public_api(name: str) -> None:
    source = (EXAMPLES / name).read_text(encoding="utf-8")
    imported = [
        node.module or ""
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom)
    ] + [
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    private = [module for module in imported if module.startswith("treadle.")]
    assert not private, f"{name} imports {private}; import from the package root instead"


def test_examples_readme_lists_every_core_example() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for name in EXPECTED:
        assert f"`{name}`" in readme, f"examples/README.md does not describe {name}"


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", ["quickstart.md", "graphs.md"])
def test_doc_python_blocks_parse(page: str) -> None:
    # Snippets may use top-level await (they run inside Trio); ast.parse accepts that.
    text = (DOCS / page).read_text(encoding="utf-8")
    blocks = _code_blocks(text, "python")
    assert blocks, f"{page} has no python example"
    for block in blocks:
        ast.parse(block)


@pytest.mark.parametrize("page", CORE_DOCS)
def test_doc_links_resolve(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        path = (DOCS / target).resolve()
        if path.name in OTHER_DOCS and not path.exists():
            continue
        assert path.exists(), f"{page} links to {target}, which does not exist"


def test_doc_names_are_public() -> None:
    # Every `Name` the quickstart and graph reference import from treadle must be exported.
    treadle = importlib.import_module("treadle")
    for page in ("quickstart.md", "graphs.md"):
        text = (DOCS / page).read_text(encoding="utf-8")
        for block in _code_blocks(text, "python"):
            for node in ast.walk(ast.parse(block)):
                if isinstance(node, ast.ImportFrom) and node.module == "treadle":
                    for alias in node.names:
                        assert hasattr(treadle, alias.name), f"{page}: treadle.{alias.name}"


def test_architecture_names_real_actors_and_messages() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    diagrams = _code_blocks(text, "mermaid")
    assert len(diagrams) >= 2, "the architecture page needs the actor diagram and the step diagram"
    actors = diagrams[0]
    for actor in ("AppRunner", "Scheduler", "node actor", "CheckpointerActor", "EventBus", "sink"):
        assert actor in actors, f"the actor diagram does not show {actor}"
    modules = {
        "treadle.runtime.execution.scheduler": (
            "RunStep",
            "RunToEnd",
            "GetView",
            "FlushCheckpoint",
        ),
        "treadle.runtime.execution.messages": ("Execute", "NodeDone", "StepCancel"),
        "treadle.runtime.checkpointers.actor": ("Call", "PipelinedSave", "Flush"),
    }
    for module_name, names in modules.items():
        module = importlib.import_module(module_name)
        for name in names:
            assert hasattr(module, name), f"{module_name} has no {name}"
            assert f"`{name}" in text, f"architecture.md does not describe {name}"
