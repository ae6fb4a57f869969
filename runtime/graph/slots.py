"""Typed state slots: a :class:`StateKey` names one ``extra`` entry and how to encode/decode it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs

from ..errors import StateSlotDeserialize, StateSlotSerialize
from .frozen import JSON, FrozenDict, freeze

T = TypeVar("T")


def _name_part(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if type(value) is not str or not value or ":" in value:
        raise ValueError(
            f"StateKey.{attribute.name} must be a non-empty string without ':', got {value!r}"
        )


def _key_version(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"StateKey.version must be an int >= 1, got {value!r}")


@attrs.frozen
class StateKey(Generic[T]):
    """The name and codec of one typed ``extra`` slot, stored under ``"ns:name:v1"``.

    Versions of the same name are different slots, so a new schema can live beside the old one.
    Two keys are equal when their storage keys are; the codec does not take part.

    Attributes:
        namespace: Groups the slots of one feature, e.g. ``"billing"``.
        name: The slot's name inside the namespace.
        version: Schema version, part of the storage key.
        encode: Turns a ``T`` into a JSON value; the value itself is stored when omitted.
        decode: Turns the stored frozen JSON value (tuples, :class:`FrozenDict`) back into a ``T``;
            the stored value itself is returned when omitted.
        value_type: When given, the value read back (after ``decode``) must be an instance of it;
            ``list`` and ``dict`` accept the frozen tuple and mapping. Lets mypy infer ``T``.

    Example:
        ``COUNT = StateKey("demo", "count", value_type=int)``
    """

    namespace: str = attrs.field(validator=_name_part)
    name: str = attrs.field(validator=_name_part)
    version: int = attrs.field(default=1, validator=_key_version)
    encode: Callable[[T], object] | None = attrs.field(default=None, eq=False, kw_only=True)
    decode: Callable[[Any], T] | None = attrs.field(default=None, eq=False, kw_only=True)
    value_type: type[T] | None = attrs.field(default=None, eq=False, kw_only=True)

    @property
    def storage_key(self) -> str:
        """The ``extra`` key this slot is stored under, ``"namespace:name:v<version>"``."""
        return f"{self.namespace}:{self.name}:v{self.version}"

    def encode_value(self, value: T) -> JSON:
        """Encode and freeze ``value`` for storage.

        Raises:
            StateSlotError.Serialize: ``encode`` failed or produced something that is not JSON.
        """
        try:
            raw = self.encode(value) if self.encode is not None else value
            return freeze(raw, path=f"extra[{self.storage_key!r}]")
        except Exception as exc:
            raise StateSlotSerialize(self.storage_key, f"{type(exc).__name__}: {exc}") from exc

    def decode_value(self, raw: JSON) -> T:
        """Decode a stored value.

        Raises:
            StateSlotError.Deserialize: ``decode`` failed or the result is not a ``value_type``.
        """
        try:
            value: Any = self.decode(raw) if self.decode is not None else raw
        except Exception as exc:
            raise StateSlotDeserialize(self.storage_key, f"{type(exc).__name__}: {exc}") from exc
        if self.value_type is not None and not _is_instance(value, self.value_type):
            raise StateSlotDeserialize(
                self.storage_key,
                f"invalid type: expected {self.value_type.__name__}, found "
                f"{type(value).__name__} {value!r}",
            )
        result: T = value
        return result


def _is_instance(value: object, kind: type[Any]) -> bool:
    # JSON booleans are not numbers, even though bool subclasses int in Python.
    if isinstance(value, bool) and kind is not bool:
        return kind is object
    if kind is list:
        return isinstance(value, tuple | list)
    if kind is dict:
        return isinstance(value, dict | FrozenDict)
    if kind is float:
        return isinstance(value, float | int)
    return isinstance(value, kind)
