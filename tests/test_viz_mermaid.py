"""Mermaid export text: ids never collide, labels never break the syntax, edges drawn by kind,
status colours, the same text for the same graph, and 5,000 nodes in well under a second."""

from __future__ import annotations

import random
import time
import webbrowser
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mermaid_subset import parse

from treadle import (
    END,
    START,
    GraphBuilder,
    TaskStatus,
    Workflow,
    WorkflowExecutionError,
    export_mermaid,
    save_mermaid,
    view_mermaid,
)
from treadle.runtime.viz.mermaid import escape_label


async def body(snapshot: object, ctx: object) -> None:
    return None


def route(snapshot: object) -> str:
    return "work"


def planner() -> GraphBuilder:
    return (
        GraphBuilder()
        .add_node("plan", body)
        .add_node("work", body)
        .add_node("check", body)
        .add_node("merge", body)
        .add_edge(START, "plan")
        .add_conditional_edges("plan", route, path_map=["work", "check", END])
        .add_edge("work", "merge")
        .add_edge("check", "merge")
        .add_edge(["work", "check"], "merge")
        .add_edge("merge", END)
    )


node_names = st.text(min_size=1, max_size=12).filter(lambda n: n not in (START, END))


@given(names=st.lists(node_names, min_size=1, max_size=25, unique=True),
       keys=st.lists(st.text(max_size=6), max_size=5, unique=True))  # fmt: skip
def test_arbitrary_names_never_collide_and_never_break_the_syntax(
    names: list[str], keys: list[str]
) -> None:
    builder = GraphBuilder()
    for name in names:
        builder.add_node(name, body)
    first = names[0]
    builder.add_edge(START, first)
    for name in names[1:]:
        builder.add_edge(first, name)
    for name in names:
        builder.add_edge(name, END)
    if keys:
        builder.add_conditional_edges(first, route, path_map=dict.fromkeys(keys, END))
    text = export_mermaid(builder.compile())
    chart = parse(text)
    boxes = {label: node_id for node_id, (shape, label) in chart.nodes.items() if shape == "["}
    assert sorted(boxes) == sorted(names)  # one box per name, each labelled with it exactly
    assert len(set(boxes.values())) == len(names)
    dashed = [e for e in chart.edges if e[1] == "-.->"]
    if keys:  # every router value leads to END: one dashed edge listing them all
        [(_, _, label, _)] = dashed
        assert label == ", ".join(sorted(k or "''" for k in keys))
    assert len(chart.edges) == 1 + 2 * len(names) - 1 + len(dashed)


@given(text=st.text())
def test_label_escaping_reads_back_unchanged(text: str) -> None:
    chart = parse(f'flowchart TD\n    n_x["{escape_label(text)}"]\n')
    assert chart.label_of("n_x") == text


def test_look_alike_names_and_keywords_stay_distinct_nodes() -> None:
    names = ["a-b", "a_b", "a b", "a__b", "end", "END!", "o", "x", "graph", 'q"[#;]', "naïve ☕"]
    builder = GraphBuilder()
    for name in names:
        builder.add_node(name, body).add_edge(START, name).add_edge(name, END)
    chart = parse(export_mermaid(builder.compile()))
    boxes = {label: node_id for node_id, (shape, label) in chart.nodes.items() if shape == "["}
    assert sorted(boxes) == sorted(names)
    assert boxes["end"] == "n_end"
    assert len({boxes["a-b"], boxes["a_b"], boxes["a b"], boxes["a__b"]}) == 4
    assert 'n_q_22__5b__23__3b__5d_["q#quot;#91;#35;#59;#93;"]' in export_mermaid(builder)


