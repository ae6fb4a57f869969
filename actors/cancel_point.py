"""A cancel point without a coroutine, for the paths that run once per event.

``await trio.lowlevel.checkpoint_if_cancelled()`` makes a coroutine on every call, which costs more
than the check it makes. The hot paths (``ctx.emit``, a stream's read) check inline instead::

    task = run_context.task
    if task._cancel_status.effectively_cancelled or task is task._runner.main_task:
        await trio.lowlevel.checkpoint_if_cancelled()  # raises what is pending
    else:
        task._cancel_points += 1

which reads what ``checkpoint_if_cancelled`` reads (trio's task fields, private to trio) and leaves
it the rare cases: a cancelled task, and the main task (a pending ``KeyboardInterrupt``).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

__all__ = ["FAST", "always_ask", "run_context"]


def always_ask() -> Any:
    """A stand-in for trio's run context whose task always looks cancelled, so the inline check
    always awaits ``checkpoint_if_cancelled`` (which raises only if the task really is)."""
    return SimpleNamespace(
        task=SimpleNamespace(_cancel_status=SimpleNamespace(effectively_cancelled=True))
    )


def _fields_present() -> bool:
    try:
        from trio._core._run import CancelStatus, Runner, Task
    except ImportError:  # pragma: no cover  (a trio whose internals moved)
        return False
    wanted = (
        (Task, ("_cancel_status", "_runner", "_cancel_points")),
        (CancelStatus, ("effectively_cancelled",)),
        (Runner, ("main_task",)),
    )
    return all(hasattr(cls, name) for cls, names in wanted for name in names)


FAST = _fields_present()
"""Whether the installed trio has the fields the inline check reads (it is then exact)."""

run_context: Any
if FAST:
    from trio._core._run_context import GLOBAL_RUN_CONTEXT as run_context
else:  # pragma: no cover  (another trio: correct, at the coroutine's cost)
    run_context = always_ask()
