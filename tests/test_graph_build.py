"""GraphBuilder arguments, node kinds, RetryPolicy and the shape of the CompiledGraph."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest

from treadle.runtime.graph.app import App
from treadle.runtime.graph.builder import (
    END,
    START,
    CompiledGraph,
    ConditionalEdge,
    GraphBuilder,
    JoinEdge,
    NodeSpec,
    RetryPolicy,
    node_kind,
)


async def async_node(snapshot: Any, ctx: Any) -> None:
    return None


def sync_node(snapshot: Any, ctx: Any) -> None:
    return None


async def async_node_extra(snapshot: Any, ctx: Any, extra: int) -> None:
    return None


class AsyncRunner:
    async def run(self, snapshot: Any, ctx: Any) -> None:
        return None


class AsyncCallable:
    async def __call__(self, snapshot: Any, ctx: Any) -> None:
        return None


class SyncCallable:
    def __call__(self, snapshot: Any, ctx: Any) -> None:
        return None


class RunnerAndSyncCall(AsyncRunner):
    def __call__(self, snapshot: Any, ctx: Any) -> None:
        return None


class SyncRunOnly:
    def run(self, snapshot: Any, ctx: Any) -> None:
        return None


class Methods:
    async def amethod(self, snapshot: Any, ctx: Any) -> None:
        return None

    def smethod(self, snapshot: Any, ctx: Any) -> None:
        return None


def route(snapshot: Any) -> str:
    return END


def graph_of(builder: GraphBuilder) -> CompiledGraph:
    app = builder.compile()
    assert isinstance(app, App)
    return app.graph


# -- node kinds ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "kind"),
    [
        (async_node, "async"),
        (sync_node, "sync"),
        (functools.partial(async_node_extra, extra=1), "async"),
        (functools.partial(functools.partial(async_node_extra), extra=1), "async"),
        (functools.partial(AsyncCallable()), "async"),
        (AsyncRunner(), "runner"),
        (AsyncCallable(), "async"),
        (SyncCallable(), "sync"),
        (RunnerAndSyncCall(), "runner"),
        (Methods().amethod, "async"),
        (Methods().smethod, "sync"),
        (functools.partial(sync_node), "sync"),
        (lambda snapshot, ctx: None, "sync"),
    ],
)
def test_node_kind_detection(fn: object, kind: str) -> None:
    assert node_kind("n", fn) == kind
    graph = graph_of(GraphBuilder().add_node("n", fn).add_edge(START, "n").add_edge("n", END))
    assert graph.nodes["n"].kind == kind
    assert graph.nodes["n"].fn is fn


@pytest.mark.parametrize("fn", [42, "nope", SyncRunOnly(), None])
def test_neither_callable_nor_runner_is_a_type_error_naming_the_node(fn: object) -> None:
    with pytest.raises(TypeError, match=r"^node 'bad': .* is neither callable nor an object with"):
        GraphBuilder().add_node("bad", fn)


def test_runner_class_instead_of_instance_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"^node 'r': AsyncRunner is a class; pass an instance"):
        GraphBuilder().add_node("r", AsyncRunner)


def test_async_generator_is_rejected() -> None:
    async def agen(snapshot: Any, ctx: Any) -> Any:
        yield None

    with pytest.raises(TypeError, match=r"^node 'g': .* is an async generator"):
        GraphBuilder().add_node("g", agen)


def test_thread_only_for_sync_bodies() -> None:
    builder = GraphBuilder().add_node("s", sync_node, thread=True)
    graph = graph_of(builder.add_edge(START, "s").add_edge("s", END))
    assert graph.nodes["s"].thread is True
    for fn, kind in ((async_node, "async"), (AsyncRunner(), "runner")):
        with pytest.raises(ValueError, match=rf"^node 'x': thread=True .* this node is {kind}$"):
            GraphBuilder().add_node("x", fn, thread=True)


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
def test_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match=r"^node 'x': timeout must be > 0 seconds or None"):
        GraphBuilder().add_node("x", async_node, timeout=timeout)


def test_node_spec_defaults() -> None:
    graph = graph_of(
        GraphBuilder().add_node("a", async_node).add_edge(START, "a").add_edge("a", END)
    )
    assert graph.nodes["a"] == NodeSpec(
        name="a", fn=async_node, retry=RetryPolicy(), timeout=None, thread=False, kind="async"
    )


# -- retry policy ----------------------------------------------------------------------------------


def test_retry_policy_defaults_match_spec() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_interval, policy.backoff_factor) == (1, 0.5, 2.0)
    assert (policy.max_interval, policy.jitter, policy.retry_on) == (60.0, True, Exception)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, r"^RetryPolicy.max_attempts must be >= 1, got 0$"),
        ({"initial_interval": -0.1}, r"^RetryPolicy.initial_interval must be >= 0 seconds"),
        ({"max_interval": float("nan")}, r"^RetryPolicy.max_interval must be >= 0 seconds"),
        ({"backoff_factor": 0.5}, r"^RetryPolicy.backoff_factor must be >= 1, got 0.5$"),
    ],
)
def test_retry_policy_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


def test_retry_on_must_be_exceptions_or_predicate() -> None:
    with pytest.raises(TypeError, match="must be an exception class"):
        RetryPolicy(retry_on=int)  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(TypeError, match="tuple must hold exception classes"):
        RetryPolicy(retry_on=(ValueError, "x"))  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(TypeError, match="or a predicate"):
        RetryPolicy(retry_on=3)  # type: ignore[arg-type]  # the point of the test


def test_should_retry_counts_attempts_and_matches_errors() -> None:
    policy = RetryPolicy(max_attempts=3, retry_on=ValueError)
    assert policy.should_retry(ValueError(), 1)
    assert policy.should_retry(ValueError(), 2)
    assert not policy.should_retry(ValueError(), 3)
    assert not policy.should_retry(KeyError(), 1)
    assert RetryPolicy(max_attempts=2, retry_on=(KeyError, OSError)).should_retry(OSError(), 1)
    assert not RetryPolicy().should_retry(ValueError(), 1)
    predicate = RetryPolicy(max_attempts=5, retry_on=lambda e: "again" in str(e))
    assert predicate.should_retry(RuntimeError("try again"), 4)
    assert not predicate.should_retry(RuntimeError("fatal"), 1)


def test_should_retry_never_retries_cancellation_like_errors() -> None:
    policy = RetryPolicy(max_attempts=5, retry_on=BaseException)
    assert not policy.should_retry(KeyboardInterrupt(), 1)
    assert not policy.should_retry(SystemExit(), 1)
    assert policy.should_retry(ValueError(), 1)


def test_delay_is_capped_exponential() -> None:
    policy = RetryPolicy(initial_interval=0.5, backoff_factor=2.0, max_interval=3.0, jitter=False)
    assert [policy.delay(a) for a in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(10_000) == 3.0  # no OverflowError
    with pytest.raises(ValueError, match="1-based"):
        policy.delay(0)


def test_delay_jitter_stays_in_half_to_full_and_is_reproducible() -> None:
    policy = RetryPolicy(initial_interval=1.0, backoff_factor=3.0, max_interval=100.0)
    for attempt in range(1, 8):
        full = min(100.0, 3.0 ** (attempt - 1))
        d = policy.delay(attempt, random.Random(attempt))
        assert 0.5 * full <= d <= full
        assert d == policy.delay(attempt, random.Random(attempt))
    assert len({policy.delay(1, random.Random(seed)) for seed in range(20)}) > 1


# -- edges and the compiled shape ------------------------------------------------------------------


def test_compiled_graph_shape() -> None:
    graph = graph_of(
        GraphBuilder()
        .add_node("plan", async_node)
        .add_node("work", sync_node)
        .add_node("other", sync_node)
        .add_node("join", async_node)
        .add_edge(START, "plan")
        .add_edge("plan", "other")
        .add_edge("plan", "work")
        .add_conditional_edges("plan", route, path_map=["work", END])
        .add_edge(["work", "other"], "join")
        .add_edge(["join"], END)
    )
    assert list(graph.nodes) == ["plan", "work", "other", "join"]
    assert START not in graph.nodes
    assert END not in graph.nodes
    assert dict(graph.edges) == {
        START: ("plan",),
        "plan": ("other", "work"),
        "work": (),
        "other": (),
        "join": (END,),
    }
    (cond,) = graph.conditional_edges
    assert cond.source == "plan"
    assert cond.fn is route
    assert cond.path_map == ("work", END)
    assert graph.conditional_by_source["plan"] == (cond,)
    assert graph.conditional_by_source[START] == () == graph.conditional_by_source["work"]
    join = JoinEdge(sources=("work", "other"), target="join")
    assert graph.joins == (join,)
    assert graph.joins_by_source["work"] == (join,) == graph.joins_by_source["other"]
    assert graph.joins_by_source["plan"] == ()
    assert graph.joins_by_target["join"] == (join,)
    meta = graph.graph_metadata()
    assert (meta.node_count, meta.edge_count, meta.conditional_count, meta.join_count) == (
        4,
        4,
        1,
        1,
    )


def test_compiled_graph_is_a_snapshot_of_the_builder() -> None:
    builder = GraphBuilder().add_node("a", async_node).add_edge(START, "a").add_edge("a", END)
    first = graph_of(builder)
    builder.add_node("b", async_node).add_edge("a", "b").add_edge("b", END)
    second = graph_of(builder)
    assert list(first.nodes) == ["a"]
    assert first.edges["a"] == (END,)
    assert list(second.nodes) == ["a", "b"]
    assert second.edges["a"] == (END, "b")
    with pytest.raises(TypeError):
        first.nodes["x"] = first.nodes["a"]  # type: ignore[index]  # read-only mapping


def test_start_to_end_alone_compiles() -> None:
    graph = graph_of(GraphBuilder().add_edge(START, END))
    assert dict(graph.nodes) == {}
    assert graph.edges[START] == (END,)


def test_add_edge_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"^add_edge\(\[\], 'a'\) needs at least one source$"):
        GraphBuilder().add_edge([], "a")
    with pytest.raises(TypeError, match="add_edge destination must be a node name"):
        GraphBuilder().add_edge("a", 3)  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(TypeError, match="add_edge source must be a node name"):
        GraphBuilder().add_edge(["a", None], "b")  # type: ignore[list-item]  # the point


def test_add_conditional_edges_argument_errors() -> None:
    with pytest.raises(TypeError, match="the router must be callable"):
        GraphBuilder().add_conditional_edges("a", "route")  # type: ignore[arg-type]  # the point
    with pytest.raises(TypeError, match="path_map of the conditional edge from 'a' must be"):
        GraphBuilder().add_conditional_edges("a", route, [1])  # type: ignore[list-item]  # the point


def test_path_map_forms() -> None:
    builder = GraphBuilder().add_node("a", async_node).add_node("b", async_node)
    builder.add_edge(START, "a").add_edge("b", END)
    builder.add_conditional_edges("a", route, {"go": "b", "stop": END, "again": "b"})
    builder.add_conditional_edges("a", route, "b")
    builder.add_conditional_edges("a", route, ["b", "b", END])
    mapped, single, listed = graph_of(builder).conditional_edges
    assert mapped.path_map == ("b", END)
    assert mapped.mapping == (("go", "b"), ("stop", END), ("again", "b"))
    assert single.path_map == ("b",)
    assert single.mapping is None
    assert listed.path_map == ("b", END)


def test_conditional_resolve() -> None:
    mapped = ConditionalEdge("a", route, ("b", END), mapping=(("go", "b"), ("stop", END)))
    assert mapped.resolve("go") == ["b"]
    assert mapped.resolve(["stop", "go", "elsewhere"]) == [END, "b", "elsewhere"]
    assert mapped.resolve(("go",)) == ["b"]
    plain = ConditionalEdge("a", route, None)
    assert plain.resolve("x") == ["x"]
    assert plain.resolve(["x", "y"]) == ["x", "y"]
    assert plain.resolve([]) == []
    booleans = ConditionalEdge("a", route, ("b",), mapping=((True, "b"),))  # type: ignore[arg-type]
    assert booleans.resolve(True) == ["b"]  # type: ignore[arg-type]  # LangGraph-style keys
