"""Versioned state: messages, extra and errors, each channel with a version that only the barrier
raises. :class:`StateSnapshot` is the immutable view a node reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs

from ..errors import StateSlotMissing
from .frozen import EMPTY, FrozenDict, freeze, thaw
from .persistent import EMPTY_MAP, FrozenMap, Log

if TYPE_CHECKING:
    from .slots import StateKey

T = TypeVar("T")
_S = TypeVar("_S", bound="_StateView")


def _non_empty_str(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if type(value) is not str or not value:
        raise TypeError(
            f"{type(instance).__name__}.{attribute.name} must be a non-empty string, got {value!r}"
        )


def _str(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(
            f"{type(instance).__name__}.{attribute.name} must be a string, got "
            f"{type(value).__name__}"
        )


def _int(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int:
        raise TypeError(f"{type(instance).__name__}.{attribute.name} must be an int, got {value!r}")


def _expect_mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _expect_list(value: object, what: str) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{what} must be a JSON array, got {type(value).__name__}")
    return value


def _field(obj: Mapping[str, Any], name: str, kind: type[T], what: str) -> T:
    value = obj.get(name)
    if type(value) is not kind:
        raise ValueError(f"{what}[{name!r}] must be a {kind.__name__}, got {value!r}")
    return value


# -- messages --------------------------------------------------------------------------------------


@attrs.frozen
class Message:
    """One chat message. ``role`` is free text; the four standard roles have constructors."""

    USER: ClassVar[str] = "user"
    ASSISTANT: ClassVar[str] = "assistant"
    SYSTEM: ClassVar[str] = "system"
    TOOL: ClassVar[str] = "tool"

    role: str = attrs.field(validator=_non_empty_str)
    content: str = attrs.field(validator=_str)

    @classmethod
    def user(cls, text: str) -> Message:
        return cls(cls.USER, text)

    @classmethod
    def assistant(cls, text: str) -> Message:
        return cls(cls.ASSISTANT, text)

    @classmethod
    def system(cls, text: str) -> Message:
        return cls(cls.SYSTEM, text)

    @classmethod
    def tool(cls, text: str) -> Message:
        return cls(cls.TOOL, text)

    def to_json_value(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content}

    @classmethod
    def from_json_value(cls, value: object) -> Message:
        """Read a message written by :meth:`to_json_value`.

        Raises:
            ValueError: ``value`` is not ``{"role": str, "content": str}``.
        """
        obj = _expect_mapping(value, "a message")
        return cls(_field(obj, "role", str, "message"), _field(obj, "content", str, "message"))


# -- errors ----------------------------------------------------------------------------------------

_SCOPE_RANKS: Mapping[str, int] = {"node": 0, "scheduler": 1, "runner": 2, "app": 3}


def _scope_kind(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if value not in _SCOPE_RANKS:
        raise ValueError(f"ErrorScope.kind must be one of {', '.join(_SCOPE_RANKS)}, got {value!r}")


@attrs.frozen
class ErrorScope:
    """Where an error happened: a node (``name`` = node, ``step``), the scheduler, the runner
    (``name`` = session id) or the application as a whole.
    """

    kind: str = attrs.field(validator=_scope_kind)
    name: str = attrs.field(default="", validator=_str)
    step: int = attrs.field(default=0, validator=_int)

    @classmethod
    def node(cls, name: str, step: int) -> ErrorScope:
        return cls("node", name, step)

    @classmethod
    def scheduler(cls, step: int) -> ErrorScope:
        return cls("scheduler", "", step)

    @classmethod
    def runner(cls, session_id: str, step: int) -> ErrorScope:
        return cls("runner", session_id, step)

    @classmethod
    def app(cls) -> ErrorScope:
        return cls("app")

    @property
    def rank(self) -> int:
        """Sort rank of the kind: node 0, scheduler 1, runner 2, app 3."""
        return _SCOPE_RANKS[self.kind]

    def to_json_value(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "step": self.step}

    @classmethod
    def from_json_value(cls, value: object) -> ErrorScope:
        obj = _expect_mapping(value, "an error scope")
        return cls(
            _field(obj, "kind", str, "scope"),
            _field(obj, "name", str, "scope"),
            _field(obj, "step", int, "scope"),
        )


def _tags(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"ErrorEvent.tags must be a list of strings, not the string {value!r}")
    tags = tuple(value)
    for tag in tags:
        if type(tag) is not str:
            raise TypeError(f"ErrorEvent.tags must hold strings, got {tag!r}")
    return tags


def _context(value: Mapping[str, object]) -> FrozenDict:
    frozen = freeze(value, path="ErrorEvent.context")
    if not isinstance(frozen, FrozenDict):
        raise TypeError(f"ErrorEvent.context must be a mapping, got {type(value).__name__}")
    return frozen


@attrs.frozen
class ErrorEvent:
    """An error recorded in the ``errors`` channel.

    Attributes:
        when: Unix time in milliseconds (from the session clock, so tests are deterministic).
        scope: Where it happened.
        error: The message, one readable sentence.
        tags: Free labels for filtering.
        context: Any JSON detail (frozen).
    """

    when: int = attrs.field(validator=_int)
    scope: ErrorScope = attrs.field(validator=attrs.validators.instance_of(ErrorScope))
    error: str = attrs.field(validator=_str)
    tags: tuple[str, ...] = attrs.field(default=(), converter=_tags)
    context: FrozenDict = attrs.field(default=EMPTY, converter=_context)

    def sort_key(self) -> tuple[int, str, int, int, str]:
        """The barrier's deterministic order: (scope rank, scope name, step, when, message)."""
        scope = self.scope
        return (_SCOPE_RANKS[scope.kind], scope.name, scope.step, self.when, self.error)

    def to_json_value(self) -> dict[str, Any]:
        return {
            "when": self.when,
            "scope": self.scope.to_json_value(),
            "error": self.error,
            "tags": list(self.tags),
            "context": thaw(self.context),
        }

    @classmethod
    def from_json_value(cls, value: object) -> ErrorEvent:
        obj = _expect_mapping(value, "an error event")
        return cls(
            when=_field(obj, "when", int, "error event"),
            scope=ErrorScope.from_json_value(obj.get("scope")),
            error=_field(obj, "error", str, "error event"),
            tags=_expect_list(obj.get("tags", ()), "error event['tags']"),
            context=_expect_mapping(obj.get("context", EMPTY), "error event['context']"),
        )


