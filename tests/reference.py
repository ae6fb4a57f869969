"""A sequential reference executor for generated graphs, written from SPEC 4.2/4.3/4.6 alone.

Graphs are data (:class:`GraphSpec`): :func:`build_app` turns one into a real treadle app whose
async nodes interpret the same behaviour descriptors that :func:`reference_run` interprets here.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import trio

from treadle.runtime.errors import NodeTimeoutError
from treadle.runtime.graph.builder import END, START, GraphBuilder, RetryPolicy
from treadle.runtime.graph.partial import Append, NodePartial, Replace
from treadle.runtime.graph.state import (
    ErrorEvent,
    ErrorScope,
    Message,
    StateSnapshot,
    VersionedState,
)
from treadle.testing import EventRecord, RunError, RunResult, StepTrace

# A node that "hangs" sleeps far longer than its timeout, whatever the schedule adds.
HANG_TIMEOUT = 1.0
HANG_SLEEP = 30.0
UNKNOWN_TARGET_SCOPE = "routing.unknown_target"


class NodeFailure(Exception):
    """What a generated node raises when its descriptor says it fails."""


class FlakyFailure(Exception):
    """What a generated node raises on an attempt its descriptor marks as flaky."""


# -- descriptors -----------------------------------------------------------------------------------


@attrs.frozen
class Value:
    """How a node computes a value it writes to ``extra``.

    ``const`` writes ``const``; ``step`` the current step; ``incr`` the key's int value plus one
    (0 when absent or not an int); ``delete`` writes ``None`` (deletes the key).
    """

    kind: Literal["const", "step", "incr", "delete"]
    const: int | str = 0

    def evaluate(self, key: str, snapshot: StateSnapshot, step: int) -> int | str | None:
        match self.kind:
            case "const":
                return self.const
            case "step":
                return step
            case "incr":
                current = snapshot.extra.get(key)
                return (current if type(current) is int else 0) + 1
            case "delete":
                return None


@attrs.frozen
class Behaviour:
    """What a generated node does, as data both executors interpret.

    Attributes:
        kind: ``async`` (may sleep and emit), ``sync`` (plain function) or ``runner`` (an object
            with an async ``run``).
        say: Append one message describing the snapshot the node saw.
        writes: ``extra`` writes, in order.
        notes: Texts written as ``ErrorEvent``s into the ``errors`` channel.
        command: A frontier command to return.
        delays_ms: Virtual sleeps to choose from (with ``random``) on every execution.
        emits: How many events to emit per successful attempt.
        flaky: Attempts of each execution that raise :class:`FlakyFailure` before the real one.
        max_attempts: The node's ``RetryPolicy.max_attempts``.
        failure: ``raise`` raises :class:`NodeFailure`, ``hang`` sleeps past the node's timeout,
            from step ``fail_from_step`` on.
    """

    kind: Literal["async", "sync", "runner"] = "async"
    say: bool = False
    writes: tuple[tuple[str, Value], ...] = ()
    notes: tuple[str, ...] = ()
    command: Replace | Append | None = None
    delays_ms: tuple[int, ...] = (0,)
    emits: int = 0
    flaky: int = 0
    max_attempts: int = 1
    failure: Literal["raise", "hang"] | None = None
    fail_from_step: int = 1

    def partial(self, node: str, step: int, snapshot: StateSnapshot) -> NodePartial:
        """The node's output for one execution (a pure function of its inputs)."""
        messages = None
        if self.say:
            text = (
                f"{node}@{step} saw m{snapshot.messages_version}/e{snapshot.extra_version}"
                f" n={len(snapshot.messages)} keys={','.join(sorted(snapshot.extra))}"
            )
            messages = (Message.assistant(text),)
        extra = None
        if self.writes:
            extra = {key: value.evaluate(key, snapshot, step) for key, value in self.writes}
        errors = None
        if self.notes:
            errors = tuple(
                ErrorEvent(when=0, scope=ErrorScope.node(node, step), error=text, tags=("note",))
                for text in self.notes
            )
        return NodePartial(messages=messages, extra=extra, errors=errors, frontier=self.command)

    def failing_now(self, step: int) -> bool:
        return self.failure is not None and step >= self.fail_from_step

    def outcome_error(self, node: str, step: int) -> str | None:
        """The ``"Type: message"`` an execution at ``step`` finally fails with, or ``None``."""
        if self.flaky >= self.max_attempts:
            return f"FlakyFailure: {flaky_message(node, step, self.max_attempts)}"
        if not self.failing_now(step):
            return None
        if self.failure == "hang":
            return f"NodeTimeoutError: {NodeTimeoutError(node, HANG_TIMEOUT)}"
        return f"NodeFailure: {failure_message(node, step)}"


def flaky_message(node: str, step: int, attempt: int) -> str:
    return f"{node} flaked on attempt {attempt} at step {step}"


