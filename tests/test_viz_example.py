"""examples/visualise.py runs as a user runs it, prints what docs/visualisation.md says, and writes
the Markdown file and page it names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mermaid_subset import parse
from test_examples_core import EXAMPLES, assert_lines_in_order

EXPECTED = [
    "flowchart LR",
    "    t_start --> n_plan",
    "    n_plan --> n_read",
    "    n_plan --> n_search",
    '    n_write -.->|"again"| n_plan',
    '    n_write -.->|"done"| t_end',
    "    n_read --- j_0",
    "    n_search --- j_0",
    "    j_0 --> n_write",
    "wrote graph.md",
    "wrote graph.html",
    "workflow failed at: load",
    "    class n_clean,n_extract completed",
    "    class n_load failed",
]


def test_visualise_example(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "visualise.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert_lines_in_order(result.stdout, EXPECTED)
    markdown = (tmp_path / "graph.md").read_text(encoding="utf-8")
    assert markdown.startswith("```mermaid\nflowchart TD\n")
    chart = parse(markdown.removeprefix("```mermaid\n").removesuffix("```\n"))
    assert {label for _, label in chart.nodes.values()} >= {"plan", "search", "read", "write"}
    page = (tmp_path / "graph.html").read_text(encoding="utf-8")
    assert "<title>research graph</title>" in page
