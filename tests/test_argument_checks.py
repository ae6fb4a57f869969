"""Arguments are checked before anything starts, and errors name the argument (SPEC 4.4, 11)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from treadle import END, START, AppRunner, GraphBuilder, RetryPolicy


async def body(snapshot: Any, ctx: Any) -> None:
    return None


def app() -> Any:
    return GraphBuilder().add_node("a", body).add_edge(START, "a").add_edge("a", END).compile()


def live_tasks() -> int:
    """How many tasks run under the root task right now."""
    count, nurseries = 0, list(trio.lowlevel.current_root_task().child_nurseries)
    while nurseries:
        nursery = nurseries.pop()
        count += len(nursery.child_tasks)
        for task in nursery.child_tasks:
            nurseries.extend(task.child_nurseries)
    return count


@pytest.mark.parametrize(
    ("args", "options", "error", "words"),
    [
        (("not an app",), {}, TypeError, "app"),
        ((None,), {}, TypeError, "app"),
        ((), {"max_threads": 0}, ValueError, "max_threads"),
        ((), {"max_threads": "8"}, TypeError, "max_threads"),
        ((), {"durability": "never"}, ValueError, "durability"),
        ((), {"concurrency_limit": 0}, ValueError, "concurrency_limit"),
    ],
)
async def test_app_runner_rejects_bad_arguments_before_starting_anything(
    args: tuple[Any, ...], options: dict[str, Any], error: type[Exception], words: str
) -> None:
    before = live_tasks()
    with trio.fail_after(5):
        with pytest.raises(error, match=words):
            async with AppRunner(*(args or (app(),)), **options):
                pytest.fail("the runner started")
        await trio.testing.wait_all_tasks_blocked()
    assert live_tasks() == before


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda b: b.add_edge(1, "a"), r"add_edge source .* got 1"),
        (lambda b: b.add_edge("a", 2), r"add_edge destination .* got 2"),
        (lambda b: b.add_edge([START, 3], "a"), r"add_edge source .* got 3"),
        (lambda b: b.add_node("a", body, timeout="x"), r"node 'a': timeout .* 'x'"),
        (lambda b: b.add_node("a", body, timeout=True), r"node 'a': timeout .* True"),
        (lambda b: b.add_node("a", body, retry="x"), r"node 'a': retry .* RetryPolicy"),
        (lambda b: b.add_node("a", body, retry=3), r"node 'a': retry .* RetryPolicy"),
        (lambda b: b.add_node("a", body, thread="yes"), r"node 'a': thread .* 'yes'"),
    ],
)
def test_graph_builder_type_errors_name_the_argument(call: Any, words: str) -> None:
    with pytest.raises(TypeError, match=words):
        call(GraphBuilder())


def test_graph_builder_still_accepts_every_valid_form() -> None:
    built = (
        GraphBuilder()
        .add_node("a", body, timeout=1, retry=RetryPolicy(max_attempts=2))
        .add_node("b", body, timeout=0.5)
        .add_edge(START, "a")
        .add_edge(("a",), "b")
        .add_edge(["a", "b"], END)
        .compile()
    )
    assert built.graph.nodes["a"].timeout == 1