# -- state -----------------------------------------------------------------------------------------


def _messages(value: Iterable[Message]) -> Log[Message]:
    items = value if type(value) is Log else Log(value)
    for i, item in enumerate(items):
        if not isinstance(item, Message):
            raise TypeError(
                f"messages[{i}] is a {type(item).__name__}; wrap text with "
                "Message.user(...)/Message.assistant(...)"
            )
    return items


def frozen_extra(value: Mapping[str, object]) -> FrozenMap:
    """``value`` as the ``extra`` channel's type: a :class:`FrozenMap` of frozen JSON values.

    Raises:
        TypeError: ``value`` is not a mapping of str to JSON values.
    """
    if type(value) is FrozenMap:
        return value
    frozen = freeze(value, path="extra")
    if not isinstance(frozen, FrozenDict):
        raise TypeError(
            f"extra must be a mapping of str to JSON values, got {type(value).__name__}"
        )
    return FrozenMap(frozen) if frozen else EMPTY_MAP


def _errors(value: Iterable[ErrorEvent]) -> tuple[ErrorEvent, ...]:
    items = tuple(value)
    for i, item in enumerate(items):
        if not isinstance(item, ErrorEvent):
            raise TypeError(f"errors[{i}] is a {type(item).__name__}, not an ErrorEvent")
    return items


