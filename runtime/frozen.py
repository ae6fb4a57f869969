"""Immutable JSON values: :class:`FrozenDict`, :func:`freeze` and :func:`thaw`.

State handed to nodes is built from these, so no two nodes ever share a mutable object.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn, TypeAlias, cast

JSON: TypeAlias = "bool | int | float | str | tuple[JSON, ...] | FrozenDict | None"
"""A frozen JSON value: scalars, tuples for arrays and :class:`FrozenDict` for objects."""


def _read_only(self: FrozenDict, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(
        "FrozenDict is read-only: build a new mapping instead (for example {**old, 'key': value})"
    )


class FrozenDict(dict[str, Any]):
    """A read-only ``dict`` whose values are frozen JSON values.

    It subclasses ``dict`` so that ``json.dumps`` and ``isinstance(x, dict)`` accept it as is.
    Every mutator raises ``TypeError``; the constructor freezes the values it is given, so a
    ``FrozenDict`` is frozen all the way down and :func:`freeze` can return it without walking it.
    """

    __slots__ = ()

    def __init__(self, items: Mapping[str, object] | Iterable[tuple[str, object]] = (), /) -> None:
        if len(self):
            _read_only(self)
        source = items if isinstance(items, Mapping) else dict(items)
        dict.__init__(self, _freeze_mapping(source, "FrozenDict"))

    __setitem__ = _read_only
    __delitem__ = _read_only
    __ior__ = _read_only
    update = _read_only
    pop = _read_only
    popitem = _read_only
    clear = _read_only
    setdefault = _read_only

    def __hash__(self) -> int:  # type: ignore[override]  # dict is unhashable; frozen values are not
        return hash(frozenset(self.items()))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> FrozenDict:
        return self

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        # The default dict pickling sets items one by one, which the read-only mutators refuse.
        return (FrozenDict, (dict(self),))

    @classmethod
    def fromkeys(cls, keys: Iterable[str], value: object = None, /) -> FrozenDict:  # type: ignore[override]  # keys are str
        return cls((key, value) for key in keys)


def _trusted(items: Mapping[str, Any]) -> FrozenDict:
    """Wrap already-frozen items without checking them (the caller guarantees they are frozen)."""
    result = dict.__new__(FrozenDict)
    dict.update(result, items)
    return result


EMPTY: FrozenDict = _trusted({})
"""The empty frozen mapping (shared; it cannot change)."""

_SCALARS = frozenset({type(None), bool, int, str, FrozenDict})


def freeze(value: object, *, path: str = "value") -> JSON:
    """Return ``value`` as a frozen JSON value.

    Dicts become :class:`FrozenDict` (keys must be strings), lists and tuples become tuples, scalars
    stay as they are. Values that are already frozen are returned as is, so freezing a
    ``FrozenDict`` or a string costs O(1).

    Args:
        value: The value to freeze.
        path: How to name ``value`` in error messages, e.g. ``"extra['a']"``.

    Raises:
        TypeError: ``value`` contains something that is not a JSON value (a set, bytes, an arbitrary
            object, NaN or infinity, a non-string key); the message names where.
    """
    kind = type(value)
    if kind in _SCALARS:
        return cast("JSON", value)
    if kind is float:
        return _check_float(cast(float, value), path)
    if kind is tuple or kind is list:
        return _freeze_sequence(cast("list[object]", value), path)
    if isinstance(value, Mapping):
        return _trusted(_freeze_mapping(value, path))
    # Subclasses of the scalar types (IntEnum, StrEnum…) are stored as their plain JSON value.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _check_float(float(value), path)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, list | tuple):
        return _freeze_sequence(value, path)
    _not_json(value, path)


def _check_float(value: float, path: str) -> float:
    if not math.isfinite(value):
        raise TypeError(
            f"{path} is {value!r}, which is not a JSON value (JSON has no NaN or infinity)"
        )
    return value


def _freeze_sequence(value: list[object] | tuple[object, ...], path: str) -> tuple[JSON, ...]:
    frozen = tuple([freeze(item, path=f"{path}[{i}]") for i, item in enumerate(value)])
    # Hand back the original tuple when nothing changed, so identity checks stay cheap.
    if isinstance(value, tuple) and all(a is b for a, b in zip(frozen, value, strict=True)):
        return cast("tuple[JSON, ...]", value)
    return frozen


def _freeze_mapping(value: Mapping[Any, object], path: str) -> dict[str, JSON]:
    result: dict[str, JSON] = {}
    for key, item in value.items():
        if type(key) is not str:
            raise TypeError(
                f"{path} has the key {key!r} ({type(key).__name__}); JSON object keys must be "
                "strings"
            )
        result[key] = freeze(item, path=f"{path}[{key!r}]")
    return result


def _not_json(value: object, path: str) -> NoReturn:
    name = type(value).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    raise TypeError(f"{path} is {article} {name}, which is not a JSON value")


def thaw(value: JSON) -> Any:
    """Return a plain, mutable deep copy of a frozen value (``dict`` and ``list`` containers)."""
    if isinstance(value, dict):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(item) for item in value]
    return value


def strict_equal(a: object, b: object) -> bool:
    """Whether two frozen values are the same JSON value.

    Unlike ``==`` this tells ``1``, ``1.0`` and ``True`` apart (they serialise differently), so
    version bumps follow what a checkpoint would record.
    """
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(map(strict_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return len(a) == len(b) and all(
            key in b and strict_equal(item, b[key]) for key, item in a.items()
        )
    if isinstance(a, float) and isinstance(b, float):
        # 0.0 == -0.0, but they serialise differently.
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return a == b
