"""Delta-encoded step history, shared by the SQLite, PostgreSQL and JSON backends.

A stored step is a *snapshot* or a *delta* against the step saved just before it; messages go to an
append-only log (or inline), so storage grows with what a run writes, not with steps x state size.
"""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any, Final, Protocol

import attrs

from ..errors import CheckpointerError, ConcurrencyConflict
from ..graph.frozen import strict_equal
from ..graph.persistent import DELETED, FrozenMap, Log
from ..graph.state import ErrorEvent, Message, VersionedState
from .checkpoint import (
    UNCHECKED,
    Checkpoint,
    Expected,
    StepInfo,
    frozen_versions_seen,
    parse_invocation,
)

SNAPSHOT: Final = "snapshot"
DELTA: Final = "delta"

FORMAT: Final = 2
"""Version of the body layout below; bumped when it changes incompatibly. Format 2: a delta holds
the ``versions_seen`` entries its step set (``versions_seen_set``) instead of the whole map. Rows of
format 1 are still read."""

DEFAULT_CHAIN: Final = 64
"""The fewest deltas a chain may hold when ``max_chain`` is not set."""

LINK_BYTES: Final = 1024
"""Without ``max_chain``, a chain may also hold one delta per this many bytes of its snapshot."""


class BrokenHistory(CheckpointerError):
    """A stored step cannot be rebuilt: a row it depends on is missing or unreadable."""

    def __init__(self, session_id: str, step: int, reason: str) -> None:
        self.session_id = session_id
        self.step = step
        super().__init__(f"step {step} of session {session_id!r} cannot be rebuilt: {reason}")


# -- rows ------------------------------------------------------------------------------------------


@attrs.frozen
class StepRow:
    """One stored step, as every backend keeps it.

    Attributes:
        kind: ``"snapshot"`` (self-contained) or ``"delta"`` (applies to ``base_step``).
        base_step: The step a delta applies to; ``None`` for a snapshot.
        root_step: The snapshot at the start of this row's chain when it was written; every row of
            the chain lies in ``[root_step, step]``, so one range query fetches it.
        messages_start: Where the state's messages begin in the session's message log (log mode).
        messages_len: How many messages the state holds.
        body: The JSON text of everything else (see :meth:`StepCodec.encode`).
    """

    session_id: str
    step: int
    created_at: int
    kind: str
    base_step: int | None
    root_step: int
    messages_start: int
    messages_len: int
    ran_nodes: tuple[str, ...]
    skipped_nodes: tuple[str, ...]
    updated_channels: tuple[str, ...]
    body: str

    def info(self) -> StepInfo:
        return StepInfo.of(self)


@attrs.frozen
class StepMeta:
    """What pruning needs to know about a stored step, without its body."""

    step: int
    created_at: int
    base_step: int | None
    messages_start: int


@attrs.frozen
class Head:
    """A session's latest pointer: the latest step, a token that changes with every write of it,
    and the next free position of its message log."""

    latest_step: int
    token: str
    log_end: int


class StepTx(Protocol):
    """The storage operations the shared algorithms below need, inside one transaction.

    Backends implement it over SQL or files; it is synchronous because it runs in a worker thread.
    """

    def head(self, session_id: str) -> Head | None: ...

    def rows(self, session_id: str, lo: int, hi: int) -> dict[int, StepRow]:
        """The stored steps ``lo <= step <= hi``, by step."""
        ...

    def metas(self, session_id: str) -> list[StepMeta]:
        """Every stored step, ascending."""
        ...

    def dependents(self, session_id: str, step: int) -> list[StepRow]:
        """The rows whose ``base_step`` is ``step``."""
        ...

    def put_rows(self, rows: Sequence[StepRow]) -> None:
        """Insert or replace rows."""
        ...

    def append_messages(self, session_id: str, start: int, messages: Sequence[Message]) -> None:
        """Store ``messages`` at log positions ``start`` on."""
        ...

    def messages(self, session_id: str, start: int, count: int) -> list[dict[str, Any]]: ...

    def set_head(self, session_id: str, head: Head, *, updated_at: int) -> None: ...

    def delete_steps(self, session_id: str, steps: Sequence[int]) -> None: ...

    def trim_messages(self, session_id: str, keep_from: int) -> None:
        """Delete log entries before ``keep_from``."""
        ...


