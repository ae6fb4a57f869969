"""What a node returns: a :class:`NodePartial` of writes per channel and an optional frontier
command that overrides its routing for the step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeAlias, TypeVar

import attrs

from .frozen import FrozenDict, freeze
from .slots import StateKey
from .state import ErrorEvent, Message

T = TypeVar("T")


def _targets(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(
            f"frontier targets must be a list of node names, not the string {value!r}; "
            f"write [{value!r}]"
        )
    targets = tuple(value)
    for target in targets:
        if type(target) is not str or not target:
            raise TypeError(f"frontier targets must be non-empty node names, got {target!r}")
    return targets


@attrs.frozen
class Replace:
    """Route to exactly ``targets`` after this step; the node's edges are not followed."""

    targets: tuple[str, ...] = attrs.field(converter=_targets)


@attrs.frozen
class Append:
    """Route to ``targets`` in addition to the node's edges."""

    targets: tuple[str, ...] = attrs.field(converter=_targets)


FrontierCommand: TypeAlias = Replace | Append


def _optional_tuple(value: Iterable[object] | None) -> tuple[object, ...] | None:
    if value is None or type(value) is tuple:
        return value
    if isinstance(value, str | bytes | Mapping):
        # Would otherwise be split into characters or keys; __attrs_post_init__ names the mistake.
        return value  # type: ignore[return-value]  # rejected by __attrs_post_init__
    return tuple(value)


def _optional_messages(value: Iterable[Message] | None) -> tuple[Message, ...] | None:
    return _optional_tuple(value)  # type: ignore[return-value]  # items checked in post-init


def _optional_errors(value: Iterable[ErrorEvent] | None) -> tuple[ErrorEvent, ...] | None:
    return _optional_tuple(value)  # type: ignore[return-value]  # items checked in post-init


@attrs.frozen
class NodePartial:
    """The writes of one node in one step; ``None`` (or empty) leaves a channel alone.

    Attributes:
        messages: Appended to ``messages`` (in frontier order across nodes).
        extra: Merged into ``extra``, last writer in frontier order wins; a ``None`` value deletes
            the key (RFC 7396). Values are frozen at the barrier, not here, so building a partial
            costs nothing; :meth:`frozen` checks them early.
        errors: Appended to ``errors`` (sorted by :meth:`ErrorEvent.sort_key` across nodes).
        frontier: A :class:`Replace` or :class:`Append` command for this node's routing.
    """

    messages: tuple[Message, ...] | None = attrs.field(default=None, converter=_optional_messages)
    extra: Mapping[str, object] | None = None
    errors: tuple[ErrorEvent, ...] | None = attrs.field(default=None, converter=_optional_errors)
    frontier: FrontierCommand | None = None

    def __attrs_post_init__(self) -> None:
        if self.messages is not None:
            if type(self.messages) is not tuple:
                raise TypeError(
                    f"NodePartial.messages must be a list of Message, not a "
                    f"{type(self.messages).__name__}; wrap text with Message.user(...)"
                )
            for i, message in enumerate(self.messages):
                if not isinstance(message, Message):
                    raise TypeError(
                        f"NodePartial.messages[{i}] is a {type(message).__name__}; wrap text with "
                        "Message.user(...)/Message.assistant(...)"
                    )
        if self.extra is not None:
            if not isinstance(self.extra, Mapping):
                raise TypeError(
                    f"NodePartial.extra must be a mapping of str to JSON values, not a "
                    f"{type(self.extra).__name__}"
                )
            for key in self.extra:
                if type(key) is not str:
                    raise TypeError(
                        f"NodePartial.extra has the key {key!r} ({type(key).__name__}); keys "
                        "must be strings"
                    )
        if self.errors is not None:
            if type(self.errors) is not tuple:
                raise TypeError(
                    f"NodePartial.errors must be a list of ErrorEvent, not a "
                    f"{type(self.errors).__name__}"
                )
            for i, error in enumerate(self.errors):
                if not isinstance(error, ErrorEvent):
                    raise TypeError(
                        f"NodePartial.errors[{i}] is a {type(error).__name__}, not an ErrorEvent"
                    )
        if self.frontier is not None and not isinstance(self.frontier, Replace | Append):
            raise TypeError(
                f"NodePartial.frontier must be Replace([...]) or Append([...]), not "
                f"{self.frontier!r}"
            )

    def with_typed_extra(self, key: StateKey[T], value: T) -> NodePartial:
        """A copy that also writes ``value`` to the typed slot ``key`` (encoded and frozen now).

        An encoded value of ``None`` clears the slot, like any ``None`` in ``extra``.

        Raises:
            StateSlotError.Serialize: the value cannot be encoded as JSON.
        """
        encoded = key.encode_value(value)
        extra = dict(self.extra) if self.extra is not None else {}
        extra[key.storage_key] = encoded
        return attrs.evolve(self, extra=extra)

    def clear_typed_extra(self, key: StateKey[T]) -> NodePartial:
        """A copy that deletes the typed slot ``key`` at the barrier."""
        extra = dict(self.extra) if self.extra is not None else {}
        extra[key.storage_key] = None
        return attrs.evolve(self, extra=extra)

    def frozen(self) -> NodePartial:
        """A copy whose ``extra`` is a deep-frozen :class:`FrozenDict` (``self`` if it already is).

        Node actors can call this so that a non-JSON value fails the node that wrote it; the
        barrier then freezes nothing.

        Raises:
            TypeError: a value in ``extra`` is not JSON; the message names its path.
        """
        if self.extra is None or type(self.extra) is FrozenDict:
            return self
        extra = freeze(self.extra, path="NodePartial.extra")
        assert isinstance(extra, FrozenDict)  # freeze maps every Mapping to a FrozenDict
        return attrs.evolve(self, extra=extra)

    def is_empty(self) -> bool:
        """Whether the partial writes nothing and carries no frontier command."""
        return not self.messages and not self.extra and not self.errors and self.frontier is None
