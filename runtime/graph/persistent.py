"""The state's channel values that a step changes without copying: :class:`Log` and :class:`FrozenMap`.

A step appends a few messages to a state that may hold a hundred thousand, and sets a few keys of an
``extra`` that may hold as many; copying the whole channel each step would make a step cost the size
of the state (SPEC 3). So:

- :class:`Log` is a read-only view of a prefix of an append-only list. Appending to the newest view
  extends the shared list in place and returns a longer view; every older view still sees exactly
  its own prefix, so a snapshot taken before a step never sees that step's messages. Appending to an
  older view (a branch: a step run again after a failed save, a fork from an earlier step) copies
  its prefix first, once.
- :class:`FrozenMap` is a persistent map (a hash array mapped trie from ``immutables``): setting a
  key costs O(log n) and shares everything else with the map it came from. It also remembers what
  changed since the map it was made from, so a checkpoint writer can store those keys only.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, NoReturn, TypeVar, overload

import immutables

T = TypeVar("T")


class _Store:
    """The list behind every :class:`Log` of one lineage; only ever extended at its end."""

    __slots__ = ("items", "lock")

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        # Extending is check-then-act (is this view the newest?); two threads may hold views.
        self.lock = threading.Lock()


class Log(Sequence[T]):
    """An immutable sequence: a view of the first ``len(self)`` items of an append-only list.

    It reads like a tuple (indexing, slicing to a tuple, iteration, ``len``, ``in``) and compares
    equal to a tuple or a :class:`Log` with the same items. ``log + items`` appends: it returns a new
    :class:`Log` in O(len(items)) when ``log`` is the newest view of its list.
    """

    __slots__ = ("_length", "_store")

    _store: _Store
    _length: int

    def __new__(cls, items: Iterable[T] = (), /) -> Log[T]:
        # __new__, not __init__: calling __init__ again on a view must not change it.
        store = _Store(list(items))
        return cls._view(store, len(store.items))

    @classmethod
    def _view(cls, store: _Store, length: int) -> Log[T]:
        self: Log[T] = object.__new__(cls)
        self._store = store
        self._length = length
        return self

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...

    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        items = self._store.items
        length = self._length
        if isinstance(index, slice):
            start, stop, step = index.indices(length)
            if step == 1:
                return tuple(items[start:stop]) if start < stop else ()
            return tuple(items[i] for i in range(start, stop, step))
        i = index.__index__()
        if i < 0:
            i += length
        if not 0 <= i < length:
            raise IndexError("Log index out of range")
        item: T = items[i]
        return item

    def __iter__(self) -> Iterator[T]:
        return itertools.islice(self._store.items, self._length)

    def __reversed__(self) -> Iterator[T]:
        items = self._store.items
        return (items[i] for i in range(self._length - 1, -1, -1))

    def since(self, older: Sequence[T]) -> tuple[T, ...] | None:
        """The items appended to ``older`` to make ``self``, or ``None`` if ``self`` does not
        extend it. O(appended) when both are views of one list, O(len(older)) otherwise.
        """
        n = len(older)
        if older is self:
            return ()
        if type(older) is Log and older._store is self._store:
            return self[n:] if n <= self._length else None
        if self._length < n or self[:n] != tuple(older):
            return None
        return self[n:]

    def extended(self, items: Sequence[T]) -> Log[T]:
        """``self`` followed by ``items`` (``self`` itself when ``items`` is empty)."""
        if not items:
            return self
        store = self._store
        length = self._length
        with store.lock:
            if len(store.items) == length:
                store.items.extend(items)
                return Log._view(store, length + len(items))
        # A newer view already extends this list: branch off with a copy of this prefix.
        fresh = store.items[:length]
        fresh.extend(items)
        return Log._view(_Store(fresh), len(fresh))

    def __add__(self, other: object) -> Log[T]:
        if isinstance(other, Log | tuple | list):
            return self.extended(other)
        return NotImplemented

    def __radd__(self, other: object) -> Log[T]:
        if isinstance(other, tuple | list):
            return Log(itertools.chain(other, self))
        return NotImplemented

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if type(other) is Log:
            if other._length != self._length:
                return False
            if other._store is self._store:
                return True
            return self[:] == other[:]
        if isinstance(other, tuple):
            return len(other) == self._length and self[:] == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self[:])

    def __repr__(self) -> str:
        return f"Log({self[:]!r})"

    def __copy__(self) -> Log[T]:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Log[T]:
        return self

    def __reduce__(self) -> tuple[type[Log[T]], tuple[tuple[T, ...]]]:
        return (Log, (self[:],))


class _Deleted:
    """Marks a key deleted in :attr:`FrozenMap` change records."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETED"


