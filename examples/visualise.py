"""Pictures of a graph and a workflow: Mermaid text, a Markdown file, a self-contained HTML page.

Run it from anywhere; it writes ``graph.md`` and ``graph.html`` in the working directory and opens
no browser (open ``graph.html`` yourself, or call ``view_mermaid(app)`` to open one).
"""

from __future__ import annotations

from treadle import (
    END,
    START,
    GraphBuilder,
    NodePartial,
    Workflow,
    WorkflowExecutionError,
    export_mermaid,
    save_mermaid,
    view_mermaid,
)


async def step(snapshot: object, ctx: object) -> NodePartial:
    return NodePartial()


def route(snapshot: object) -> str:
    return "write"


app = (
    GraphBuilder()
    .add_node("plan", step)
    .add_node("search", step)
    .add_node("read", step)
    .add_node("write", step)
    .add_edge(START, "plan")
    .add_edge("plan", "search")
    .add_edge("plan", "read")
    .add_edge(["search", "read"], "write")  # a join: write waits for both
    .add_conditional_edges("write", route, path_map={"again": "plan", "done": END})
    .compile()
)

# The text: static edges solid, the router's edges dashed and labelled, the join as a join node.
text = app.to_mermaid(orientation="LR", statuses={"plan": "completed", "search": "running"})
assert text == export_mermaid(app, "LR", {"plan": "completed", "search": "running"})
for line in text.splitlines():
    if "-->" in line or "-.->" in line or "---" in line or line.startswith("flowchart"):
        print(line)

# A Markdown file with a ```mermaid block, and a page that renders the same diagram.
print("wrote", save_mermaid(app, "graph.md").name)
page = view_mermaid(app, "graph.html", open_browser=False, title="research graph")
print("wrote", page.name)


# A workflow is drawn as its task DAG, each task coloured by its status.
def extract() -> list[int]:
    return [3, 1, 2]


def clean(extract: list[int]) -> list[int]:
    return sorted(extract)


def load(clean: list[int]) -> None:
    raise RuntimeError("the warehouse is read-only")


wf = Workflow("etl")
wf.add_task(extract)
wf.add_task(clean, depends_on=["extract"])
wf.add_task(load, depends_on=["clean"])
try:
    wf.run()
except WorkflowExecutionError as error:
    print("workflow failed at:", error.failed_task)
for line in export_mermaid(wf).splitlines():
    if line.lstrip().startswith("class "):
        print(line)
