"""The barrier merge: one superstep's partials folded into the state in frontier order (SPEC 4.2.4).

The result depends only on the frontier order of the partials, never on the order nodes finished.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..graph.frozen import JSON, FrozenDict, _trusted, freeze, strict_equal
from ..graph.partial import FrontierCommand, NodePartial
from ..graph.persistent import DELETED, FrozenMap, Log, log_items
from ..graph.reducers import ReducerRegistry, add_errors, add_messages, map_merge
from ..graph.state import ErrorEvent, Message, VersionedState, frozen_extra


@attrs.frozen
class BarrierOutcome:
    """What a barrier did, for checkpoints, events and routing.

    Attributes:
        updated_channels: The channels whose value changed, in the order messages, extra, errors.
        errors: The errors merged at this barrier, sorted by :meth:`ErrorEvent.sort_key`.
        frontier_commands: ``(node, command)`` for each ran node that returned one, in frontier
            order.
    """

    updated_channels: tuple[str, ...] = ()
    errors: tuple[ErrorEvent, ...] = ()
    frontier_commands: tuple[tuple[str, FrontierCommand], ...] = ()


_NOTHING = BarrierOutcome()
_RUNTIME = "<runtime>"


def apply_barrier(
    state: VersionedState,
    ran_nodes: Sequence[str],
    partials: Sequence[NodePartial],
    reducers: ReducerRegistry,
) -> tuple[VersionedState, BarrierOutcome]:
    """Merge one step's partials into ``state``.

    Messages concatenate in frontier order; ``extra`` is last-writer-wins in frontier order (so a
    later node's ``None`` deletes an earlier node's write); errors are sorted by
    :meth:`ErrorEvent.sort_key`. Each channel's version rises by exactly one if its value changed
    and stays put otherwise. Unchanged channels are shared with ``state``, and only written values
    are frozen, so the cost follows the size of the writes, not of the state.

    Args:
        state: The state before the barrier.
        ran_nodes: The nodes that ran, in frontier order. Empty for writes made by the runtime
            itself (such as the error of a failed step); those partials carry no frontier command.
        partials: ``partials[i]`` is what ``ran_nodes[i]`` returned.
        reducers: The graph's reducer per channel.

    Returns:
        The new state (``state`` itself when nothing changed) and what changed.

    Raises:
        ValueError: ``ran_nodes`` is non-empty and differs in length from ``partials``.
        TypeError: a node wrote a value to ``extra`` that is not JSON (the message names the node
            and the path), or a custom reducer returned the wrong type.
    """
    if not ran_nodes and partials:
        # Writes made by the runtime itself (e.g. the error of a failed step): no node to route.
        if any(p.frontier is not None for p in partials):
            raise ValueError("apply_barrier got a frontier command without a ran node to own it")
        ran_nodes = (_RUNTIME,) * len(partials)
    elif len(ran_nodes) != len(partials):
        raise ValueError(
            f"apply_barrier needs one partial per ran node, got {len(partials)} partials for "
            f"{len(ran_nodes)} nodes"
        )
    message_parts: list[tuple[Message, ...]] = []
    writes: dict[str, JSON] | None = None
    errors: list[ErrorEvent] = []
    commands: list[tuple[str, FrontierCommand]] = []
    for node, partial in zip(ran_nodes, partials, strict=True):
        if partial.messages:
            message_parts.append(partial.messages)
        if partial.extra:
            if writes is None:
                writes = {}
            _collect_writes(writes, node, partial.extra)
        if partial.errors:
            errors.extend(partial.errors)
        if partial.frontier is not None:
            commands.append((node, partial.frontier))

    if not message_parts and writes is None and not errors:
        return state, (BarrierOutcome(frontier_commands=tuple(commands)) if commands else _NOTHING)

    updated: list[str] = []
    messages = state.messages
    if message_parts:
        update = (
            message_parts[0]
            if len(message_parts) == 1
            else tuple(itertools.chain.from_iterable(message_parts))
        )
        messages = _merge_messages(reducers, messages, update)
        if messages is not state.messages:
            updated.append("messages")

    extra = state.extra
    if writes is not None:
        extra = _merge_extra(reducers, extra, writes)
        if extra is not state.extra:
            updated.append("extra")

    merged_errors = tuple(sorted(errors, key=ErrorEvent.sort_key))
    errors_value = state.errors
    if merged_errors:
        errors_value = _merge_errors(reducers, errors_value, merged_errors)
        if errors_value is not state.errors:
            updated.append("errors")

    outcome = BarrierOutcome(tuple(updated), merged_errors, tuple(commands))
    if not updated:
        return state, outcome
    new_state = VersionedState._trusted(
        messages,
        extra,
        errors_value,
        state.messages_version + (messages is not state.messages),
        state.extra_version + (extra is not state.extra),
        state.errors_version + (errors_value is not state.errors),
    )
    return new_state, outcome


def _collect_writes(writes: dict[str, JSON], node: str, extra: Mapping[str, object]) -> None:
    if type(extra) is FrozenDict:
        writes.update(extra)  # already frozen all the way down
        return
    for key, value in extra.items():
        if value is None:
            writes[key] = None
            continue
        try:
            writes[key] = freeze(value, path=f"extra[{key!r}]")
        except TypeError as exc:
            raise TypeError(f"node {node!r} wrote a value that is not JSON: {exc}") from None


# Each merge below returns the current value itself when nothing changed, so the caller can
# detect a change (and bump the version) with one identity check. The built-in reducers touch only
# what the step wrote: the message log is extended in place, extra is updated key by key.


def _merge_messages(
    reducers: ReducerRegistry, current: Log[Message], update: tuple[Message, ...]
) -> Log[Message]:
    reducer = reducers.messages
    if reducer is add_messages:
        return current.extended(update)
    result = _check_tuple(reducer.apply(current, update), Message, "messages", reducer)
    if result is current or (len(result) == len(current) and result == current):
        return current
    return log_items(result)


def _merge_errors(
    reducers: ReducerRegistry, current: tuple[ErrorEvent, ...], update: tuple[ErrorEvent, ...]
) -> tuple[ErrorEvent, ...]:
    reducer = reducers.errors
    if reducer is add_errors:
        return current + update
    result: tuple[ErrorEvent, ...] = tuple(
        _check_tuple(reducer.apply(current, update), ErrorEvent, "errors", reducer)
    )
    if result is current or (len(result) == len(current) and result == current):
        return current
    return result


def _merge_extra(
    reducers: ReducerRegistry, current: FrozenMap, writes: dict[str, JSON]
) -> FrozenMap:
    reducer = reducers.extra
    if reducer is not map_merge:
        result = reducer.apply(current, _trusted(writes))
        if type(result) is not FrozenMap:
            if not isinstance(result, Mapping):
                raise TypeError(
                    f"the extra reducer {reducer.definition_label!r} returned a "
                    f"{type(result).__name__}; it must return a mapping"
                )
            result = frozen_extra(result)
        return current if strict_equal(result, current) else result
    # Built-in shallow merge: only the written keys can change, so only they are compared.
    changes: dict[str, Any] = {}
    for key, value in writes.items():
        if value is None:
            if key in current:
                changes[key] = DELETED
        elif key not in current or not strict_equal(current[key], value):
            changes[key] = value
    if not changes:
        return current
    return current.updated(changes)


def _check_tuple(result: Any, item_type: type[Any], channel: str, reducer: Any) -> Any:
    if type(result) is not tuple and type(result) is not Log:
        if not isinstance(result, list):
            raise TypeError(
                f"the {channel} reducer {reducer.definition_label!r} returned a "
                f"{type(result).__name__}; it must return a tuple"
            )
        result = tuple(result)
    for i, item in enumerate(result):
        if not isinstance(item, item_type):
            raise TypeError(
                f"the {channel} reducer {reducer.definition_label!r} returned a "
                f"{type(item).__name__} at index {i}; it must return {item_type.__name__}s"
            )
    return result