def failure_message(node: str, step: int) -> str:
    return f"{node} failed at step {step}"


@attrs.frozen
class Router:
    """A conditional edge: ``below`` while ``extra[key]`` (an int, 0 when absent) is under
    ``bound``, else ``above``."""

    source: str
    key: str
    bound: int
    below: tuple[str, ...]
    above: tuple[str, ...]

    def __call__(self, snapshot: StateSnapshot) -> list[str]:
        value = snapshot.extra.get(self.key)
        current = value if type(value) is int else 0
        return list(self.below if current < self.bound else self.above)


@attrs.frozen
class GraphSpec:
    """A graph as data: nodes in insertion order, plain edges, joins and routers."""

    nodes: tuple[tuple[str, Behaviour], ...]
    edges: tuple[tuple[str, str], ...]
    joins: tuple[tuple[tuple[str, ...], str], ...] = ()
    routers: tuple[Router, ...] = ()

    @property
    def behaviours(self) -> dict[str, Behaviour]:
        return dict(self.nodes)


# -- the real app ----------------------------------------------------------------------------------


@attrs.define(eq=False)
class _AsyncNode:
    name: str
    behaviour: Behaviour
    # Attempts per (session, step): an execution's retries share a key. Fresh per built app.
    attempts: dict[tuple[str, int], int] = attrs.Factory(dict)

    def _attempt(self, ctx: Any) -> None:
        key = (ctx.session_id, ctx.step)
        attempt = self.attempts.get(key, 0) + 1
        self.attempts[key] = attempt
        if attempt <= self.behaviour.flaky:
            raise FlakyFailure(flaky_message(self.name, ctx.step, attempt))
        if self.behaviour.failing_now(ctx.step) and self.behaviour.failure == "raise":
            raise NodeFailure(failure_message(self.name, ctx.step))

    async def __call__(self, snapshot: StateSnapshot, ctx: Any) -> NodePartial:
        b = self.behaviour
        delay = random.choice(b.delays_ms)
        if delay:
            await trio.sleep(delay / 1000)
        self._attempt(ctx)
        if b.failing_now(ctx.step) and b.failure == "hang":
            await trio.sleep(HANG_SLEEP)
        for i in range(b.emits):
            await ctx.emit("test.emit", f"{self.name}#{i}", index=i)
            if delay:
                await trio.sleep(delay / 1000)
        return b.partial(self.name, ctx.step, snapshot)


@attrs.define(eq=False)
class _SyncNode:
    inner: _AsyncNode

    def __call__(self, snapshot: StateSnapshot, ctx: Any) -> NodePartial:
        inner = self.inner
        inner._attempt(ctx)
        for i in range(inner.behaviour.emits):
            ctx.emit_nowait("test.emit", f"{inner.name}#{i}", index=i)
        return inner.behaviour.partial(inner.name, ctx.step, snapshot)


@attrs.define(eq=False)
class _RunnerNode:
    inner: _AsyncNode

    async def run(self, snapshot: StateSnapshot, ctx: Any) -> NodePartial:
        return await self.inner(snapshot, ctx)


def build_app(spec: GraphSpec) -> Any:
    """A real treadle app running ``spec``'s behaviours (build a fresh one per run)."""
    builder = GraphBuilder()
    for name, b in spec.nodes:
        node = _AsyncNode(name, b)
        body: object = node
        if b.kind == "sync":
            body = _SyncNode(node)
        elif b.kind == "runner":
            body = _RunnerNode(node)
        retry = RetryPolicy(max_attempts=b.max_attempts, initial_interval=0.001, jitter=True)
        timeout = HANG_TIMEOUT if b.failure == "hang" else None
        builder.add_node(name, body, retry=retry, timeout=timeout)
    for src, dst in spec.edges:
        builder.add_edge(src, dst)
    for sources, target in spec.joins:
        builder.add_edge(list(sources), target)
    for router in spec.routers:
        builder.add_conditional_edges(router.source, router)
    return builder.compile()


# -- the reference ---------------------------------------------------------------------------------

_SCOPE_RANK = {"node": 0, "scheduler": 1, "runner": 2, "app": 3}


def _canonical(value: object) -> str:
    """A text that differs whenever two JSON values serialise differently (1 vs 1.0 vs true)."""

    def plain(v: object) -> object:
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return json.dumps(plain(value), sort_keys=True)


def _error_key(e: ErrorEvent) -> tuple[int, str, int, int, str]:
    return (_SCOPE_RANK[e.scope.kind], e.scope.name, e.scope.step, e.when, e.error)


def _complete(frontier: Sequence[str]) -> bool:
    return all(node == END for node in frontier)


