"""What a run says: node, diagnostic and LLM events, the sentinels that end streams, JSON forms.

Events are immutable; the bus stamps ``session_id`` and a per-session ``seq`` by making a copy.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, TypeAlias

import attrs

from ..graph.frozen import EMPTY, FrozenDict, freeze

__all__ = [
    "INVOCATION_END_SCOPE",
    "LLM_CHUNK_SCOPE",
    "LLM_ERROR_SCOPE",
    "LLM_FINAL_SCOPE",
    "SINK_ERROR_SCOPE",
    "STREAM_END_SCOPE",
    "AnyEvent",
    "DiagnosticEvent",
    "Event",
    "LLMEvent",
    "NodeEvent",
    "canonical_order",
    "event_from_json",
    "invocation_end",
    "is_sentinel",
    "stream_end",
]

STREAM_END_SCOPE: Final = "__treadle_stream_end__"
"""Scope of the diagnostic that ends a run's stream (exactly one per run)."""
INVOCATION_END_SCOPE: Final = "__treadle_invocation_end__"
"""Scope of the diagnostic that ends each ``invoke_next`` of an iterative session."""
LLM_FINAL_SCOPE: Final = "final"
LLM_CHUNK_SCOPE: Final = "chunk"
LLM_ERROR_SCOPE: Final = "error"
SINK_ERROR_SCOPE: Final = "sink.error"
"""Scope of the diagnostic the bus publishes for a sink failure when ``emit_to_events`` is on."""

_SENTINEL_SCOPES: Final = frozenset({STREAM_END_SCOPE, INVOCATION_END_SCOPE})

# The encoder of to_json_string (stateless once built, so one serves every call), and the
# functions it uses for strings, floats and ints, so the fast path writes the same text.
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_string: Final = json.encoder.encode_basestring
_float: Final = float.__repr__
_int: Final = int.__repr__


def _metadata(value: Mapping[str, object] | None) -> FrozenDict:
    # Fast path: the runtime hands over metadata it already froze.
    if type(value) is FrozenDict:
        return value
    if value is None:
        return EMPTY
    frozen = freeze(value, path="metadata")
    if not isinstance(frozen, FrozenDict):
        raise TypeError(f"event metadata must be a mapping of JSON values, not {type(value)!r}")
    return frozen


def _with_fields(metadata: FrozenDict, fields: dict[str, object]) -> FrozenDict | None:
    """``metadata`` updated with ``fields``, or None when it already holds exactly those values."""
    for key, value in fields.items():
        if key not in metadata or metadata[key] != value or type(metadata[key]) is not type(value):
            # Every value is already frozen (the fields are str/int/bool/None), so skip the
            # re-freezing walk of FrozenDict(...).
            merged = dict.__new__(FrozenDict)
            dict.update(merged, metadata)
            dict.update(merged, fields)
            return merged
    return None


