"""Messages between the scheduler and its node actors, and the step's cancellation handle."""

from __future__ import annotations

import attrs
import trio

from ...actors.mailbox import MailboxSender
from ..graph.partial import NodePartial
from ..graph.state import StateSnapshot


@attrs.define(eq=False)
class StepCancel:
    """Cancels the executions of one step whose frontier index is above a failed node's.

    The scheduler hands one to every node of a step inside :class:`Execute`. When node ``i`` fails, the
    nodes after it in frontier order are cancelled at once; the nodes before it finish, because one of
    them failing too would take precedence. That keeps the reported failure the same under every
    interleaving: it is always the first failing node in frontier order.
    """

    _scopes: dict[int, trio.CancelScope] = attrs.field(factory=dict, init=False)
    _above: int | None = attrs.field(default=None, init=False)

    def register(self, index: int, scope: trio.CancelScope) -> None:
        self._scopes[index] = scope
        if self._above is not None and index > self._above:
            scope.cancel(reason="an earlier node of this step failed")

    def unregister(self, index: int) -> None:
        self._scopes.pop(index, None)

    def cancel_after(self, index: int) -> None:
        if self._above is not None and self._above <= index:
            return
        self._above = index
        for other, scope in self._scopes.items():
            if other > index:
                scope.cancel(reason="an earlier node of this step failed")

    def cancel_all(self) -> None:
        self.cancel_after(-1)


@attrs.frozen
class Execute:
    """Scheduler -> node actor: run once on ``snapshot`` for ``step`` of ``session_id``.

    The reply goes to ``reply_to``, the scheduler's reply mailbox (the node actor never closes it).
    """

    step: int
    index: int
    frontier_index: int
    snapshot: StateSnapshot
    session_id: str
    invocation_id: str
    cancel: StepCancel
    reply_to: MailboxSender[NodeDone]
    # Which execution of the step this is: a step abandoned by its caller is run again under the
    # same step number, and a node still busy with the old one must not answer for the new one.
    round: int = 0


@attrs.frozen
class NodeDone:
    """Node actor -> scheduler: the outcome of one :class:`Execute`.

    Exactly one of ``partial`` and ``error`` is set, unless ``cancelled``.
    """

    node: str
    step: int
    index: int
    partial: NodePartial | None = None
    error: BaseException | None = None
    cancelled: bool = False
    attempts: int = 1
    round: int = 0