@attrs.define
class _Session:
    spec: GraphSpec
    state: VersionedState
    step: int = 0
    frontier: list[str] = attrs.Factory(list)
    seen: dict[str, tuple[int, int]] = attrs.Factory(dict)
    # Per join (its index in spec.joins): the sources that ran since the join last fired.
    join_marks: dict[int, set[str]] = attrs.Factory(dict)


def _targets_of(
    session: _Session,
    node: str,
    command: Replace | Append | None,
    snapshot: StateSnapshot,
    unknown: list[tuple[str, str]],
) -> list[str]:
    """Where ``node`` routes after a step it ran in (SPEC 4.2.5, 4.6), before de-duplication."""
    spec = session.spec
    static = [dst for src, dst in spec.edges if src == node]
    if isinstance(command, Replace):
        targets = list(command.targets)
    elif isinstance(command, Append):
        targets = static + list(command.targets)
    else:
        targets = static
    # A join counts a source as soon as it has run (a Replace does not undo that it ran).
    for index, (sources, target) in enumerate(spec.joins):
        if node in sources:
            marks = session.join_marks.setdefault(index, set())
            marks.add(node)
            if marks >= set(sources):
                del session.join_marks[index]
                targets.append(target)
    if not isinstance(command, Replace):
        for router in spec.routers:
            if router.source == node:
                targets.extend(router(snapshot))
    names = spec.behaviours
    kept = []
    for target in targets:
        if target == END or target in names:
            kept.append(target)
        else:
            unknown.append((node, target))
    return kept


def _dedupe(targets: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(targets))


def _merge(
    state: VersionedState, partials: Sequence[NodePartial]
) -> tuple[VersionedState, tuple[str, ...]]:
    """The barrier: frontier order, last writer wins, sorted errors, +1 per changed channel."""
    messages = list(state.messages)
    extra = dict(state.extra)
    new_errors: list[ErrorEvent] = []
    for partial in partials:
        messages.extend(partial.messages or ())
        for key, value in (partial.extra or {}).items():
            if value is None:
                extra.pop(key, None)
            else:
                extra[key] = value
        new_errors.extend(partial.errors or ())
    errors = list(state.errors) + sorted(new_errors, key=_error_key)
    changed_m = len(messages) != len(state.messages)
    changed_e = _canonical(extra) != _canonical(state.extra)
    changed_r = len(errors) != len(state.errors)
    updated = tuple(
        name
        for name, changed in (("messages", changed_m), ("extra", changed_e), ("errors", changed_r))
        if changed
    )
    new_state = VersionedState(
        messages=messages,
        extra=extra if changed_e else state.extra,
        errors=errors,
        messages_version=state.messages_version + changed_m,
        extra_version=state.extra_version + changed_e,
        errors_version=state.errors_version + changed_r,
    )
    return new_state, updated


def _run_steps(
    session: _Session,
    traces: list[StepTrace],
    events: list[EventRecord],
    max_steps: int,
    session_id: str,
) -> RunError | None:
    """Run supersteps until the frontier completes, a node fails or ``max_steps`` more steps ran."""
    behaviours = session.spec.behaviours
    error: RunError | None = None
    limit = len(traces) + max_steps
    while not _complete(session.frontier) and len(traces) < limit:
        session.step += 1
        step = session.step
        snapshot = session.state.snapshot()
        versions = (snapshot.messages_version, snapshot.extra_version)
        ran: list[tuple[int, str]] = []
        skipped: list[str] = []
        for index, node in enumerate(session.frontier):
            if node in (START, END) or session.seen.get(node) == versions:
                skipped.append(node)
            else:
                ran.append((index, node))
        # SPEC 4.3 with the failure rule: the first failing node in frontier order is reported.
        failure = next(
            (
                (node, text)
                for _, node in ran
                if (text := behaviours[node].outcome_error(node, step)) is not None
            ),
            None,
        )
        if failure is not None:
            node, text = failure
            event = ErrorEvent(
                when=0, scope=ErrorScope.node(node, step), error=text, tags=("node",)
            )
            session.state, _ = _merge(session.state, [NodePartial(errors=(event,))])
            error = RunError(node, step, text)
            break
        partials = [behaviours[node].partial(node, step, snapshot) for _, node in ran]
        for index, node in ran:
            for i in range(behaviours[node].emits):
                events.append(_emit_record(node, step, index, i, session_id))
        session.state, updated = _merge(session.state, partials)
        post = session.state.snapshot()
        unknown = []
        targets: list[str] = []
        for (_, node), partial in zip(ran, partials, strict=True):
            targets.extend(_targets_of(session, node, partial.frontier, post, unknown))
        for _ in unknown:
            events.append(EventRecord("diagnostic", UNKNOWN_TARGET_SCOPE, ""))
        for _, node in ran:
            session.seen[node] = versions
        session.frontier = _dedupe(targets)
        traces.append(
            StepTrace(
                step,
                tuple(node for _, node in ran),
                tuple(skipped),
                updated,
                tuple(session.frontier),
            )
        )
    return error