class Event:
    """Base class of every event: :class:`NodeEvent`, :class:`DiagnosticEvent`, :class:`LLMEvent`.

    Use it in annotations and ``isinstance`` checks; match on :data:`AnyEvent` when every variant
    must be handled. ``Event.from_json`` reads any variant back from its JSON form.
    """

    __slots__ = ()

    # Declared for type checkers; each subclass defines them as attrs fields (or a property).
    scope: str
    metadata: FrozenDict
    timestamp: float
    session_id: str | None
    seq: int | None
    json_type: ClassVar[str]

    @property
    def message(self) -> str:
        """The human text of the event (an LLM event's chunk)."""
        raise NotImplementedError

    def to_json_value(self) -> dict[str, Any]:
        """The normalised JSON object for this event.

        Shape: ``{"type", "scope", "message", "timestamp", "session_id", "seq", "metadata"}`` where
        ``type`` is ``"node"``, ``"diagnostic"`` or ``"llm"`` and ``timestamp`` is Unix seconds.
        Fields that have no top-level key (``node_id``, ``step``, ``stream_id``, ``is_final``) are
        always present inside ``metadata``.
        """
        return {
            "type": self.json_type,
            "scope": self.scope,
            "message": self.message,
            "timestamp": self.timestamp,
            "session_id": self.session_id,
            "seq": self.seq,
            "metadata": self.metadata,
        }

    def to_json_string(self) -> str:
        """Compact one-line JSON (no newline), as written to JSON Lines files and WebSockets."""
        scope, message, timestamp, sid, seq = (
            self.scope,
            self.message,
            self.timestamp,
            self.session_id,
            self.seq,
        )
        if (
            type(scope) is not str
            or type(message) is not str
            or type(timestamp) is not float
            or not math.isfinite(timestamp)
            or not (sid is None or type(sid) is str)
            or not (seq is None or type(seq) is int)
        ):
            return _COMPACT.encode(self.to_json_value())
        # The same text as encoding to_json_value() whole, written field by field: a sink that
        # encodes every event (a WebSocket server) spends a third of the time.
        return (
            f'{{"type":"{self.json_type}","scope":{_string(scope)},"message":{_string(message)},'
            f'"timestamp":{_float(timestamp)},'
            f'"session_id":{"null" if sid is None else _string(sid)},'
            f'"seq":{"null" if seq is None else _int(seq)},'
            f'"metadata":{_COMPACT.encode(self.metadata)}}}'
        )

    def to_json_pretty(self) -> str:
        """Indented JSON for humans."""
        return json.dumps(self.to_json_value(), indent=2, ensure_ascii=False)

    @staticmethod
    def from_json(data: str | bytes | Mapping[str, Any]) -> AnyEvent:
        """Read an event back from :meth:`to_json_value` or :meth:`to_json_string` output."""
        return event_from_json(data)

    # Slot (getter, setter) pairs of the fields a stamp copies, set by _enable_stamping.
    _copied_slots: ClassVar[tuple[tuple[Any, Any], ...]] = ()
    _set_session_id: ClassVar[Any]
    _set_seq: ClassVar[Any]

    def stamped(self, session_id: str | None, seq: int | None) -> Self:
        """A copy carrying ``session_id`` and ``seq`` (what the bus does on publish)."""
        # The bus stamps every event, so copy the slots directly: the fields were validated
        # when ``self`` was built, and __init__ would cost twice as much.
        cls = type(self)
        self.metadata  # noqa: B018  (a compact event's fields are filled now, for the copy)
        new = object.__new__(cls)
        for get, put in cls._copied_slots:
            put(new, get(self))
        cls._set_session_id(new, session_id)
        cls._set_seq(new, seq)
        return new


@attrs.frozen(eq=True)
class NodeEvent(Event):
    """Something a node said while running (``ctx.emit(scope, message, **metadata)``).

    ``metadata`` always holds ``node_id`` and ``step`` too (the fields win over a mismatching
    key), so the JSON form carries them and reads back equal.
    """

    json_type: ClassVar[str] = "node"
    _slot_setters: ClassVar[tuple[Any, ...]] = ()
    _compact_setters: ClassVar[tuple[Any, ...]] = ()

    node_id: str
    step: int
    scope: str
    message: str
    metadata: FrozenDict = attrs.field(default=EMPTY, converter=_metadata)
    timestamp: float = attrs.field(factory=time.time)
    session_id: str | None = None
    seq: int | None = None
    # An event ``ctx.emit`` publishes without metadata of its own is built compact (see
    # EventBus.publish_emitted): its ``scope``, ``message``, ``timestamp`` and ``seq`` are set, and
    # ``_origin`` is ``(node_id, step, session_id, shared metadata)``, one tuple for every event of
    # a node execution. The other fields' slots stay empty until one is first read (most sinks and
    # streams never read them), so the event costs fewer slot stores to build and fewer references
    # for the garbage collector to follow each time it walks the events a sink keeps.
    _origin: tuple[Any, ...] | None = attrs.field(default=None, init=False, eq=False, repr=False)
    _node_seq: int = attrs.field(default=0, init=False, eq=False, repr=False)

    if not TYPE_CHECKING:  # no catch-all attribute for type checkers

        def __getattr__(self, name: str) -> Any:
            # Python calls this only for a slot that was never set: a compact event's field.
            if name not in _COMPACT_FIELDS or self._origin is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            node_id, step, session_id, shared = self._origin
            metadata = dict.__new__(FrozenDict)
            dict.update(metadata, shared)
            dict.__setitem__(metadata, "node_seq", self._node_seq)
            values = (node_id, step, metadata, session_id)
            for put, value in zip(NodeEvent._compact_setters, values, strict=True):
                put(self, value)
            return values[_COMPACT_FIELDS[name]]

    def __attrs_post_init__(self) -> None:
        md = self.metadata
        if md.get("node_id") != self.node_id or md.get("step") != self.step:
            fixed = _with_fields(md, {"node_id": self.node_id, "step": self.step})
            if fixed is not None:
                object.__setattr__(self, "metadata", fixed)

    def __str__(self) -> str:
        return f"[{self.node_id}@{self.step}] {self.scope}: {self.message}"

    @classmethod
    def _fresh(
        cls,
        node_id: str,
        step: int,
        scope: str,
        message: str,
        metadata: FrozenDict,
        timestamp: float,
        session_id: str,
    ) -> NodeEvent:
        """Build an event from values the runtime already checked and froze (``ctx.emit``).

        ``metadata`` must be a FrozenDict already holding ``node_id`` and ``step``. The event is
        new, so the bus may stamp its ``seq`` in place (:meth:`EventBus.publish_fresh`).
        """
        new = object.__new__(cls)
        # Slot descriptors set directly: this runs for every event a node emits with metadata.
        set_ = cls._slot_setters
        set_[0](new, node_id)
        set_[1](new, step)
        set_[2](new, scope)
        set_[3](new, message)
        set_[4](new, metadata)
        set_[5](new, timestamp)
        set_[6](new, session_id)
        set_[7](new, None)
        set_[8](new, None)
        set_[9](new, 0)
        return new