# -- the codec -------------------------------------------------------------------------------------


@attrs.frozen
class Tip:
    """What the writer remembers of a session's latest stored step, to write the next as a delta."""

    session_id: str
    step: int
    token: str
    state: VersionedState
    root_step: int
    depth: int
    delta_bytes: int
    snapshot_bytes: int
    messages_start: int
    # The step's versions_seen: the next delta stores only what its step changed in it.
    versions_seen: Mapping[str, tuple[int, int]] | None = None


@attrs.frozen
class Encoded:
    """A step ready to store: its row, the messages to append to the log, and the new tip."""

    row: StepRow
    log_messages: tuple[Message, ...]
    tip: Tip


@attrs.frozen
class Draft:
    """A step encoded ahead of its transaction, against the tip the codec remembered then.

    Encoding needs no storage, only the tip, so it can happen on the caller's thread before the
    transaction starts; the transaction then only checks that the stored head is still that tip and
    writes. If anything else wrote the session in between, the draft does not fit and the step is
    encoded again inside the transaction, so a draft never changes what is stored.

    A draft whose ``base`` is ``None`` is the first step of a session not stored yet (step 0 with
    no tip): it fits only while the session has no head.
    """

    base: Tip | None
    log_end: int
    token: str
    encoded: Encoded

    def fits(self, head: Head | None) -> bool:
        """Whether ``head`` (read inside the transaction) is still exactly the draft's base."""
        if self.base is None:
            return head is None
        return (
            head is not None
            and head.latest_step == self.base.step
            and head.token == self.base.token
            and head.log_end == self.log_end
        )


# One encoder for every body: json.dumps with options builds a new encoder on each call.
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(value: object) -> str:
    """Compact JSON text, as stored in rows (NaN and infinity refused)."""
    return _ENCODER.encode(value)


def _message_json(message: Message) -> dict[str, str]:
    return {"role": message.role, "content": message.content}


def messages_json(messages: Sequence[Message]) -> str:
    """``messages`` as a JSON array of ``{"role", "content"}`` objects: the text :func:`dumps`
    writes for them, made without building a dict per message (a state may start with 100,000)."""
    text = encode_basestring  # the json module's own string escaping, as ensure_ascii=False uses
    return "[" + ",".join([_MESSAGE % (text(m.role), text(m.content)) for m in messages]) + "]"


_MESSAGE: Final = '{"role":%s,"content":%s}'


def _appended(old: Sequence[Message], new: Sequence[Message]) -> tuple[Message, ...] | None:
    """The messages added to ``old`` to make ``new``, or ``None`` if history was rewritten.

    O(appended) when both are views of one :class:`Log` (a step extends its state's log).
    """
    if type(new) is Log:
        return new.since(old)
    n = len(old)
    if old is new:
        return ()
    if len(new) < n or tuple(new[:n]) != tuple(old):
        return None
    return tuple(new[n:])