def reference_run(
    spec: GraphSpec,
    state: VersionedState,
    *,
    session_id: str = "treadle-test",
    max_steps: int = 1_000,
) -> RunResult:
    """Run ``spec`` from ``state`` one node at a time, as SPEC 4.2/4.3/4.6 describe.

    Produces what :func:`treadle.testing.run_with_schedule` reports for the same graph, with
    diagnostics recorded by scope only (their wording is not specified).
    """
    session = _Session(spec, state)
    unknown: list[tuple[str, str]] = []
    start = _targets_of(session, START, None, state.snapshot(), unknown)
    session.frontier = _dedupe(start)
    traces: list[StepTrace] = []
    # SPEC 4.2.5: unknown targets are reported, START's included.
    events: list[EventRecord] = [
        EventRecord("diagnostic", UNKNOWN_TARGET_SCOPE, "") for _ in unknown
    ]
    error = _run_steps(session, traces, events, max_steps, session_id)
    return RunResult(
        state=session.state,
        step=session.step,
        frontier=tuple(session.frontier),
        steps=tuple(traces),
        error=error,
        completed=_complete(session.frontier),
        versions_seen=tuple(sorted(session.seen.items())),
        join_state=tuple(
            sorted(
                (
                    "+".join(spec.joins[i][0]) + "->" + spec.joins[i][1],
                    tuple(s for s in spec.joins[i][0] if s in marks),
                )
                for i, marks in session.join_marks.items()
            )
        ),
        events=tuple(events),
    )


def _emit_record(node: str, step: int, index: int, i: int, session_id: str) -> EventRecord:
    from treadle.runtime.graph.frozen import FrozenDict

    metadata = {
        "index": i,
        "node_id": node,
        "step": step,
        "invocation_id": session_id,
        "frontier_index": index,
        "node_seq": i + 1,
        "now_unix_ms": 0,
    }
    return EventRecord("node", "test.emit", f"{node}#{i}", FrozenDict(metadata))


def comparable(result: RunResult) -> RunResult:
    """``result`` with diagnostics reduced to their scope, as :func:`reference_run` records them."""
    events = tuple(
        EventRecord(e.type, e.scope, "") if e.type == "diagnostic" else e for e in result.events
    )
    return attrs.evolve(result, events=events)


# -- iterative sessions ----------------------------------------------------------------------------


@attrs.frozen
class InvocationOutcome:
    """Where an iterative session stands after one ``invoke_next``; ``error`` is a
    :class:`RunError`, ``"invalid entry"`` or ``"no start nodes"`` (those two change nothing)."""

    state: VersionedState
    step: int
    frontier: tuple[str, ...]
    error: RunError | str | None
    versions_seen: tuple[tuple[str, tuple[int, int]], ...]


def reference_iterative_run(
    spec: GraphSpec,
    state: VersionedState,
    inputs: Sequence[tuple[Mapping[str, Any], str]],
    *,
    session_id: str = "treadle-test",
    max_steps: int = 1_000,
) -> tuple[list[InvocationOutcome], bool]:
    """Feed ``inputs`` (``extra`` writes, entry) to an iterative session, as SPEC 4.5 describes:
    each input is one barrier write, then the frontier is the entry's, gating and join progress
    are cleared, and steps run to completion.

    Returns the outcome of each invocation, and whether every one finished within ``max_steps``.
    """
    session = _Session(spec, state)
    # A fresh iterative session's frontier is its entry's (START here) until the first input.
    session.frontier = _dedupe(_targets_of(session, START, None, state.snapshot(), []))
    outcomes: list[InvocationOutcome] = []
    traces: list[StepTrace] = []
    events: list[EventRecord] = []
    bounded = True
    for extra, entry in inputs:
        error: RunError | str | None = None
        if entry == END or (entry != START and entry not in spec.behaviours):
            error = "invalid entry"
        else:
            merged, _ = _merge(session.state, [NodePartial(extra=dict(extra))])
            if entry == START:
                probe = _Session(spec, merged)
                frontier = _dedupe(_targets_of(probe, START, None, merged.snapshot(), []))
            else:
                frontier = [entry]
            if _complete(frontier):
                error = "no start nodes"
            else:
                session.state = merged
                session.frontier = frontier
                session.seen = {}
                session.join_marks = {}
                error = _run_steps(session, traces, events, max_steps, session_id)
                if error is None and not _complete(session.frontier):
                    bounded = False  # max_steps ran out before the invocation completed
        outcomes.append(
            InvocationOutcome(
                session.state,
                session.step,
                tuple(session.frontier),
                error,
                tuple(sorted(session.seen.items())),
            )
        )
    return outcomes, bounded