def test_edges_are_drawn_by_kind() -> None:
    chart = parse(export_mermaid(planner().compile()))
    start, end = chart.id_of("START", "(["), chart.id_of("END", "([")
    plan, work, check, merge = (chart.id_of(n) for n in ("plan", "work", "check", "merge"))
    join = chart.id_of("join", "((")
    assert set(chart.edges) == {
        (start, "-->", None, plan),
        (work, "-->", None, merge),
        (check, "-->", None, merge),
        (merge, "-->", None, end),
        # Conditional edges: dashed, one per declared target, labelled with the router.
        (plan, "-.->", "route", work),
        (plan, "-.->", "route", check),
        (plan, "-.->", "route", end),
        # The join: both sources lead into one join node, which leads to the target.
        (work, "---", None, join),
        (check, "---", None, join),
        (join, "-->", None, merge),
    }
    assert chart.classes[start] == chart.classes[end] == "terminal"


def test_a_mapping_path_map_labels_each_edge_with_its_router_values() -> None:
    builder = (
        GraphBuilder()
        .add_node("a", body)
        .add_node("b", body)
        .add_edge(START, "a")
        .add_conditional_edges("a", route, path_map={"again": "a", "next": "b", "more": "b"})
        .add_edge("b", END)
    )
    chart = parse(export_mermaid(builder))
    a, b = chart.id_of("a"), chart.id_of("b")
    dashed = {e for e in chart.edges if e[1] == "-.->"}
    assert dashed == {(a, "-.->", "again", a), (a, "-.->", "more, next", b)}


def test_a_router_without_path_map_points_at_any_node() -> None:
    builder = GraphBuilder().add_node("a", body).add_edge(START, "a")
    builder.add_conditional_edges("a", lambda s: END)
    chart = parse(export_mermaid(builder))
    [edge] = [e for e in chart.edges if e[1] == "-.->"]
    assert edge[2] == "<lambda>"
    assert chart.nodes[edge[3]] == ("{{", "any node")


def test_status_colours_are_class_defs_and_statuses_assign_them() -> None:
    text = export_mermaid(
        planner(), statuses={"plan": "completed", "work": "failed", "check": "running"}
    )
    chart = parse(text)
    assert chart.class_defs["completed"].startswith("fill:#28a745")
    assert chart.class_defs["failed"].startswith("fill:#dc3545")
    assert chart.class_defs["running"].startswith("fill:#fd7e14")
    assert chart.class_defs["pending"].startswith("fill:#6c757d")
    assert chart.classes[chart.id_of("plan")] == "completed"
    assert chart.classes[chart.id_of("work")] == "failed"
    assert chart.classes[chart.id_of("check")] == "running"
    assert chart.id_of("merge") not in chart.classes


def test_statuses_accept_enum_values_and_refuse_unknown_names_or_states() -> None:
    class Status:
        value = "COMPLETED"

    assert "class n_plan completed" in export_mermaid(planner(), statuses={"plan": Status()})
    with pytest.raises(ValueError, match="statuses names 'nope', which is not a node"):
        export_mermaid(planner(), statuses={"nope": "running"})
    with pytest.raises(ValueError, match="node 'plan' has status 'done'; use one of pending"):
        export_mermaid(planner(), statuses={"plan": "done"})
    with pytest.raises(ValueError, match="orientation 'up' is not one of TD"):
        export_mermaid(planner(), orientation="up")
    with pytest.raises(TypeError, match="cannot draw a str: pass an App, a GraphBuilder or a Wo"):
        export_mermaid("plan")


def test_same_graph_same_text_whatever_the_insertion_order() -> None:
    edges = [(START, "a"), ("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", END)]
    texts = set()
    for seed in range(5):
        shuffled = list(edges)
        random.Random(seed).shuffle(shuffled)
        nodes = ["a", "b", "c", "d"]
        random.Random(seed).shuffle(nodes)
        builder = GraphBuilder()
        for name in nodes:
            builder.add_node(name, body)
        for src, dst in shuffled:
            builder.add_edge(src, dst)
        builder.add_conditional_edges("d", route, path_map=["a", END])
        texts.add(export_mermaid(builder.compile(), orientation="LR", statuses={"a": "running"}))
    assert len(texts) == 1
    assert texts.pop().startswith("flowchart LR\n")


def test_app_to_mermaid_equals_export_mermaid() -> None:
    app = planner().compile()
    assert app.to_mermaid(orientation="LR", statuses={"plan": "completed"}) == export_mermaid(
        app, orientation="LR", statuses={"plan": "completed"}
    )