# The fields a compact NodeEvent fills on first read, and their index in its values.
_COMPACT_FIELDS: Final = {"node_id": 0, "step": 1, "metadata": 2, "session_id": 3}


@attrs.frozen(eq=True)
class DiagnosticEvent(Event):
    """Something the runtime (or a node, via ``ctx.emit_diagnostic``) reports about a run.

    Sentinels (:func:`stream_end`, :func:`invocation_end`) are diagnostics too.
    """

    json_type: ClassVar[str] = "diagnostic"

    scope: str
    message: str
    metadata: FrozenDict = attrs.field(default=EMPTY, converter=_metadata)
    timestamp: float = attrs.field(factory=time.time)
    session_id: str | None = None
    seq: int | None = None

    def __str__(self) -> str:
        return f"({self.scope}) {self.message}"


@attrs.frozen(eq=True)
class LLMEvent(Event):
    """One chunk of a streamed LLM response (scope ``"chunk"``, ``"final"`` or ``"error"``).

    ``metadata`` always holds ``node_id``, ``stream_id`` and ``is_final`` too; the chunk is the
    event's ``message`` in JSON.
    """

    json_type: ClassVar[str] = "llm"

    session_id: str | None
    node_id: str
    stream_id: str | None
    chunk: str
    is_final: bool
    scope: str
    metadata: FrozenDict = attrs.field(default=EMPTY, converter=_metadata)
    timestamp: float = attrs.field(factory=time.time)
    seq: int | None = None

    def __attrs_post_init__(self) -> None:
        fixed = _with_fields(
            self.metadata,
            {"node_id": self.node_id, "stream_id": self.stream_id, "is_final": self.is_final},
        )
        if fixed is not None:
            object.__setattr__(self, "metadata", fixed)

    @property
    def message(self) -> str:
        return self.chunk

    def __str__(self) -> str:
        who = self.stream_id if self.stream_id is not None else self.node_id
        return f"[LLM {who}] {self.scope}: {self.chunk}"


def _enable_stamping(*classes: type[Any]) -> None:
    for cls in classes:
        slots = {field.name: getattr(cls, field.name) for field in attrs.fields(cls)}
        cls._copied_slots = tuple(
            (slot.__get__, slot.__set__)
            for name, slot in slots.items()
            if name not in ("session_id", "seq")
        )
        cls._set_session_id = slots["session_id"].__set__
        cls._set_seq = slots["seq"].__set__


_enable_stamping(NodeEvent, DiagnosticEvent, LLMEvent)
NodeEvent._slot_setters = tuple(getattr(NodeEvent, f.name).__set__ for f in attrs.fields(NodeEvent))
NodeEvent._compact_setters = tuple(
    NodeEvent.__dict__[name].__set__ for name in ("node_id", "step", "metadata", "session_id")
)

AnyEvent: TypeAlias = NodeEvent | DiagnosticEvent | LLMEvent
"""The closed union of event variants, for exhaustive ``match`` with ``assert_never``."""


# -- JSON -----------------------------------------------------------------------------------------


def _bad(what: str) -> ValueError:
    return ValueError(f"not a treadle event: {what}")


