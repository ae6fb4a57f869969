"""Reducers: how one barrier's merged writes combine with a channel's current value.

Built-ins: :data:`add_messages`, :data:`map_merge` (shallow, ``None`` deletes), :data:`add_errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from .persistent import DELETED, FrozenMap, log_items
from .state import ErrorEvent, Message

CHANNELS = ("messages", "extra", "errors")
"""The state channels, in the order the barrier reports them."""


class Reducer(Protocol):
    """Combines a channel's current value with the merged update of one barrier.

    ``apply`` receives the channel's frozen types: for ``messages`` the current
    :class:`~treadle.runtime.graph.persistent.Log` (a read-only sequence) and a tuple of :class:`Message`,
    for ``extra`` the current :class:`~treadle.runtime.graph.persistent.FrozenMap` and a
    :class:`FrozenDict` update (a ``None`` value in the update means "delete"), for ``errors`` two
    tuples of :class:`ErrorEvent`. It returns a sequence or a mapping of the same items. It is only called when the update is
    non-empty. (Typed with ``Any`` because each channel has its own value type.)
    ``definition_label`` names the reducer in the graph hash, so changing it marks a new graph.
    """

    @property
    def definition_label(self) -> str: ...

    def apply(self, current: Any, update: Any) -> Any: ...


@attrs.frozen
class FunctionReducer:
    """A reducer made from a plain function by :func:`reducer`."""

    fn: Callable[[Any, Any], Any]
    definition_label: str

    def apply(self, current: Any, update: Any) -> Any:
        return self.fn(current, update)


def reducer(fn: Callable[[Any, Any], Any], *, label: str) -> Reducer:
    """Wrap ``fn(current, update) -> new`` as a custom reducer.

    Args:
        fn: A pure function of the channel's frozen values.
        label: A stable name for the graph hash, e.g. ``"keep_last_10_messages"``.
    """
    if not callable(fn):
        raise TypeError(f"reducer() needs a function (current, update) -> new, got {fn!r}")
    if type(label) is not str or not label:
        raise ValueError(f"reducer() needs a non-empty label, got {label!r}")
    return FunctionReducer(fn, label)


def _concat_messages(current: Sequence[Message], update: tuple[Message, ...]) -> Sequence[Message]:
    # A Log appends in place of copying; a plain tuple concatenates.
    return log_items(current).extended(update)


def _concat_errors(
    current: tuple[ErrorEvent, ...], update: tuple[ErrorEvent, ...]
) -> tuple[ErrorEvent, ...]:
    return current + update


def _merge_maps(current: Mapping[str, Any], update: Mapping[str, Any]) -> FrozenMap:
    base = current if type(current) is FrozenMap else FrozenMap(current)
    return base.updated({key: DELETED if value is None else value for key, value in update.items()})


add_messages: Reducer = FunctionReducer(_concat_messages, "add_messages")
"""Append the update's messages."""

map_merge: Reducer = FunctionReducer(_merge_maps, "map_merge")
"""Shallow merge: the update's keys overwrite, a ``None`` value deletes (absent key: no-op)."""

add_errors: Reducer = FunctionReducer(_concat_errors, "add_errors")
"""Append the update's errors."""


@attrs.frozen
class ReducerRegistry:
    """One reducer per channel."""

    messages: Reducer = add_messages
    extra: Reducer = map_merge
    errors: Reducer = add_errors

    @classmethod
    def default(cls) -> ReducerRegistry:
        """The built-ins: ``add_messages``, ``map_merge``, ``add_errors``."""
        return cls()

    def with_reducer(self, channel: str, reducer: Reducer) -> ReducerRegistry:
        """A copy using ``reducer`` for ``channel``.

        Raises:
            ValueError: ``channel`` is not one of ``messages``, ``extra``, ``errors``.
        """
        if channel not in CHANNELS:
            raise ValueError(f"unknown state channel {channel!r}: use one of {', '.join(CHANNELS)}")
        if not callable(getattr(reducer, "apply", None)) or not isinstance(
            getattr(reducer, "definition_label", None), str
        ):
            raise TypeError(
                f"{reducer!r} is not a reducer: wrap a function with reducer(fn, label=...)"
            )
        return attrs.evolve(self, **{channel: reducer})

    def labels(self) -> dict[str, str]:
        """The ``definition_label`` of each channel's reducer, for the graph hash."""
        return {
            "messages": self.messages.definition_label,
            "extra": self.extra.definition_label,
            "errors": self.errors.definition_label,
        }
