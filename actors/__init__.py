"""The actor kernel: mailboxes, request/reply, supervision and the scheduling-perturbation hook.

It knows nothing of graphs; ``runtime/`` builds on it.
"""

from .errors import ActorGone, RequestDropped, TreadleError
from .mailbox import (
    MailboxReceiver,
    MailboxSender,
    MailboxStatistics,
    Overflow,
    open_mailbox,
)
from .perturb import MailboxOp, Perturbation, perturbation_from_plan
from .request import ReplyTo, ask, reply, serve_request
from .supervisor import (
    DEFAULT_RESTART_POLICY,
    ChildCrash,
    ChildHandle,
    ChildState,
    ChildStatistics,
    RestartPolicy,
    Supervisor,
    open_supervisor,
    supervise,
)

__all__ = [
    # errors
    "TreadleError",
    "ActorGone",
    "RequestDropped",
    # mailboxes
    "open_mailbox",
    "Overflow",
    "MailboxSender",
    "MailboxReceiver",
    "MailboxStatistics",
    # request/reply
    "ReplyTo",
    "ask",
    "reply",
    "serve_request",
    # supervision
    "supervise",
    "open_supervisor",
    "Supervisor",
    "RestartPolicy",
    "DEFAULT_RESTART_POLICY",
    "ChildState",
    "ChildCrash",
    "ChildStatistics",
    "ChildHandle",
    # perturbation
    "MailboxOp",
    "Perturbation",
    "perturbation_from_plan",
]