DELETED: Final = _Deleted()
"""The value of a deleted key in :meth:`FrozenMap.changes_since`."""

# How many maps back :meth:`FrozenMap.changes_since` looks before giving up.
_MAX_LINKS: Final = 1024


def _read_only(self: FrozenMap, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(
        "this map is read-only (a state's extra, or a session's versions_seen): a node changes "
        "extra by returning the keys to change in NodePartial(extra=...)"
    )


class FrozenMap(Mapping[str, Any]):
    """A read-only mapping of str to frozen JSON values, updated without copying.

    Compares equal to any mapping with the same items (a ``dict`` included). :meth:`updated`
    returns a new map in O(changes x log n) and keeps a weak link to ``self`` with the changes, so
    :meth:`changes_since` can tell what changed across a few updates without comparing the maps.
    """

    __slots__ = ("__weakref__", "_changes", "_map", "_parent")

    _map: immutables.Map[str, Any]
    _parent: Callable[[], FrozenMap | None] | None
    _changes: dict[str, Any] | None

    def __new__(cls, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), /) -> FrozenMap:
        """Wrap ``items``, whose values must be frozen already (see :func:`~.frozen.freeze`)."""
        # __new__, not __init__: calling __init__ again on a map must not change it.
        self = object.__new__(cls)
        self._map = immutables.Map(items)
        self._parent = None
        self._changes = None
        return self

    __setitem__ = _read_only
    __delitem__ = _read_only
    __ior__ = _read_only
    update = _read_only
    pop = _read_only
    popitem = _read_only
    clear = _read_only
    setdefault = _read_only

    def __getitem__(self, key: str) -> Any:
        return self._map[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._map.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def keys(self) -> Any:
        return self._map.keys()

    def values(self) -> Any:
        return self._map.values()

    def items(self) -> Any:
        return self._map.items()

    def updated(self, changes: dict[str, Any]) -> FrozenMap:
        """A map with ``changes`` applied: a value sets its key, :data:`DELETED` removes it.

        The values must be frozen already; ``changes`` is kept, so the caller must not change it.
        """
        with self._map.mutate() as mutation:
            for key, value in changes.items():
                if value is DELETED:
                    mutation.pop(key, None)
                else:
                    mutation[key] = value
            new_map = mutation.finish()
        result = object.__new__(FrozenMap)
        result._map = new_map
        result._parent = weakref.ref(self)
        result._changes = changes
        return result

    def assigned(self, changes: dict[str, Any]) -> FrozenMap:
        """:meth:`updated` for ``changes`` that only set keys (no :data:`DELETED`): one call into
        the map's own update, several times cheaper for a few keys.

        The values must be frozen already; ``changes`` is kept, so the caller must not change it.
        """
        result = object.__new__(FrozenMap)
        result._map = self._map.update(changes)
        result._parent = weakref.ref(self)
        result._changes = changes
        return result

    def changes_since(self, older: FrozenMap) -> dict[str, Any] | None:
        """What :meth:`updated` changed on the way from ``older`` to ``self`` (a value per key set,
        :data:`DELETED` per key removed), or ``None`` when that path is not known any more: the
        cost follows the changes, never the size of the maps.
        """
        records: list[dict[str, Any]] = []
        current: FrozenMap | None = self
        while current is not older:
            if current is None or current._changes is None or len(records) >= _MAX_LINKS:
                return None
            records.append(current._changes)
            parent = current._parent
            current = parent() if parent is not None else None
        if len(records) == 1:
            return records[0]
        merged: dict[str, Any] = {}
        for record in reversed(records):
            merged.update(record)
        return merged

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if type(other) is FrozenMap:
            return self._map == other._map
        if isinstance(other, Mapping):
            if len(other) != len(self._map):
                return False
            missing = object()
            get = self._map.get
            return all(get(key, missing) == value for key, value in other.items())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._map.items()))

    def __or__(self, other: object) -> dict[str, Any]:
        if isinstance(other, Mapping):
            return {**self, **other}
        return NotImplemented

    def __ror__(self, other: object) -> dict[str, Any]:
        if isinstance(other, Mapping):
            return {**other, **self}
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({dict(self._map.items())!r})"

    def __copy__(self) -> FrozenMap:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> FrozenMap:
        return self

    def __reduce__(self) -> tuple[type[FrozenMap], tuple[dict[str, Any]]]:
        return (FrozenMap, (dict(self._map.items()),))


EMPTY_MAP: Final = FrozenMap()
"""The empty :class:`FrozenMap` (shared; it cannot change)."""


def log_items(value: Sequence[T]) -> Log[T]:
    """``value`` as a :class:`Log` (itself when it already is one)."""
    return value if type(value) is Log else Log(value)
