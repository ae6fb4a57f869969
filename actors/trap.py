"""Trio's ``wait_task_rescheduled`` in fewer objects, for the waits thousands of actors park in.

``await trio.lowlevel.wait_task_rescheduled(abort_fn)`` keeps four objects alive while a task is
parked (its coroutine, trio's trap generator, the trap's record and the record's dict), and makes
them again on every wait. A wide graph parks thousands of node actors, and each full garbage
collection visits every object they keep. Here a wait keeps two::

    msg = await trap.park(trap.record(abort_fn))

``park`` is trio's own trap (yield the record to trio's run loop, unwrap what the waker sends) as
one generator, and ``record`` makes trio's record without the instance dict its ``__init__``
fills: both are written against the record type private to trio. A trio without it gets the public
call: the same behaviour, at the public call's cost (``record`` is then the abort function itself).

Keep the record out of the object its abort function belongs to: a record cached there would make
a reference cycle, which only the garbage collector frees.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Generator
from typing import Any

import attrs
import trio

__all__ = ["FAST", "park", "record"]

AbortFn = Callable[[trio.lowlevel.RaiseCancelT], trio.lowlevel.Abort]

WaitTaskRescheduled: Any
try:
    from trio._core._traps import WaitTaskRescheduled
except ImportError:  # pragma: no cover  (a trio whose internals moved)
    WaitTaskRescheduled = None

FAST = WaitTaskRescheduled is not None and attrs.fields_dict(WaitTaskRescheduled).keys() == {
    "abort_func"
}
"""Whether the installed trio has the record type ``park`` yields (it then parks in one object)."""


def record(abort_fn: AbortFn) -> Any:
    """What ``park`` waits on: trio's record of ``abort_fn`` (or ``abort_fn``, on another trio)."""
    if not FAST:  # pragma: no cover
        return abort_fn
    # The frozen record's own __init__ would fill an instance dict (one more object to collect).
    made = object.__new__(WaitTaskRescheduled)
    object.__setattr__(made, "abort_func", abort_fn)
    return made


@types.coroutine
def _park(record: Any) -> Generator[Any, Any, Any]:
    return (yield record).unwrap()


park: Callable[[Any], Any] = _park if FAST else trio.lowlevel.wait_task_rescheduled
"""``await park(record)`` is ``await trio.lowlevel.wait_task_rescheduled(abort_fn)``."""