def test_save_mermaid_writes_text_or_a_markdown_block(tmp_path: Path) -> None:
    app = planner().compile()
    plain = save_mermaid(app, tmp_path / "graph.mmd")
    assert plain.read_text(encoding="utf-8") == export_mermaid(app)
    fenced = save_mermaid(app, str(tmp_path / "graph.md"), statuses={"plan": "failed"})
    text = fenced.read_text(encoding="utf-8")
    assert text == f"```mermaid\n{export_mermaid(app, statuses={'plan': 'failed'})}```\n"


def wide_graph(n: int) -> GraphBuilder:
    """``n`` nodes as a binary tree under START, with a join over the last two and every leaf
    routed conditionally to END."""
    builder = GraphBuilder()
    for i in range(n):
        builder.add_node(f"task-{i}", body)
    builder.add_edge(START, "task-0")
    for i in range(1, n - 1):
        builder.add_edge(f"task-{(i - 1) // 2}", f"task-{i}")
    builder.add_edge([f"task-{n - 3}", f"task-{n - 2}"], f"task-{n - 1}")
    for i in range(n // 2 - 1, n):
        builder.add_conditional_edges(f"task-{i}", route, path_map=[END])
    return builder


def test_five_thousand_nodes_export_in_well_under_a_second() -> None:
    app = wide_graph(5000).compile()
    statuses = {f"task-{i}": "completed" for i in range(0, 5000, 2)}
    timings = []
    for _ in range(3):  # the best of three, so a busy machine's pause is not counted
        started = time.perf_counter()
        text = export_mermaid(app, statuses=statuses)
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.75, f"5,000 nodes took {min(timings):.3f} s at best"
    chart = parse(text)
    assert sum(1 for shape, _ in chart.nodes.values() if shape == "[") == 5000


def test_a_workflow_is_drawn_as_its_task_dag_coloured_by_task_status() -> None:
    def extract() -> int:
        return 3

    def clean(extract: int) -> int:
        return extract

    def audit(extract: int) -> int:
        return extract

    def load(clean: int, audit: int) -> int:
        raise RuntimeError("disk full")

    wf = Workflow("etl")
    wf.add_task(extract)
    wf.add_task(clean, depends_on=["extract"])
    wf.add_task(audit, depends_on=["extract"])
    wf.add_task(load, depends_on=["clean", "audit"])
    before = parse(export_mermaid(wf))
    assert {before.classes.get(before.id_of(n)) for n in ("extract", "load")} == {"pending"}
    with pytest.raises(WorkflowExecutionError):
        wf.run()
    chart = parse(export_mermaid(wf))
    start, end = chart.id_of("START", "(["), chart.id_of("END", "([")
    ex, cl, au, lo = (chart.id_of(n) for n in ("extract", "clean", "audit", "load"))
    # A task waits for all its dependencies: plain arrows, no join nodes.
    assert set(chart.edges) == {
        (start, "-->", None, ex),
        (ex, "-->", None, cl),
        (ex, "-->", None, au),
        (cl, "-->", None, lo),
        (au, "-->", None, lo),
        (lo, "-->", None, end),
    }
    assert [chart.classes[i] for i in (ex, cl, au, lo)] == ["completed"] * 3 + ["failed"]
    # Given statuses replace the tasks' own.
    assert "class n_load running" in export_mermaid(wf, statuses={"load": TaskStatus.RUNNING})


def test_view_mermaid_writes_a_temporary_page_and_opens_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[str] = []
    # The one stand-in: no browser can be opened here; the call it would get is recorded.
    monkeypatch.setattr(webbrowser, "open", opened.append)
    path = view_mermaid(planner(), title='a "title" <here>')
    try:
        assert path.is_absolute()
        assert path.name.startswith("treadle-")
        assert path.suffix == ".html"
        assert opened == [path.as_uri()]
        page = path.read_text(encoding="utf-8")
        assert "<title>a &quot;title&quot; &lt;here&gt;</title>" in page
        assert "\\u003chere\\u003e" in page  # the config JSON cannot end its <script> element
    finally:
        path.unlink()
