"""FlowWeaver's simulated ML pipeline, on treadle: eight tasks, a fan-out to validation and
evaluation that meet again in the report, a ``timeout`` on training (enforced under every executor
here), and results passed by parameter name instead of ``get_task_result`` closures.
"""

from __future__ import annotations

import random

from treadle import Task, ThreadedExecutor, Workflow


def load_data() -> dict[str, object]:
    rng = random.Random(7)
    rows = [{"x": rng.uniform(0, 10), "noise": rng.gauss(0, 1)} for _ in range(200)]
    return {"rows": rows, "source": "warehouse.samples"}


def preprocess(load_data: dict[str, list[dict[str, float]]]) -> list[dict[str, float]]:
    return [r | {"y": 3.0 * r["x"] + 2.0 + r["noise"]} for r in load_data["rows"]]


def engineer_features(preprocess: list[dict[str, float]]) -> list[tuple[float, float]]:
    return [(r["x"], r["y"]) for r in preprocess]


def split_data(
    engineer_features: list[tuple[float, float]],
) -> dict[str, list[tuple[float, float]]]:
    cut = int(len(engineer_features) * 0.8)
    return {"train": engineer_features[:cut], "test": engineer_features[cut:]}


def train_model(split_data: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    """Least squares for y = a*x + b."""
    pts = split_data["train"]
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    a = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    return {"a": a, "b": my - a * mx}


def validate_model(train_model: dict[str, float]) -> dict[str, bool]:
    return {"slope_ok": 2.5 < train_model["a"] < 3.5}


def evaluate_model(
    train_model: dict[str, float], split_data: dict[str, list[tuple[float, float]]]
) -> dict[str, float]:
    test = split_data["test"]
    mse = sum((train_model["a"] * x + train_model["b"] - y) ** 2 for x, y in test) / len(test)
    return {"mse": mse}


def generate_report(validate_model: dict[str, bool], evaluate_model: dict[str, float]) -> str:
    verdict = "ship it" if validate_model["slope_ok"] and evaluate_model["mse"] < 2 else "retrain"
    return f"mse below 2: {evaluate_model['mse'] < 2}; verdict: {verdict}"


def build() -> Workflow:
    workflow = Workflow(name="ML Pipeline")
    workflow.add_task(Task("load_data", load_data))
    workflow.add_task(Task("preprocess", preprocess), depends_on=["load_data"])
    workflow.add_task(Task("engineer_features", engineer_features), depends_on=["preprocess"])
    workflow.add_task(Task("split_data", split_data), depends_on=["engineer_features"])
    workflow.add_task(Task("train_model", train_model, timeout=60.0), depends_on=["split_data"])
    workflow.add_task(Task("validate_model", validate_model), depends_on=["train_model"])
    workflow.add_task(
        Task("evaluate_model", evaluate_model), depends_on=["train_model", "split_data"]
    )
    workflow.add_task(
        Task("generate_report", generate_report), depends_on=["validate_model", "evaluate_model"]
    )
    return workflow


def main() -> None:
    workflow = build()
    for i, layer in enumerate(workflow.get_execution_plan(), 1):
        print(f"layer {i}: {', '.join(t.name for t in layer)}")
    ThreadedExecutor(max_workers=2).execute(workflow)
    print(f"report: {workflow.get_task_result('generate_report')}")
    stats = workflow.get_workflow_stats()
    print(f"stats: {stats['completed']}/{stats['total_tasks']} completed, {stats['failed']} failed")


if __name__ == "__main__":
    main()