def _extra_delta(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The keys set and the keys deleted between ``old`` and ``new``. The values stay frozen:
    :func:`dumps` writes tuples and frozen mappings as JSON arrays and objects.

    When ``new`` was made from ``old`` by a few updates, only the keys they wrote are looked at;
    otherwise every key is compared.
    """
    if old is new:
        return {}, []
    if type(new) is FrozenMap and type(old) is FrozenMap:
        changes = new.changes_since(old)
        if changes is not None:
            changed: dict[str, Any] = {}
            deleted: list[str] = []
            for key, value in changes.items():
                if value is DELETED:
                    deleted.append(key)
                else:
                    changed[key] = value
            return changed, deleted
    missing = object()
    changed = {
        key: value for key, value in new.items() if not strict_equal(old.get(key, missing), value)
    }
    deleted = [key for key in old if key not in new]
    return changed, deleted


def _seen_changes(
    old: Mapping[str, tuple[int, int]] | None, new: Mapping[str, tuple[int, int]]
) -> Mapping[str, tuple[int, int]] | None:
    """The ``versions_seen`` entries set on the way from ``old`` to ``new``, when ``new`` was made
    from ``old`` by :meth:`FrozenMap.assigned` (as the scheduler makes each step's) or
    :meth:`FrozenMap.updated`; ``None`` when that is not known, and the map is stored whole."""
    if old is new:
        return {}
    if type(new) is FrozenMap and type(old) is FrozenMap:
        changes = new.changes_since(old)
        if changes is not None and all(value is not DELETED for value in changes.values()):
            return changes
    return None


def _seen_json(seen: Mapping[str, tuple[int, int]]) -> dict[str, list[int]]:
    return {node: list(pair) for node, pair in seen.items()}


def _errors_json(errors: tuple[ErrorEvent, ...]) -> list[dict[str, Any]]:
    return [error.to_json_value() for error in errors]


@attrs.define
class StepCodec:
    """Encodes steps as snapshots or deltas and rebuilds checkpoints from them.

    A step is written as a delta against the session's previous stored step when this codec wrote
    or read that step (its *tip*, checked against the stored head token so a foreign write forces
    a snapshot), the chain is shorter than its limit, and the deltas since the last snapshot are
    still smaller than that snapshot. So total storage stays within about twice what the deltas
    hold.

    The chain limit is ``max_chain`` when given. Otherwise it grows with the snapshot: 64 deltas,
    or one per KiB the snapshot holds when that is more. Writing a snapshot costs its size, so
    with a fixed limit a big state would cost a share of its size every step; with the scaled one
    that share stays about one KiB of encoding per step, and rebuilding a step reads about as
    many delta rows as the snapshot holds KiB.

    Args:
        inline_messages: Keep messages in the bodies (JSON files) instead of a separate log.
        max_chain: The most deltas between two snapshots (``None``: scaled, as above).
        cache_size: How many sessions' tips to remember (least recently used are forgotten).
    """

    inline_messages: bool = False
    max_chain: int | None = None
    cache_size: int = 256
    _tips: OrderedDict[str, Tip] = attrs.field(factory=OrderedDict, init=False)
    # Per session, the (step, head token) this codec last wrote as the latest: a write whose
    # commit went through although its caller saw it fail is recognised by it on retry.
    _written: OrderedDict[str, tuple[int, str]] = attrs.field(factory=OrderedDict, init=False)

    # -- the tip cache -----------------------------------------------------------------------------

    def valid_tip(self, session_id: str, head: Head | None) -> Tip | None:
        tip = self._tips.get(session_id)
        if tip is None or head is None:
            return None
        if tip.step != head.latest_step or tip.token != head.token:
            del self._tips[session_id]
            return None
        self._tips.move_to_end(session_id)
        return tip

    def remember(self, tip: Tip) -> None:
        self._tips[tip.session_id] = tip
        self._tips.move_to_end(tip.session_id)
        while len(self._tips) > self.cache_size:
            self._tips.popitem(last=False)

    def wrote(self, session_id: str, step: int, token: str) -> None:
        """Note that this codec made ``step`` the latest with ``token`` (committed or not)."""
        self._written[session_id] = (step, token)
        self._written.move_to_end(session_id)
        while len(self._written) > self.cache_size:
            self._written.popitem(last=False)

    def was_written_here(self, session_id: str, head: Head) -> bool:
        """Whether the stored head is a write made by this codec."""
        return self._written.get(session_id) == (head.latest_step, head.token)

    def peek_tip(self, session_id: str) -> Tip | None:
        """The remembered tip of a session, unchecked (for drafting; any thread may call it)."""
        return self._tips.get(session_id)

    def forget(self, session_id: str | None = None) -> None:
        """Drop one session's tip (after a failed write, a delete) or all of them."""
        if session_id is None:
            self._tips.clear()
        else:
            self._tips.pop(session_id, None)

    # -- encoding ----------------------------------------------------------------------------------

    def chain_limit(self, tip: Tip) -> int:
        """How many deltas may follow the snapshot that ``tip``'s chain starts from."""
        if self.max_chain is not None:
            return self.max_chain
        return max(DEFAULT_CHAIN, tip.snapshot_bytes // LINK_BYTES)

    def encode(self, cp: Checkpoint, tip: Tip | None, *, log_end: int, token: str) -> Encoded:
        """Encode ``cp`` as a delta against ``tip`` when worthwhile, else as a snapshot.

        The body holds ``frontier``, ``join_state``, ``concurrency_limit``, ``versions`` and
        ``graph_hash`` (when known); a snapshot adds ``versions_seen``, ``extra`` and ``errors``
        (and ``messages`` inline); a delta adds ``versions_seen_set`` (the entries its step set;
        the whole ``versions_seen`` when that is not known), ``extra_set``, ``extra_deleted``,
        ``errors`` only when they changed (and ``messages_appended`` inline).
        """
        state = cp.state
        appended: tuple[Message, ...] | None = None
        if tip is not None and cp.step > tip.step:
            appended = _appended(tip.state.messages, state.messages)
        is_delta = (
            tip is not None
            and cp.step > tip.step
            and tip.depth < self.chain_limit(tip)
            and tip.delta_bytes < tip.snapshot_bytes
            # A rewritten history (custom reducer) restarts the chain.
            and appended is not None
        )
        body: dict[str, Any] = {
            "format": FORMAT,
            "frontier": list(cp.frontier),
            "join_state": {key: list(sources) for key, sources in cp.join_state.items()},
            "concurrency_limit": cp.concurrency_limit,
            "versions": {
                "messages": state.messages_version,
                "extra": state.extra_version,
                "errors": state.errors_version,
            },
        }
        if cp.graph_hash is not None:
            body["graph_hash"] = cp.graph_hash
        if cp.invocation is not None:
            body["invocation"] = cp.invocation
        if is_delta:
            assert tip is not None
            assert appended is not None
            seen = _seen_changes(tip.versions_seen, cp.versions_seen)
            if seen is None:
                body["versions_seen"] = _seen_json(cp.versions_seen)
            else:
                body["versions_seen_set"] = _seen_json(seen)
            changed, deleted = _extra_delta(tip.state.extra, state.extra)
            body["extra_set"] = changed
            body["extra_deleted"] = deleted
            if tip.state.errors is not state.errors and tip.state.errors != state.errors:
                body["errors"] = _errors_json(state.errors)
            if self.inline_messages:
                body["messages_appended"] = [_message_json(m) for m in appended]
        else:
            body["versions_seen"] = _seen_json(cp.versions_seen)
            body["extra"] = dict(state.extra.items())
            body["errors"] = _errors_json(state.errors)
            if self.inline_messages:
                body["messages"] = [_message_json(m) for m in state.messages]

        log_messages: tuple[Message, ...] = ()
        messages_start = 0
        if not self.inline_messages:
            if (
                tip is not None
                and appended is not None
                and log_end == tip.messages_start + len(tip.state.messages)
            ):
                messages_start = tip.messages_start
                log_messages = appended
            else:
                messages_start = log_end
                log_messages = tuple(state.messages)

        try:
            text = dumps(body)
        except (TypeError, ValueError) as exc:
            raise CheckpointerError(
                f"step {cp.step} of session {cp.session_id!r} cannot be stored: {exc}"
            ) from exc
        if is_delta:
            assert tip is not None
            base_step: int | None = tip.step
            root_step = tip.root_step
            new_tip = Tip(
                cp.session_id,
                cp.step,
                token,
                state,
                root_step,
                tip.depth + 1,
                tip.delta_bytes + len(text),
                tip.snapshot_bytes,
                messages_start,
                cp.versions_seen,
            )
        else:
            base_step = None
            root_step = cp.step
            new_tip = Tip(
                cp.session_id,
                cp.step,
                token,
                state,
                cp.step,
                0,
                0,
                len(text),
                messages_start,
                cp.versions_seen,
            )
        row = StepRow(
            session_id=cp.session_id,
            step=cp.step,
            created_at=cp.created_at,
            kind=DELTA if is_delta else SNAPSHOT,
            base_step=base_step,
            root_step=root_step,
            messages_start=messages_start,
            messages_len=len(state.messages),
            ran_nodes=cp.ran_nodes,
            skipped_nodes=cp.skipped_nodes,
            updated_channels=cp.updated_channels,
            body=text,
        )
        return Encoded(row, log_messages, new_tip)

    # -- decoding ----------------------------------------------------------------------------------

    def _replay(
        self, chain: Sequence[StepRow]
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[Any], list[Any]]:
        """Fold a chain (snapshot first): the last body, and the versions_seen (as stored), extra,
        errors and inline messages."""
        first = chain[0]
        try:
            body = json.loads(first.body)
            seen: dict[str, Any] = dict(body["versions_seen"])
            extra: dict[str, Any] = dict(body["extra"])
            errors: list[Any] = list(body["errors"])
            messages: list[Any] = list(body.get("messages", ()))
            for row in chain[1:]:
                body = json.loads(row.body)
                if "versions_seen" in body:  # written whole (and in every row of format 1)
                    seen = dict(body["versions_seen"])
                else:
                    seen.update(body["versions_seen_set"])
                extra.update(body["extra_set"])
                for key in body["extra_deleted"]:
                    extra.pop(key, None)
                if "errors" in body:
                    errors = list(body["errors"])
                messages.extend(body.get("messages_appended", ()))
        except (ValueError, KeyError, TypeError) as exc:
            last = chain[-1]
            raise BrokenHistory(
                last.session_id, last.step, f"a stored body is malformed ({exc!r})"
            ) from exc
        return body, seen, extra, errors, messages

    def decode(
        self, chain: Sequence[StepRow], log_messages: Sequence[Mapping[str, Any]] | None
    ) -> Checkpoint:
        """Rebuild the checkpoint of ``chain[-1]``; ``log_messages`` are its messages (log mode)."""
        body, seen, extra, errors, inline = self._replay(chain)
        row = chain[-1]
        messages = list(log_messages) if log_messages is not None else inline
        if len(messages) != row.messages_len:
            raise BrokenHistory(
                row.session_id,
                row.step,
                f"{len(messages)} of its {row.messages_len} messages are stored",
            )
        try:
            state = VersionedState.from_json_value(
                {
                    "messages": messages,
                    "extra": extra,
                    "errors": errors,
                    "versions": body["versions"],
                }
            )
            return Checkpoint(
                session_id=row.session_id,
                step=row.step,
                state=state,
                frontier=body["frontier"],
                # A persistent map, as a session keeps it: resumed, the session's next step makes
                # its map from this one, and its delta stores only what that step set.
                versions_seen=frozen_versions_seen(seen),
                join_state=body["join_state"],
                concurrency_limit=body["concurrency_limit"],
                created_at=row.created_at,
                ran_nodes=row.ran_nodes,
                skipped_nodes=row.skipped_nodes,
                updated_channels=row.updated_channels,
                graph_hash=body.get("graph_hash"),
                invocation=parse_invocation(body.get("invocation")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BrokenHistory(
                row.session_id, row.step, f"its body is malformed ({exc!r})"
            ) from exc

    def materialize(self, chain: Sequence[StepRow]) -> StepRow:
        """``chain[-1]`` rewritten as a self-contained snapshot (same checkpoint, no base)."""
        body, seen, extra, errors, inline = self._replay(chain)
        for key in ("versions_seen_set", "extra_set", "extra_deleted", "messages_appended"):
            body.pop(key, None)
        body["versions_seen"] = seen
        body["extra"] = extra
        body["errors"] = errors
        if self.inline_messages:
            body["messages"] = inline
        row = chain[-1]
        return attrs.evolve(
            row, kind=SNAPSHOT, base_step=None, root_step=row.step, body=dumps(body)
        )

    def tip_of(self, chain: Sequence[StepRow], cp: Checkpoint, token: str) -> Tip:
        """The tip for a latest step just read back, so the next write can be a delta."""
        return Tip(
            session_id=cp.session_id,
            step=cp.step,
            token=token,
            state=cp.state,
            root_step=chain[0].step,
            depth=len(chain) - 1,
            delta_bytes=sum(len(row.body) for row in chain[1:]),
            snapshot_bytes=len(chain[0].body),
            messages_start=chain[-1].messages_start,
            versions_seen=cp.versions_seen,
        )


# -- the shared algorithms -------------------------------------------------------------------------


def chain_to(tx: StepTx, row: StepRow) -> list[StepRow]:
    """The rows needed to rebuild ``row``, snapshot first.

    Raises:
        BrokenHistory: A row of the chain is missing.
    """
    if row.kind == SNAPSHOT:
        return [row]
    rows = tx.rows(row.session_id, row.root_step, row.step - 1)
    chain = [row]
    current = row
    while current.kind != SNAPSHOT:
        base_step = current.base_step
        base = rows.get(base_step) if base_step is not None else None
        if base is None or base.step >= current.step:
            raise BrokenHistory(
                row.session_id, row.step, f"step {base_step} it builds on is missing"
            )
        chain.append(base)
        current = base
    chain.reverse()
    return chain


def draft_steps(codec: StepCodec, cps: Sequence[Checkpoint]) -> list[Draft | None]:
    """Encode ``cps`` ahead of their transaction, each against the tip the one before would leave.

    A step gets no draft (``None``) when the codec has no tip for its session or the step does not
    come after that tip (a stored step being replaced); the transaction encodes those itself. Step
    0 with no tip is the exception: it is drafted as the first step of a new session (a snapshot
    on an empty log, as the transaction would encode it for a session with no head).
    Encoding errors (a value JSON cannot hold) are raised here, before anything is written.
    """
    drafts: list[Draft | None] = []
    # Within one batch, a session's next step builds on the draft before it.
    tips: dict[str, Tip | None] = {}
    for cp in cps:
        session_id = cp.session_id
        tip = tips[session_id] if session_id in tips else codec.peek_tip(session_id)
        if tip is None and cp.step == 0 and session_id not in tips:
            token = secrets.token_hex(8)
            encoded = codec.encode(cp, None, log_end=0, token=token)
            drafts.append(Draft(None, 0, token, encoded))
            tips[session_id] = encoded.tip
            continue
        if tip is None or cp.step <= tip.step:
            drafts.append(None)
            tips[session_id] = None
            continue
        # The stored head's log end after the tip was written (inline messages use no log).
        log_end = 0 if codec.inline_messages else tip.messages_start + len(tip.state.messages)
        token = secrets.token_hex(8)
        encoded = codec.encode(cp, tip, log_end=log_end, token=token)
        drafts.append(Draft(tip, log_end, token, encoded))
        tips[session_id] = encoded.tip
    return drafts


def save_step(
    codec: StepCodec,
    tx: StepTx,
    cp: Checkpoint,
    *,
    draft: Draft | None = None,
    expected: Expected = UNCHECKED,
) -> Tip | None:
    """Store ``cp`` inside ``tx``; the tip to remember once ``tx`` commits (``None``: keep the old).

    Args:
        draft: ``cp`` encoded ahead (:func:`draft_steps`), used if it still fits the stored head.
        expected: The latest step the writer builds on (``None``: no session yet), compared with
            the stored one first; :data:`UNCHECKED` skips the comparison.

    Raises:
        ConcurrencyConflict: ``expected`` is not the stored latest step, unless the stored latest
            step is ``cp`` itself, written by this codec: a retried save whose first attempt
            committed although it was reported as failed is recognised and stores nothing.
    """
    session_id = cp.session_id
    head = tx.head(session_id)
    if expected is not UNCHECKED:
        actual = head.latest_step if head is not None else None
        if actual != expected:
            if (
                head is not None
                and actual == cp.step
                and codec.was_written_here(session_id, head)
                and _stored_as(codec, tx, cp)
            ):
                return None  # our own earlier attempt committed: nothing to do
            raise ConcurrencyConflict(session_id, expected, actual)
    if draft is not None and draft.fits(head):
        token, log_end, encoded = draft.token, draft.log_end, draft.encoded
    else:
        tip = codec.valid_tip(session_id, head)
        token = secrets.token_hex(8)
        log_end = head.log_end if head is not None else 0
        encoded = codec.encode(cp, tip, log_end=log_end, token=token)
    new_log_end = log_end + len(encoded.log_messages)
    becomes_latest = head is None or cp.step >= head.latest_step
    # The head goes first: rows and messages reference the session row.
    if becomes_latest:
        tx.set_head(session_id, Head(cp.step, token, new_log_end), updated_at=cp.created_at)
        codec.wrote(session_id, cp.step, token)
    else:
        assert head is not None
        tx.set_head(
            session_id, Head(head.latest_step, head.token, new_log_end), updated_at=cp.created_at
        )
    if head is not None and cp.step <= head.latest_step:
        # Replacing a stored step: the rows built on its old version must stop depending on it.
        for dependent in tx.dependents(session_id, cp.step):
            tx.put_rows([codec.materialize(chain_to(tx, dependent))])
    if encoded.log_messages:
        tx.append_messages(session_id, log_end, encoded.log_messages)
    tx.put_rows([encoded.row])
    return encoded.tip if becomes_latest else None


def _stored_as(codec: StepCodec, tx: StepTx, cp: Checkpoint) -> bool:
    """Whether the stored step ``cp.step`` is ``cp`` (but for when it was written)."""
    try:
        stored = load_step(codec, tx, cp.session_id, cp.step)
    except CheckpointerError:
        return False
    return stored is not None and attrs.evolve(stored, created_at=cp.created_at) == cp


def save_steps(
    codec: StepCodec,
    tx: StepTx,
    cps: Sequence[Checkpoint],
    *,
    drafts: Sequence[Draft | None] | None = None,
    expected: Sequence[Expected] | None = None,
) -> None:
    """Store ``cps`` in order inside ``tx``, each checked against its ``expected`` step if given.

    ``drafts``, from :func:`draft_steps` on the same ``cps``, saves encoding them here.
    Each new tip is remembered at once, so the next step of a session in the batch is a delta on it.
    If ``tx`` then fails to commit, the caller must :meth:`StepCodec.forget` those sessions.
    """
    for index, cp in enumerate(cps):
        tip = save_step(
            codec,
            tx,
            cp,
            draft=drafts[index] if drafts is not None else None,
            expected=expected[index] if expected is not None else UNCHECKED,
        )
        if tip is not None:
            codec.remember(tip)


def load_step(codec: StepCodec, tx: StepTx, session_id: str, step: int | None) -> Checkpoint | None:
    """The checkpoint of ``session_id`` at ``step`` (``None``: the latest), or ``None`` if absent.

    Reading the latest step also makes it the codec's tip, so a resumed session keeps writing deltas.

    Raises:
        BrokenHistory: The step is stored but cannot be rebuilt.
    """
    head = tx.head(session_id)
    if head is None:
        return None
    target = head.latest_step if step is None else step
    row = tx.rows(session_id, target, target).get(target)
    if row is None:
        return None
    chain = chain_to(tx, row)
    log = (
        None
        if codec.inline_messages
        else tx.messages(session_id, row.messages_start, row.messages_len)
    )
    cp = codec.decode(chain, log)
    if target == head.latest_step:
        codec.remember(codec.tip_of(chain, cp, head.token))
    return cp


def prune_session(
    codec: StepCodec,
    tx: StepTx,
    session_id: str,
    *,
    cutoff_ms: int | None,
    keep_last: int | None,
) -> int:
    """Delete the session's steps older than ``cutoff_ms`` and outside the last ``keep_last``.

    Both criteria must hold for a step to go; the latest step always stays. Surviving deltas whose
    base is deleted are rewritten as snapshots first, and log messages no survivor uses are dropped.

    Returns:
        How many steps were deleted.
    """
    metas = tx.metas(session_id)
    head = tx.head(session_id)
    if not metas or head is None:
        return 0
    recent = {m.step for m in metas[max(0, len(metas) - keep_last) :]} if keep_last else set()
    doomed = {
        m.step
        for m in metas
        if m.step != head.latest_step
        and (cutoff_ms is None or m.created_at < cutoff_ms)
        and (keep_last is None or m.step not in recent)
    }
    if not doomed:
        return 0
    survivors = [m for m in metas if m.step not in doomed]
    orphans = [m.step for m in survivors if m.base_step is not None and m.base_step in doomed]
    for step in orphans:
        row = tx.rows(session_id, step, step)[step]
        tx.put_rows([codec.materialize(chain_to(tx, row))])
    tx.delete_steps(session_id, sorted(doomed))
    if not codec.inline_messages:
        tx.trim_messages(session_id, min(m.messages_start for m in survivors))
    return len(doomed)
