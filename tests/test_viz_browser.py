"""The pages in a real headless Chromium with Mermaid from npm: labels read back as written,
status colours, and a 5,000-task workflow drawn whole.

Skipped without Chromium or ``TREADLE_MERMAID_JS`` (failed instead with
``TREADLE_REQUIRE_BROWSER=1``, as in CI). Real time: no autojump clock here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import browser_parts, open_page

from treadle import END, START, GraphBuilder, Workflow, view_mermaid

NASTY = ['quote"s', "[br]{x}(y)", "#hash;semi", "ünï 😀", "%%{init: {}}%%", "<b>bold</b>",
         "a:::b", "style:#ff0000;", "$$x^2$$", "`md`", "pipe|x", "end", "o", "x", "a-b", "a_b",
         "a b", "&amp;"]  # fmt: skip
GREEN, RED = "rgb(40, 167, 69)", "rgb(220, 53, 69)"

# Each node's shown label, status class and shape fill, by node name.
READ_NODES = """
Object.fromEntries([...document.querySelectorAll('#treadle-diagram g.node[data-node]')].map(g => [
  g.getAttribute('data-node'),
  {label: (g.querySelector('.nodeLabel') || g.querySelector('text')).textContent,
   classes: g.getAttribute('class'),
   fill: getComputedStyle(g.querySelector('rect, path, polygon')).fill}]))
"""


async def body(snapshot: object, ctx: object) -> None:
    return None


@pytest.fixture
def parts() -> tuple[str, Path]:
    """Chromium and mermaid.min.js (a sync fixture, so a skip is reported with its reason)."""
    return browser_parts()


@pytest.mark.watchdog(120)
async def test_awkward_names_render_and_read_back_unchanged(
    tmp_path: Path, parts: tuple[str, Path]
) -> None:
    chromium, mermaid = parts
    builder = GraphBuilder()
    for name in NASTY:
        builder.add_node(name, body).add_edge(START, name).add_edge(name, END)
    page_path = view_mermaid(
        builder, tmp_path / "nasty.html", open_browser=False, mermaid_js=mermaid,
        statuses={"end": "completed", 'quote"s': "failed"},
    )  # fmt: skip
    async with open_page(chromium, tmp_path / "profile") as page:
        await page.goto(page_path.as_uri())
        await page.wait_for("window.treadleView.rendered || window.treadleView.error", 60)
        assert await page.evaluate("window.treadleView.error") is None, page.console
        nodes = await page.evaluate(READ_NODES)
        markup = await page.evaluate("document.querySelectorAll('#treadle-diagram b').length")
    assert sorted(nodes) == sorted(NASTY)
    assert {name: node["label"] for name, node in nodes.items()} == {n: n for n in NASTY}
    assert nodes["end"]["fill"] == GREEN
    assert "completed" in nodes["end"]["classes"]
    assert nodes['quote"s']["fill"] == RED
    assert markup == 0  # no label became markup


def big_workflow(tasks: int, width: int) -> Workflow:
    """``tasks`` tasks in ``width`` pipelines: each task depends on the one before it in its own.

    Dependencies that cross between pipelines make Mermaid's layout many times slower (crossing
    minimisation); the page would still draw them, but the test would take minutes.
    """
    wf = Workflow("big")
    for i in range(tasks):
        deps = [f"t{i - width}"] if i >= width else []
        wf.add_task(_named(f"t{i}"), depends_on=deps)
    return wf


def _named(name: str) -> object:
    def fn(**kwargs: object) -> None:
        return None

    fn.__name__ = fn.__qualname__ = name
    return fn


@pytest.mark.slow
@pytest.mark.watchdog(900)
async def test_a_five_thousand_task_workflow_page_draws_every_task(
    tmp_path: Path, parts: tuple[str, Path]
) -> None:
    chromium, mermaid = parts
    page_path = view_mermaid(
        big_workflow(5000, 50), tmp_path / "big.html", open_browser=False, mermaid_js=mermaid
    )
    async with open_page(chromium, tmp_path / "profile") as page:
        await page.goto(page_path.as_uri(), 800)
        await page.wait_for("window.treadleView.rendered || window.treadleView.error", 800, 0.5)
        assert await page.evaluate("window.treadleView.error") is None, page.console
        counts = await page.evaluate(
            "[document.querySelectorAll('#treadle-diagram svg g.node[data-node]').length,"
            " document.querySelectorAll('#treadle-diagram svg g.node').length,"
            " document.querySelectorAll('#treadle-diagram svg .flowchart-link').length]"
        )
    # 5,000 tasks plus START and END; 4,950 dependency arrows, 50 from START, 50 to END.
    assert counts == [5000, 5002, 5050]
