"""Immutable JSON values: :class:`FrozenDict`, :func:`freeze` and :func:`thaw`.

State handed to nodes is built from these, so no two nodes ever share a mutable object.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn, TypeAlias, cast

from .persistent import FrozenMap

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

_SCALARS = frozenset({type(None), bool, int, FrozenDict})

MAX_DEPTH = 500
"""How deeply arrays and objects may nest in a frozen value (deeper ones cannot be stored)."""


def freeze(value: object, *, path: str = "value", depth: int = 0) -> JSON:
    """Return ``value`` as a frozen JSON value.

    Dicts become :class:`FrozenDict` (keys must be strings), lists and tuples become tuples, scalars
    stay as they are. Values that are already frozen are returned as is, so freezing a
    ``FrozenDict`` or a string costs O(1).

    Args:
        value: The value to freeze.
        path: How to name ``value`` in error messages, e.g. ``"extra['a']"``.
        depth: How many arrays or objects ``value`` sits in (1 for a value of ``extra``), so
            that the limit counts from the root of what will be stored.

    Raises:
        TypeError: ``value`` contains something that is not a JSON value (a set, bytes, an arbitrary
            object, NaN or infinity, a non-string key, a string with a lone surrogate, which UTF-8
            cannot encode) or nests deeper than :data:`MAX_DEPTH`; the message names where.
    """
    return _freeze(value, path, depth)


def _freeze(value: object, path: str, depth: int) -> JSON:
    # One Python frame per level of nesting (no helper calls, no comprehensions), so a value
    # nested MAX_DEPTH deep freezes well inside the interpreter's recursion limit.
    kind = type(value)
    if kind in _SCALARS:
        return cast("JSON", value)
    if kind is str:
        text = cast(str, value)
        return text if text.isascii() else _check_text(text, path)
    if kind is float:
        return _check_float(cast(float, value), path)
    if kind is tuple or kind is list or isinstance(value, list | tuple):
        depth += 1
        _check_depth(depth, path)
        items = cast("list[object] | tuple[object, ...]", value)
        frozen: list[JSON] = []
        same = kind is tuple
        for i, item in enumerate(items):
            result = _freeze(item, f"{path}[{i}]", depth)
            same = same and result is item
            frozen.append(result)
        # Hand back the original tuple when nothing changed, so identity checks stay cheap.
        return cast("tuple[JSON, ...]", items) if same else tuple(frozen)
    if isinstance(value, Mapping):
        depth += 1
        _check_depth(depth, path)
        mapping: dict[str, JSON] = {}
        for key, item in value.items():
            _check_key(key, path)
            mapping[key] = _freeze(item, f"{path}[{key!r}]", depth)
        return _trusted(mapping)
    # Subclasses of the scalar types (IntEnum, StrEnum…) are stored as their plain JSON value.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _check_float(float(value), path)
    if isinstance(value, str):
        return _freeze(str.__str__(value), path, depth)
    _not_json(value, path)


def _check_float(value: float, path: str) -> float:
    if not math.isfinite(value):
        raise TypeError(
            f"{path} is {value!r}, which is not a JSON value (JSON has no NaN or infinity)"
        )
    return value


def _check_text(value: str, path: str) -> str:
    """``value`` itself if UTF-8 can encode it (it cannot encode a lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TypeError(
            f"{path} holds a lone surrogate ({value[exc.start]!r} at index {exc.start}), which "
            "UTF-8 cannot encode; decode text with errors='replace' before storing it"
        ) from None
    return value


def _check_depth(depth: int, path: str) -> None:
    if depth > MAX_DEPTH:
        where = path if len(path) <= 60 else path[:60] + "..."
        raise TypeError(
            f"{where} nests arrays or objects deeper than {MAX_DEPTH} levels, which cannot be "
            "stored; flatten it"
        )


def _check_key(key: object, path: str) -> None:
    if type(key) is not str:
        raise TypeError(
            f"{path} has the key {key!r} ({type(key).__name__}); JSON object keys must be strings"
        )
    if not key.isascii():
        _check_text(key, f"a key of {path}")


def _freeze_mapping(value: Mapping[Any, object], path: str) -> dict[str, JSON]:
    result: dict[str, JSON] = {}
    for key, item in value.items():
        _check_key(key, path)
        result[key] = _freeze(item, f"{path}[{key!r}]", 1)
    return result


def _not_json(value: object, path: str) -> NoReturn:
    name = type(value).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    raise TypeError(f"{path} is {article} {name}, which is not a JSON value")


def thaw(value: JSON | FrozenMap) -> Any:
    """Return a plain, mutable deep copy of a frozen value (``dict`` and ``list`` containers)."""
    # Loops, not comprehensions: one Python frame per level, so MAX_DEPTH nesting thaws.
    if isinstance(value, dict | FrozenMap):
        mapping = {}
        for key, item in value.items():
            mapping[key] = thaw(item)
        return mapping
    if isinstance(value, tuple | list):
        items = []
        for item in value:
            items.append(thaw(item))
        return items
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
    # Loops, not map()/generators: one Python frame per level, so MAX_DEPTH nesting compares.
    if isinstance(a, tuple) and isinstance(b, tuple):
        if len(a) != len(b):
            return False
        for x, y in zip(a, b, strict=True):  # noqa: SIM110  # a loop keeps one frame per level
            if not strict_equal(x, y):
                return False
        return True
    if isinstance(a, dict | FrozenMap) and isinstance(b, dict | FrozenMap):
        if len(a) != len(b):
            return False
        for key, item in a.items():  # noqa: SIM110  # a loop keeps one frame per level
            if key not in b or not strict_equal(item, b[key]):
                return False
        return True
    if isinstance(a, float) and isinstance(b, float):
        # 0.0 == -0.0, but they serialise differently.
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return a == b
