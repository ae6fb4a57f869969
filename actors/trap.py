"""Trio's ``wait_task_rescheduled`` in fewer objects, for the waits thousands of actors park in.

``await trio.lowlevel.wait_task_rescheduled(abort_fn)`` keeps four objects alive while a task is
parked (its coroutine, trio's trap generator, the trap's record and the record's dict), and makes
them again on every wait. A wide graph parks thousands of node actors, and each full garbage
collection visits every object they keep. ``await trap.wait(abort_fn)`` is the same wait in one
object: a generator that yields trio's record itself, made without the instance dict the record's
``__init__`` fills, and does not keep it (trio's run loop keeps the abort function, not the record).

It is written against the record type private to trio. A trio without it gets the public call
(``FAST`` is then false): the same behaviour, at the public call's cost.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Generator
from typing import Any

import attrs
import trio

__all__ = ["FAST", "wait"]

AbortFn = Callable[[trio.lowlevel.RaiseCancelT], trio.lowlevel.Abort]

WaitTaskRescheduled: Any
try:
    from trio._core._traps import WaitTaskRescheduled
except ImportError:  # pragma: no cover  (a trio whose internals moved)
    WaitTaskRescheduled = None

FAST = WaitTaskRescheduled is not None and attrs.fields_dict(WaitTaskRescheduled).keys() == {
    "abort_func"
}
"""Whether the installed trio has the record type ``wait`` yields."""


def _record(abort_fn: AbortFn) -> Any:
    made = object.__new__(WaitTaskRescheduled)
    object.__setattr__(made, "abort_func", abort_fn)
    return made


@types.coroutine
def _wait(abort_fn: AbortFn) -> Generator[Any, Any, Any]:
    # The record is made in the yield, so this frame does not keep it.
    return (yield _record(abort_fn)).unwrap()


wait: Callable[[AbortFn], Any] = _wait if FAST else trio.lowlevel.wait_task_rescheduled
"""``await wait(abort_fn)`` is ``await trio.lowlevel.wait_task_rescheduled(abort_fn)``."""