def _version(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be an int >= 1, got {value!r}")


class _StateView:
    """Read accessors shared by :class:`VersionedState` and :class:`StateSnapshot`."""

    __slots__ = ()

    messages: Log[Message]
    extra: FrozenMap
    errors: tuple[ErrorEvent, ...]
    messages_version: int
    extra_version: int
    errors_version: int

    @classmethod
    def _trusted(
        cls: type[_S],
        messages: Log[Message],
        extra: FrozenMap,
        errors: tuple[ErrorEvent, ...],
        messages_version: int,
        extra_version: int,
        errors_version: int,
    ) -> _S:
        """Build without converting or validating: the barrier's O(1) constructor for values it
        already knows are frozen and well-typed.
        """
        self = object.__new__(cls)
        setter = object.__setattr__
        setter(self, "messages", messages)
        setter(self, "extra", extra)
        setter(self, "errors", errors)
        setter(self, "messages_version", messages_version)
        setter(self, "extra_version", extra_version)
        setter(self, "errors_version", errors_version)
        return self

    def get_typed(self, key: StateKey[T]) -> T | None:
        """The decoded value of a typed slot, or ``None`` when it is not set.

        Raises:
            StateSlotError.Deserialize: the stored value cannot be decoded as the key's type.
        """
        raw = self.extra.get(key.storage_key)
        if raw is None:
            return None
        return key.decode_value(raw)

    def require_typed(self, key: StateKey[T]) -> T:
        """The decoded value of a typed slot.

        Raises:
            StateSlotError.Missing: the slot is not set.
            StateSlotError.Deserialize: the stored value cannot be decoded as the key's type.
        """
        raw = self.extra.get(key.storage_key)
        if raw is None:
            raise StateSlotMissing(key.storage_key)
        return key.decode_value(raw)

    def to_json_value(self) -> dict[str, Any]:
        """A plain JSON document (fresh lists and dicts) holding the values and the versions."""
        return {
            "messages": [m.to_json_value() for m in self.messages],
            "extra": thaw(self.extra),
            "errors": [e.to_json_value() for e in self.errors],
            "versions": {
                "messages": self.messages_version,
                "extra": self.extra_version,
                "errors": self.errors_version,
            },
        }

    @classmethod
    def from_json_value(cls: type[_S], value: object) -> _S:
        """Read a document written by :meth:`to_json_value`, versions included.

        Raises:
            ValueError: the document does not have that shape.
            TypeError: ``extra`` holds something that is not JSON.
        """
        obj = _expect_mapping(value, "a state")
        versions = _expect_mapping(obj.get("versions", {}), "state['versions']")

        def version(name: str) -> int:
            v = versions.get(name, 1)
            if type(v) is not int or v < 1:
                raise ValueError(f"state['versions'][{name!r}] must be an int >= 1, got {v!r}")
            return v

        return cls._trusted(
            Log(
                Message.from_json_value(m)
                for m in _expect_list(obj.get("messages", ()), "state['messages']")
            ),
            frozen_extra(_expect_mapping(obj.get("extra", EMPTY), "state['extra']")),
            tuple(
                ErrorEvent.from_json_value(e)
                for e in _expect_list(obj.get("errors", ()), "state['errors']")
            ),
            version("messages"),
            version("extra"),
            version("errors"),
        )


@attrs.frozen
class StateSnapshot(_StateView):
    """The immutable state a node reads: tuples, read-only mappings and frozen nested JSON."""

    messages: Log[Message] = attrs.field(default=(), converter=_messages)
    extra: FrozenMap = attrs.field(default=EMPTY_MAP, converter=frozen_extra)
    errors: tuple[ErrorEvent, ...] = attrs.field(default=(), converter=_errors)
    messages_version: int = attrs.field(default=1, validator=_version)
    extra_version: int = attrs.field(default=1, validator=_version)
    errors_version: int = attrs.field(default=1, validator=_version)


@attrs.frozen
class VersionedState(_StateView):
    """A session's state: three channels and their versions (each starting at 1).

    Only :func:`~treadle.runtime.execution.barrier.apply_barrier` produces new versions: a channel's version
    rises by one at a barrier that changed its value. Instances are immutable; a barrier returns a
    new one that shares everything it did not change.
    """

    messages: Log[Message] = attrs.field(default=(), converter=_messages)
    extra: FrozenMap = attrs.field(default=EMPTY_MAP, converter=frozen_extra)
    errors: tuple[ErrorEvent, ...] = attrs.field(default=(), converter=_errors)
    messages_version: int = attrs.field(default=1, validator=_version)
    extra_version: int = attrs.field(default=1, validator=_version)
    errors_version: int = attrs.field(default=1, validator=_version)

    @classmethod
    def with_user_message(cls, text: str) -> VersionedState:
        """A fresh state holding one user message."""
        return cls(messages=(Message.user(text),))

    def snapshot(self) -> StateSnapshot:
        """The read-only view nodes receive. O(1): it shares the (immutable) values."""
        return StateSnapshot._trusted(
            self.messages,
            self.extra,
            self.errors,
            self.messages_version,
            self.extra_version,
            self.errors_version,
        )
