"""The scheduling-perturbation hook: extra yields and virtual delays at every mailbox operation.

Interleaving tests install one on mailboxes to explore schedules under a ``MockClock`` with
``autojump_threshold=0``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, TypeAlias

import attrs
import trio


@attrs.frozen
class MailboxOp:
    """One awaitable mailbox operation about to happen, as seen by a perturbation.

    Attributes:
        mailbox: The mailbox name given to ``open_mailbox``.
        op: ``"send"`` or ``"receive"``.
    """

    mailbox: str
    op: Literal["send", "receive"]


Perturbation: TypeAlias = Callable[[MailboxOp], Awaitable[None]]
"""Awaited before every ``send()``/``receive()`` of a mailbox it is installed on."""


def perturbation_from_plan(plan: Sequence[tuple[int, float]]) -> Perturbation:
    """Build a perturbation that replays ``plan`` cyclically, one entry per mailbox operation.

    Each entry ``(n, delay)`` means: yield to the scheduler ``n`` extra times, then sleep ``delay``
    seconds (virtual under a ``MockClock``) if ``delay > 0``. The position in the plan is kept in
    the returned closure, so one perturbation shared by several mailboxes steps through the plan in
    the global order of their operations.

    Args:
        plan: A non-empty sequence of ``(extra_checkpoints, delay_seconds)`` pairs.

    Returns:
        A perturbation to pass as ``open_mailbox(..., perturb=...)``.

    Raises:
        ValueError: If the plan is empty, a count is negative or a delay is negative or not finite.
    """
    steps = tuple((int(n), float(delay)) for n, delay in plan)
    if not steps:
        raise ValueError("perturbation plan is empty: give at least one (checkpoints, delay) pair")
    for n, delay in steps:
        if n < 0 or not (0.0 <= delay < float("inf")):
            raise ValueError(
                f"perturbation plan entry ({n}, {delay}) is invalid: use a checkpoint count >= 0 "
                "and a finite delay >= 0"
            )
    position = 0

    async def perturb(op: MailboxOp) -> None:
        nonlocal position
        n, delay = steps[position]
        position = (position + 1) % len(steps)
        for _ in range(n):
            await trio.lowlevel.checkpoint()
        if delay > 0:
            await trio.sleep(delay)

    return perturb
