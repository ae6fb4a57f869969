"""Graph definition: :class:`GraphBuilder` records nodes and edges; ``compile()`` validates them
into an immutable :class:`CompiledGraph` (the scheduler's hot-path view) wrapped in an ``App``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import random
import types
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final, Literal, TypeAlias, TypeVar

import attrs

from ..errors import GraphCompileError
from .reducers import Reducer, ReducerRegistry

if TYPE_CHECKING:
    from .app import App
    from .state import StateSnapshot

START: Final = "__start__"
END: Final = "__end__"

NodeKind: TypeAlias = Literal["async", "sync", "runner"]
Router: TypeAlias = "Callable[[StateSnapshot], str | Sequence[str]]"
RetryOn: TypeAlias = (
    "type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]"
)

_HASH_FORMAT: Final = "treadle-graph-v1"
_T = TypeVar("_T")


class InvalidJoin(GraphCompileError):
    """A join edge lists START among its sources; START never "runs", so the join could not fire."""

    def __init__(self, sources: Sequence[str], target: str) -> None:
        self.sources = tuple(sources)
        self.target = target
        super().__init__(
            f"join {_join_label(self.sources)} -> {target!r} is invalid: START cannot be a join "
            "source; add_edge(START, ...) to the other sources instead"
        )


def _join_label(sources: Sequence[str]) -> str:
    return "[" + ", ".join(sources) + "]"


# -- retry policy ----------------------------------------------------------------------------------


@attrs.frozen
class RetryPolicy:
    """How a node actor retries a failed attempt: exponential backoff, capped, optionally jittered.

    Only ``Exception`` instances are ever retried: cancellation (``trio.Cancelled``),
    ``KeyboardInterrupt`` and ``SystemExit`` always propagate, whatever ``retry_on`` says.

    Args:
        max_attempts: Total attempts including the first; ``1`` means no retry.
        initial_interval: Delay in seconds before the second attempt.
        backoff_factor: Multiplier applied to the delay after every further failure.
        max_interval: Upper bound of any single delay, in seconds.
        jitter: Scale each delay by a uniform factor in [0.5, 1.0] so retries of many
            nodes do not hit a shared dependency in lock-step.
        retry_on: An exception class, a tuple of them, or a predicate on the error.
    """

    max_attempts: int = 1
    initial_interval: float = 0.5
    backoff_factor: float = 2.0
    max_interval: float = 60.0
    jitter: bool = True
    retry_on: RetryOn = Exception

    def __attrs_post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts!r}")
        # `not (x >= 0)` also rejects NaN.
        if not self.initial_interval >= 0:
            raise ValueError(
                f"RetryPolicy.initial_interval must be >= 0 seconds, got {self.initial_interval!r}"
            )
        if not self.max_interval >= 0:
            raise ValueError(
                f"RetryPolicy.max_interval must be >= 0 seconds, got {self.max_interval!r}"
            )
        if not self.backoff_factor >= 1:
            raise ValueError(
                f"RetryPolicy.backoff_factor must be >= 1, got {self.backoff_factor!r}"
            )
        retry_on: object = self.retry_on
        if isinstance(retry_on, tuple):
            if not all(_is_exception_type(t) for t in retry_on):
                raise TypeError(
                    f"RetryPolicy.retry_on tuple must hold exception classes, got {retry_on!r}"
                )
        elif isinstance(retry_on, type):
            if not _is_exception_type(retry_on):
                raise TypeError(
                    f"RetryPolicy.retry_on must be an exception class, got {retry_on!r}"
                )
        elif not callable(retry_on):
            raise TypeError(
                "RetryPolicy.retry_on must be an exception class, a tuple of them or a "
                f"predicate, got {retry_on!r}"
            )

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether to try again after failed ``attempt`` (1-based) raised ``error``."""
        if attempt >= self.max_attempts or not isinstance(error, Exception):
            return False
        retry_on = self.retry_on
        if isinstance(retry_on, type | tuple):
            return isinstance(error, retry_on)
        return bool(retry_on(error))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed ``attempt`` (1-based) before the next one.

        ``min(max_interval, initial_interval * backoff_factor ** (attempt - 1))``, scaled by a
        uniform factor in [0.5, 1.0] when ``jitter`` is on. Pass ``rng`` for reproducible jitter;
        without it the ``random`` module is used (which Hypothesis seeds per example).
        """
        if attempt < 1:
            raise ValueError(f"attempt numbers are 1-based, got {attempt!r}")
        try:
            base = min(
                self.max_interval, self.initial_interval * self.backoff_factor ** (attempt - 1)
            )
        except OverflowError:  # a huge attempt number: the cap applies
            base = self.max_interval
        if not self.jitter:
            return base
        scale = rng.uniform(0.5, 1.0) if rng is not None else random.uniform(0.5, 1.0)
        return base * scale


def _is_exception_type(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


# The policy of every node added without one: frozen, so one is shared rather than one per node.
_NO_RETRY: Final = RetryPolicy()


# -- nodes -----------------------------------------------------------------------------------------

_PLAIN_CALLABLES: Final = (
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.BuiltinMethodType,
    functools.partial,
    type,
)


def node_kind(name: str, fn: object) -> NodeKind:
    """Classify a node body: ``async`` and ``sync`` are called as ``fn(snapshot, ctx)``;
    ``runner`` objects as ``await fn.run(snapshot, ctx)``.

    An object with an async ``run`` is a runner even if it is also callable.

    Raises:
        TypeError: ``fn`` is neither callable nor a runner (the message names the node).
    """
    if inspect.iscoroutinefunction(fn):
        return "async"
    base = fn
    while isinstance(base, functools.partial):
        base = base.func
    if inspect.isasyncgenfunction(base):
        raise TypeError(
            f"node {name!r}: {fn!r} is an async generator; nodes must be async or plain "
            "functions returning a NodePartial or None"
        )
    if isinstance(base, type):
        if inspect.iscoroutinefunction(getattr(base, "run", None)):
            raise TypeError(
                f"node {name!r}: {base.__qualname__} is a class; pass an instance "
                f"({base.__qualname__}(...)) so its async run() can be called"
            )
    elif not isinstance(base, _PLAIN_CALLABLES):
        if base is fn and inspect.iscoroutinefunction(getattr(fn, "run", None)):
            return "runner"
        # Looked up on the type, as Python does for calls; an instance attribute is not used.
        if inspect.iscoroutinefunction(type(base).__call__):
            return "async"
    if callable(fn):
        return "sync"
    raise TypeError(
        f"node {name!r}: {fn!r} is neither callable nor an object with an async run(snapshot, ctx)"
    )


@attrs.frozen
class NodeSpec:
    """One registered node: its body, how to call it (``kind``) and its per-attempt limits.

    Args:
        name: The node id, unique in the graph.
        fn: The body; see :func:`node_kind` for the accepted shapes.
        retry: Applied by the node actor around each execution.
        timeout: Seconds per attempt, or ``None`` for no limit.
        thread: Run a ``sync`` body in a worker thread instead of inline.
        kind: ``"async"``, ``"sync"`` or ``"runner"``.
    """

    name: str
    fn: object
    retry: RetryPolicy
    timeout: float | None
    thread: bool
    kind: NodeKind

    def __attrs_post_init__(self) -> None:
        timeout: object = self.timeout
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float)
        ):
            raise TypeError(
                f"node {self.name!r}: timeout must be a number of seconds or None, got {timeout!r}"
            )
        retry: object = self.retry
        if not isinstance(retry, RetryPolicy):
            raise TypeError(
                f"node {self.name!r}: retry must be a RetryPolicy (or None), got {retry!r}"
            )
        if not isinstance(self.thread, bool):
            raise TypeError(
                f"node {self.name!r}: thread must be True or False, got {self.thread!r}"
            )
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(
                f"node {self.name!r}: timeout must be > 0 seconds or None, got {self.timeout!r}"
            )
        if self.thread and self.kind != "sync":
            raise ValueError(
                f"node {self.name!r}: thread=True only applies to plain (sync) functions, "
                f"this node is {self.kind}"
            )


# -- edges -----------------------------------------------------------------------------------------


@attrs.frozen
class ConditionalEdge:
    """A router evaluated on the post-barrier state after ``source`` ran.

    Args:
        source: The node whose run triggers the router (may be START).
        fn: Returns one target name or a sequence of them.
        path_map: The declared targets (validated at compile, drawn by Mermaid), or ``None``.
        mapping: For a mapping ``path_map``, its ``(router value, node name)`` items; ``resolve``
            translates router values through it.
    """

    source: str
    fn: Router
    path_map: tuple[str, ...] | None
    mapping: tuple[tuple[str, str], ...] | None = None
    _lookup: Mapping[object, str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        lookup = dict(self.mapping) if self.mapping is not None else {}
        object.__setattr__(self, "_lookup", types.MappingProxyType(lookup))

    def resolve(self, raw: str | Sequence[str]) -> list[str]:
        """The node names a router result stands for; values missing from the mapping pass
        through unchanged (the scheduler then drops and reports unknown ones)."""
        value: object = raw
        names: list[object] = (
            [value] if isinstance(value, str) or not isinstance(value, Sequence) else list(value)
        )
        lookup = self._lookup
        if lookup:
            names = [lookup.get(n, n) if _hashable(n) else n for n in names]
        return names  # type: ignore[return-value]  # non-str values are the scheduler's to drop


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@attrs.frozen(cache_hash=True)
class JoinEdge:
    """``target`` is scheduled once each of ``sources`` has run since it last ran (SPEC 4.6).

    Its hash is cached: routing looks a wide join up once per source, and hashing its whole
    ``sources`` tuple each time would make a W-wide join cost O(W²).
    """

    sources: tuple[str, ...]
    target: str


# -- compiled graph --------------------------------------------------------------------------------


@attrs.frozen
class GraphMetadata:
    """A summary of the definition; ``graph_hash`` is insertion-order independent (sha256 hex)."""

    graph_hash: str
    node_count: int
    edge_count: int
    conditional_count: int
    join_count: int


@attrs.frozen(eq=False)
class CompiledGraph:
    """The validated, immutable graph the scheduler reads on its hot path.

    ``edges``, ``conditional_by_source`` and ``joins_by_source`` have a key for START and for every
    node (an empty tuple when there is nothing), so lookups by a ran node never miss. Compares by
    identity; compare definitions with ``graph_metadata().graph_hash``.
    """

    nodes: Mapping[str, NodeSpec]
    edges: Mapping[str, tuple[str, ...]]
    conditional_edges: tuple[ConditionalEdge, ...]
    conditional_by_source: Mapping[str, tuple[ConditionalEdge, ...]]
    joins: tuple[JoinEdge, ...]
    joins_by_source: Mapping[str, tuple[JoinEdge, ...]]
    reducers: ReducerRegistry
    joins_by_target: Mapping[str, tuple[JoinEdge, ...]] = attrs.field(
        factory=lambda: types.MappingProxyType({})
    )
    _metadata: list[GraphMetadata] = attrs.field(init=False, factory=list, repr=False)

    def graph_metadata(self) -> GraphMetadata:
        """The definition hash and counts, computed once per compiled graph."""
        if not self._metadata:
            self._metadata.append(self._compute_metadata())
        return self._metadata[0]

    def _compute_metadata(self) -> GraphMetadata:
        # The sha256 of the definition as canonical JSON (sorted keys, no spaces), fed to the hash
        # a row at a time: a graph is hashed inside its first run with a checkpointer, and a list
        # per node and per edge would be thousands of objects for that run's garbage collections.
        # Node names are unique, so rows in name order are the rows sorted whole; edges likewise
        # by source, then target.
        sha = hashlib.sha256()

        def write(text: str) -> None:
            sha.update(text.encode("utf-8"))

        conditional = sorted(_conditional_json(c) for c in self.conditional_edges)
        write('{"conditional":' + _CANONICAL.encode(conditional) + ',"edges":[')
        edge_count = 0
        for src in sorted(self.edges):
            source = _CANONICAL.encode(src)
            for dst in sorted(self.edges[src]):
                write(
                    ("[" if edge_count == 0 else ",[") + source + "," + _CANONICAL.encode(dst) + "]"
                )
                edge_count += 1
        joins = sorted([sorted(j.sources), j.target] for j in self.joins)
        write(
            '],"format":' + _CANONICAL.encode(_HASH_FORMAT) + ',"joins":' + _CANONICAL.encode(joins)
        )
        write(',"nodes":[')
        # Nodes mostly share their settings (and their policy object, see _NO_RETRY): each
        # distinct one is encoded once.
        settings: dict[tuple[object, ...], str] = {}
        for i, name in enumerate(sorted(self.nodes)):
            spec = self.nodes[name]
            key = (spec.kind, id(spec.retry), spec.timeout, spec.thread)
            row = settings.get(key)
            if row is None:
                row = settings[key] = _CANONICAL.encode(_node_settings(spec))
            write(("[" if i == 0 else ",[") + _CANONICAL.encode(name) + "," + row + "]")
        reducers = sorted([ch, label] for ch, label in self.reducers.labels().items())
        write('],"reducers":' + _CANONICAL.encode(reducers) + "}")
        return GraphMetadata(
            graph_hash=sha.hexdigest(),
            node_count=len(self.nodes),
            edge_count=edge_count,
            conditional_count=len(self.conditional_edges),
            join_count=len(self.joins),
        )


# What ``graph_hash`` is the sha256 of: JSON with sorted keys, no spaces, any character as is.
_CANONICAL: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _node_settings(spec: NodeSpec) -> str:
    r = spec.retry
    retry = [
        r.max_attempts,
        float(r.initial_interval),
        float(r.backoff_factor),
        float(r.max_interval),
        r.jitter,
        _retry_on_label(r.retry_on),
    ]
    timeout = None if spec.timeout is None else float(spec.timeout)
    # A string inside the node's row, as the hash has always had it (rows once sorted whole, and a
    # string never compares None to a float).
    return json.dumps([spec.kind, retry, timeout, spec.thread])


def _conditional_json(edge: ConditionalEdge) -> list[object]:
    targets = None if edge.path_map is None else sorted(edge.path_map)
    mapping = None if edge.mapping is None else sorted([repr(k), v] for k, v in edge.mapping)
    return [edge.source, json.dumps([targets, mapping])]


def _qualified(obj: object) -> str:
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}" if module else name


def _retry_on_label(retry_on: object) -> object:
    # Names, never reprs: a repr may carry a memory address and would make the hash unstable.
    if isinstance(retry_on, tuple):
        return sorted(_qualified(t) for t in retry_on)
    if isinstance(retry_on, type):
        return _qualified(retry_on)
    return "predicate:" + _qualified(retry_on)


# -- builder ---------------------------------------------------------------------------------------


@attrs.define
class GraphBuilder:
    """Records a graph definition; every method returns the builder so calls chain.

    Shape problems (unknown nodes, cycles, unreachable nodes...) are reported together by
    :meth:`compile`; only malformed arguments (a non-callable body, a non-string edge endpoint)
    raise at the call itself.
    """

    _nodes: list[NodeSpec] = attrs.field(factory=list, init=False)
    _edges: list[tuple[str, str]] = attrs.field(factory=list, init=False)
    _joins: list[JoinEdge] = attrs.field(factory=list, init=False)
    _conditionals: list[ConditionalEdge] = attrs.field(factory=list, init=False)
    _reducers: ReducerRegistry = attrs.field(factory=ReducerRegistry.default, init=False)

    def add_node(
        self,
        name: str,
        fn: object,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        thread: bool = False,
    ) -> GraphBuilder:
        """Register node ``name`` running ``fn(snapshot, ctx)`` (async or plain) or ``fn.run``.

        Raises:
            TypeError: ``fn`` is neither callable nor an object with an async ``run``, or
                ``retry``, ``timeout`` or ``thread`` has the wrong type.
            ValueError: ``timeout`` is not positive, or ``thread=True`` on a non-sync body.
        """
        kind = node_kind(name, fn)
        self._nodes.append(
            NodeSpec(
                name=name,
                fn=fn,
                retry=retry if retry is not None else _NO_RETRY,
                timeout=timeout,
                thread=thread,
                kind=kind,
            )
        )
        return self

    def add_edge(self, src: str | Sequence[str], dst: str) -> GraphBuilder:
        """Route ``src`` to ``dst`` after every step ``src`` runs in.

        With a list of two or more sources this is a join edge: ``dst`` waits until each source
        has run since ``dst`` last ran. A one-item list is a plain edge.
        """
        _check_endpoint(dst, "add_edge destination")
        if isinstance(src, str):
            self._edges.append((src, dst))
            return self
        given: object = src
        if not isinstance(given, Sequence):
            _check_endpoint(given, "add_edge source")
        sources = tuple(src)
        for s in sources:
            _check_endpoint(s, "add_edge source")
        if not sources:
            raise ValueError(f"add_edge([], {dst!r}) needs at least one source")
        if len(sources) == 1:
            self._edges.append((sources[0], dst))
        else:
            self._joins.append(JoinEdge(sources=sources, target=dst))
        return self

    def add_conditional_edges(
        self,
        source: str,
        fn: Router,
        path_map: Sequence[str] | Mapping[str, str] | None = None,
    ) -> GraphBuilder:
        """Route ``source`` by ``fn(snapshot)`` evaluated after the barrier of each step it ran in.

        Args:
            source: The node (or START) whose runs trigger the router.
            fn: Returns a target name or a list of names.
            path_map: A list declaring the possible targets, or a mapping from router return
                values to node names (values not in it pass through unchanged). Declared targets
                are validated at compile and enable reachability checks.
        """
        _check_endpoint(source, "add_conditional_edges source")
        if not callable(fn):
            raise TypeError(f"add_conditional_edges({source!r}, ...): the router must be callable")
        targets: tuple[str, ...] | None = None
        mapping: tuple[tuple[str, str], ...] | None = None
        if isinstance(path_map, Mapping):
            mapping = tuple(path_map.items())
            targets = tuple(dict.fromkeys(path_map.values()))
        elif isinstance(path_map, str):
            targets = (path_map,)
        elif path_map is not None:
            targets = tuple(dict.fromkeys(path_map))
        for target in targets or ():
            _check_endpoint(target, f"path_map of the conditional edge from {source!r}")
        self._conditionals.append(
            ConditionalEdge(source=source, fn=fn, path_map=targets, mapping=mapping)
        )
        return self

    def with_reducer(self, channel: str, reducer: Reducer) -> GraphBuilder:
        """Use ``reducer`` for ``channel``; its ``definition_label`` enters the graph hash."""
        self._reducers = self._reducers.with_reducer(channel, reducer)
        return self

    def compile(self) -> App:
        """Validate the definition and freeze it into an ``App``.

        Checks run in this order and the first failure is raised: node names, duplicate nodes and
        edges, unknown nodes, misuse of START/END, entry, cycles over unconditional edges,
        reachability from START, path to END. Node lists in errors are sorted.

        Raises:
            GraphCompileError: one of its subclasses, naming what to fix.
        """
        from .app import App
        from .validate import validate_graph

        validate_graph(self._nodes, self._edges, self._joins, self._conditionals)
        return App(self._freeze())

    def _compile_checked_by_caller(self) -> App:
        """:meth:`compile` without its checks, for a caller that built a graph it has already
        checked (a :class:`~treadle.Workflow` is validated task by task as it is built)."""
        from .app import App

        return App(self._freeze())

    def _freeze(self) -> CompiledGraph:
        names = [START, *(spec.name for spec in self._nodes)]
        edges: dict[str, list[str]] = {n: [] for n in names}
        conditional: dict[str, list[ConditionalEdge]] = {n: [] for n in names}
        joins_by_source: dict[str, list[JoinEdge]] = {n: [] for n in names}
        joins_by_target: dict[str, list[JoinEdge]] = {}
        for src, dst in self._edges:
            edges[src].append(dst)
        for cond in self._conditionals:
            conditional[cond.source].append(cond)
        for join in self._joins:
            for src in join.sources:
                joins_by_source[src].append(join)
            joins_by_target.setdefault(join.target, []).append(join)
        return CompiledGraph(
            nodes=types.MappingProxyType({spec.name: spec for spec in self._nodes}),
            edges=_frozen_lists(edges),
            conditional_edges=tuple(self._conditionals),
            conditional_by_source=_frozen_lists(conditional),
            joins=tuple(self._joins),
            joins_by_source=_frozen_lists(joins_by_source),
            reducers=self._reducers,
            joins_by_target=_frozen_lists(joins_by_target),
        )


def _frozen_lists(table: dict[str, list[_T]]) -> Mapping[str, tuple[_T, ...]]:
    return types.MappingProxyType({k: tuple(v) for k, v in table.items()})


def _check_endpoint(value: object, where: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a node name (str), got {value!r}")


__all__ = [
    "END",
    "START",
    "CompiledGraph",
    "ConditionalEdge",
    "GraphBuilder",
    "GraphMetadata",
    "InvalidJoin",
    "JoinEdge",
    "NodeKind",
    "NodeSpec",
    "RetryPolicy",
    "node_kind",
]
