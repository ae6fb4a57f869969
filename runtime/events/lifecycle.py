"""Lifecycle events: what the runtime itself says about nodes and steps when asked to.

Built only with ``AppRunner(lifecycle_events=True)``; the runtime pays one flag test when off.
"""

from __future__ import annotations

import time
from typing import Final

from ..execution.clock import Clock
from ..execution.context import NodeContext
from .types import NodeEvent

__all__ = [
    "LIFECYCLE_SCOPES",
    "NODE_COMPLETED_SCOPE",
    "NODE_FAILED_SCOPE",
    "NODE_RETRYING_SCOPE",
    "NODE_SKIPPED_SCOPE",
    "NODE_STARTED_SCOPE",
    "STEP_COMPLETED_SCOPE",
]

NODE_STARTED_SCOPE: Final = "node.started"
NODE_COMPLETED_SCOPE: Final = "node.completed"
"""Metadata ``duration_ms``: from the start of the first attempt to the end of the last."""
NODE_FAILED_SCOPE: Final = "node.failed"
"""Metadata ``error``: ``"ExceptionType: message"`` of the attempt that failed the node."""
NODE_RETRYING_SCOPE: Final = "node.retrying"
"""Metadata ``attempt`` (the attempt about to run, from 2) and ``error`` (why the last failed)."""
NODE_SKIPPED_SCOPE: Final = "node.skipped"
"""A frontier node that is version-gated this step (START and END are not reported)."""
STEP_COMPLETED_SCOPE: Final = "step.completed"
"""One per successful step, ``node_id=""``; metadata ``ran``, ``skipped``, ``next_frontier``."""

LIFECYCLE_SCOPES: Final = frozenset(
    {
        NODE_STARTED_SCOPE,
        NODE_COMPLETED_SCOPE,
        NODE_FAILED_SCOPE,
        NODE_RETRYING_SCOPE,
        NODE_SKIPPED_SCOPE,
        STEP_COMPLETED_SCOPE,
    }
)


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def node_event(ctx: NodeContext, scope: str, message: str, **metadata: object) -> NodeEvent:
    """A lifecycle event of the node ``ctx`` runs.

    It does not take a ``node_seq`` of its own, so the node's events number the same with
    lifecycle events on or off: ``node.started`` has ``node_seq`` 0, later ones the number of
    the node's latest event, which puts them right after it in canonical order (ties keep the
    order of publication, and one node publishes in order).
    """
    return runtime_event(
        ctx._clock,
        ctx.session_id,
        ctx.invocation_id,
        ctx.step,
        scope,
        message,
        node_id=ctx.node_id,
        frontier_index=ctx.frontier_index,
        node_seq=ctx._seq,
        **metadata,
    )


def runtime_event(
    clock: Clock | None,
    session_id: str,
    invocation_id: str,
    step: int,
    scope: str,
    message: str,
    *,
    node_id: str = "",
    frontier_index: int | None = None,
    node_seq: int = 0,
    **extra: object,
) -> NodeEvent:
    """A lifecycle event the runtime emits for ``node_id`` (``""`` for the step itself).

    An event without ``frontier_index`` (``step.completed``) sorts after the step's node events
    in canonical order.
    """
    metadata: dict[str, object] = {
        **extra,
        "node_id": node_id,
        "step": step,
        "invocation_id": invocation_id,
    }
    if frontier_index is not None:
        metadata["frontier_index"] = frontier_index
        metadata["node_seq"] = node_seq
    if clock is not None:
        metadata["now_unix_ms"] = clock.now_unix_ms()
        timestamp = clock.now_seconds()
    else:
        timestamp = time.time()
    return NodeEvent(
        node_id=node_id,
        step=step,
        scope=scope,
        message=message,
        metadata=metadata,
        timestamp=timestamp,
        session_id=session_id,
    )
