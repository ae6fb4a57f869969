"""What the runner hands back: session starts, step reports, pauses and session views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs

from ..graph.builder import END
from ..graph.state import VersionedState


def _names(value: Sequence[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class Fresh:
    """``create_session`` started a new session from the given state."""


@attrs.frozen
class Resumed:
    """``create_session`` found the session in the checkpointer and resumed it at ``step``."""

    step: int


SessionInit = Fresh | Resumed


@attrs.frozen
class StepOptions:
    """Per-call interrupts for :meth:`AppRunner.run_step`.

    ``interrupt_before`` pauses before a step in which one of the named nodes would be in the frontier;
    ``interrupt_after`` pauses after a step in which one of them ran; ``interrupt_each_step`` pauses after
    every step. A paused session is resumed by calling ``run_step`` again (without the interrupt that
    paused it, for ``interrupt_before``).
    """

    interrupt_before: tuple[str, ...] = attrs.field(default=(), converter=_names)
    interrupt_after: tuple[str, ...] = attrs.field(default=(), converter=_names)
    interrupt_each_step: bool = False


@attrs.frozen
class StepReport:
    """What one superstep did. Node lists are in frontier order."""

    step: int
    ran_nodes: tuple[str, ...]
    skipped_nodes: tuple[str, ...]
    updated_channels: tuple[str, ...]
    next_frontier: tuple[str, ...]
    completed: bool


@attrs.frozen
class PauseReason:
    """Why a step paused: ``kind`` is ``"before_node"``, ``"after_node"`` or ``"after_step"``."""

    kind: Literal["before_node", "after_node", "after_step"]
    node: str | None = None


@attrs.frozen
class Completed:
    """The step ran to its end (``report.completed`` tells whether the whole session is done)."""

    report: StepReport


@attrs.frozen
class Paused:
    """The step paused on an interrupt; ``report`` is ``None`` when it paused before running."""

    reason: PauseReason
    report: StepReport | None = None


StepResult = Completed | Paused


@attrs.frozen
class SessionView:
    """A read-only view of a session between steps."""

    session_id: str
    state: VersionedState
    step: int
    frontier: tuple[str, ...]
    # For an iterative session, how many inputs invoke_next has applied; None for a plain one.
    invocation: int | None = None

    @property
    def completed(self) -> bool:
        return is_complete(self.frontier)

    @property
    def invocation_pending(self) -> bool:
        """An iterative session whose last invocation has not run to its end (it paused, failed,
        or its process stopped): ``continue_invocation`` finishes it."""
        return bool(self.invocation) and not self.completed


def is_complete(frontier: Sequence[str]) -> bool:
    """A session is complete when its frontier is empty or holds only END."""
    # Counted in C, not all() over a generator: this runs once per step.
    return frontier.count(END) == len(frontier)