def _get(data: Mapping[str, Any], key: str, kinds: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise _bad(f"the key {key!r} is missing")
    value = data[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _tuple(kinds)):
        raise _bad(f"{key!r} is {value!r}")
    return value


def _tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def event_from_json(data: str | bytes | Mapping[str, Any]) -> AnyEvent:
    """Read an event back from its JSON form (a string, bytes, or the decoded object).

    Raises:
        ValueError: ``data`` is not valid JSON or not the shape :meth:`Event.to_json_value`
            produces; the message names the offending key.
    """
    obj = json.loads(data) if isinstance(data, str | bytes) else data
    if not isinstance(obj, Mapping):
        raise _bad(f"expected a JSON object, got {type(obj).__name__}")
    kind = _get(obj, "type", str)
    scope = _get(obj, "scope", str)
    message = _get(obj, "message", str)
    timestamp = float(_get(obj, "timestamp", (int, float)))
    if not math.isfinite(timestamp):
        raise _bad(f"'timestamp' is {timestamp!r}")
    session_id = _get(obj, "session_id", (str, type(None)))
    seq = _get(obj, "seq", (int, type(None)))
    metadata = _metadata(_get(obj, "metadata", Mapping))
    if kind == "node":
        return NodeEvent(
            node_id=_get(metadata, "node_id", str),
            step=_get(metadata, "step", int),
            scope=scope,
            message=message,
            metadata=metadata,
            timestamp=timestamp,
            session_id=session_id,
            seq=seq,
        )
    if kind == "diagnostic":
        return DiagnosticEvent(scope, message, metadata, timestamp, session_id, seq)
    if kind == "llm":
        return LLMEvent(
            session_id=session_id,
            node_id=_get(metadata, "node_id", str),
            stream_id=_get(metadata, "stream_id", (str, type(None))),
            chunk=message,
            is_final=_get(metadata, "is_final", bool),
            scope=scope,
            metadata=metadata,
            timestamp=timestamp,
            seq=seq,
        )
    raise _bad(f"unknown type {kind!r} (expected 'node', 'diagnostic' or 'llm')")


# -- sentinels -------------------------------------------------------------------------------------


def is_sentinel(event: Event) -> bool:
    """Whether ``event`` ends a stream or an invocation (such events are never dropped)."""
    return type(event) is DiagnosticEvent and event.scope in _SENTINEL_SCOPES


def _end(
    scope: str, session_id: str, step: int, error: str | None, timestamp: float | None
) -> DiagnosticEvent:
    if error is None:
        message = f"session={session_id} status=completed step={step}"
        metadata = {"status": "completed", "step": step}
    else:
        message = f"session={session_id} status=error step={step} error={error}"
        metadata = {"status": "error", "step": step, "error": error}
    when = time.time() if timestamp is None else timestamp
    return DiagnosticEvent(scope, message, FrozenDict(metadata), when, session_id)


def stream_end(
    session_id: str, step: int, *, error: str | None = None, timestamp: float | None = None
) -> DiagnosticEvent:
    """The sentinel that ends a run's stream (``metadata`` has ``status``, ``step``, ``error``).

    ``timestamp`` defaults to now; pass the run clock's reading for reproducible events.
    """
    return _end(STREAM_END_SCOPE, session_id, step, error, timestamp)


def invocation_end(
    session_id: str, step: int, *, error: str | None = None, timestamp: float | None = None
) -> DiagnosticEvent:
    """The sentinel that ends one ``invoke_next`` of an iterative session."""
    return _end(INVOCATION_END_SCOPE, session_id, step, error, timestamp)


# -- canonical order -------------------------------------------------------------------------------

_LAST: Final = math.inf


def canonical_order(events: Iterable[Event]) -> list[Event]:
    """Put events into an order that does not depend on how actors interleaved.

    Events are grouped by session (``None`` first, then session ids in sorted order) and, within a
    session, sorted by the key ``(step, frontier_index, node_seq, position)``:

    * ``step`` is the node event's ``step``, else ``metadata["step"]``; an event without one
      (a run-level diagnostic) takes the step of the event before it in the same session (0 at the
      start), so it stays after the step it followed.
    * ``frontier_index`` and ``node_seq`` come from metadata (the runtime sets both on node, LLM and
      node-diagnostic events); a missing one sorts last, so run-level events and sentinels of a step
      come after that step's node events.
    * ``position`` is the index in ``events``, which keeps the sort stable.

    Per-node emission order is preserved, so two runs of one graph give equal lists whatever the
    interleaving (compare with timestamps normalised away).
    """
    keyed: list[tuple[tuple[int, str], float, float, float, int, Event]] = []
    last_step: dict[str | None, float] = {}
    for position, event in enumerate(events):
        session = event.session_id
        md = event.metadata
        step: object = event.step if type(event) is NodeEvent else md.get("step")
        if isinstance(step, int | float) and not isinstance(step, bool):
            last_step[session] = step
            step_key = float(step)
        else:
            step_key = last_step.get(session, 0.0)
        keyed.append(
            (
                (0, "") if session is None else (1, session),
                step_key,
                _number(md.get("frontier_index")),
                _number(md.get("node_seq")),
                position,
                event,
            )
        )
    keyed.sort(key=lambda row: row[:5])
    return [row[5] for row in keyed]


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return _LAST
