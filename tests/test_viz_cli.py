"""``treadle graph --format mermaid`` and ``treadle view``: the text, the page, clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mermaid_subset import parse
from test_cli import treadle

from treadle.runtime.demo import build_demo

DEMO = "treadle.runtime.demo:build_demo"


def page_config(page: str) -> dict[str, object]:
    match = re.search(r'<script type="application/json" id="treadle-config">(.*?)</script>', page)
    assert match is not None
    config: dict[str, object] = json.loads(match.group(1))
    return config


def test_graph_prints_mermaid_text(tmp_path: Path) -> None:
    result = treadle("graph", DEMO, "--format", "mermaid", "--orientation", "LR", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == build_demo().to_mermaid(orientation="LR")
    chart = parse(result.stdout)
    assert chart.orientation == "LR"
    assert "plan" in {label for _, label in chart.nodes.values()}


def test_view_writes_a_static_page_without_opening_a_browser(tmp_path: Path) -> None:
    out = tmp_path / "demo.html"
    result = treadle("view", DEMO, "--out", str(out), "--no-open", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    page = out.read_text(encoding="utf-8")
    config = page_config(page)
    assert config["source"] == build_demo().to_mermaid()
    assert config["live"] is None
    assert '<script src="https://cdn.jsdelivr.net/npm/mermaid@12/dist/mermaid.min.js">' in page


def test_view_live_inlines_a_local_mermaid(tmp_path: Path) -> None:
    fake = tmp_path / "mermaid.min.js"
    fake.write_text("window.mermaid = {marker: '</script><!-- x'};", encoding="utf-8")
    out = tmp_path / "live.html"
    url = "ws://127.0.0.1:8765/sessions/s1/events"
    result = treadle("view", DEMO, "--out", str(out), "--no-open", "--live", url,
                     "--mermaid-js", str(fake), "--token", "t0k", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    config = page_config(page)
    assert (config["live"], config["token"]) == (url, "t0k")
    # Inlined, with the sequences that would end the <script> element written another way.
    assert "window.mermaid = {marker: '\\x3C/script>\\x3C!-- x'};" in page
    assert "cdn.jsdelivr" not in page


def test_view_errors_are_one_line(tmp_path: Path) -> None:
    bad_live = treadle("view", DEMO, "--no-open", "--live", "http://x/", cwd=tmp_path)
    assert bad_live.returncode == 1
    assert bad_live.stderr == (
        "treadle: live='http://x/' is not a WebSocket URL; pass ws://HOST:PORT/sessions/ID/events\n"
    )
    missing = treadle("view", DEMO, "--no-open", "--mermaid-js", "nope.js", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.startswith("treadle: mermaid_js='nope.js' is neither an http(s) URL")
    assert "Traceback" not in missing.stderr


def test_graph_and_view_take_a_workflow(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(
        "from treadle import Workflow\n"
        "def extract():\n    return 1\n"
        "def load(extract):\n    return extract\n"
        "wf = Workflow('etl')\n"
        "wf.add_task(extract)\n"
        "wf.add_task(load, depends_on=['extract'])\n",
        encoding="utf-8",
    )
    text = treadle("graph", "flows:wf", "--format", "mermaid", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    chart = parse(text.stdout)
    assert chart.classes[chart.id_of("load")] == "pending"
    described = treadle("graph", "flows:wf", cwd=tmp_path)
    assert json.loads(described.stdout) == {
        "workflow": "etl",
        "tasks": [
            {"name": "extract", "depends_on": [], "status": "pending"},
            {"name": "load", "depends_on": ["extract"], "status": "pending"},
        ],
    }
    page = treadle("view", "flows:wf", "--no-open", "--out", "wf.html", cwd=tmp_path)
    assert page.returncode == 0, page.stderr
    assert page_config((tmp_path / "wf.html").read_text(encoding="utf-8"))["source"] == text.stdout
    wrong = treadle("view", "flows:extract", "--no-open", cwd=tmp_path)
    assert wrong.returncode == 2
    assert wrong.stderr == (
        "treadle: flows:extract is an object of type int: name an App, a GraphBuilder, a Workflow "
        "or a function returning one\n"
    )


def test_run_view_needs_a_websocket(tmp_path: Path) -> None:
    result = treadle("run", DEMO, "--view", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        "treadle: --view needs --ws PORT: the page follows the run over that WebSocket\n"
    )
