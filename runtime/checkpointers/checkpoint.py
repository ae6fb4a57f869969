"""Checkpoints: the stored record of a step, the :class:`Checkpointer` protocol every backend
implements, choosing a backend from a URL or the environment, and the in-memory backend.
"""

from __future__ import annotations

import datetime
import enum
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeAlias, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import attrs
import trio

from ..errors import CheckpointNotFound, ConcurrencyConflict
from ..graph.persistent import FrozenMap
from ..graph.state import VersionedState

# -- the record ------------------------------------------------------------------------------------


def _names(value: Iterable[str]) -> tuple[str, ...]:
    # On the hot path (one record per step): the runtime already passes tuples of str.
    if type(value) is tuple:
        return value
    return tuple(str(v) for v in value)


def _versions_seen(value: Mapping[str, Iterable[int]]) -> dict[str, tuple[int, int]]:
    result: dict[str, tuple[int, int]] = {}
    for node, pair in value.items():
        messages, extra = pair
        result[str(node)] = (int(messages), int(extra))
    return result


def frozen_versions_seen(value: Mapping[str, Iterable[int]]) -> FrozenMap:
    """``value`` as a session keeps its ``versions_seen``: a read-only :class:`FrozenMap` of
    ``(int, int)`` (one already is is returned as it is). A malformed pair raises ValueError or
    TypeError."""
    if type(value) is FrozenMap:
        return value
    return FrozenMap(_versions_seen(value))


def _versions_seen_field(value: Mapping[str, Iterable[int]]) -> Mapping[str, tuple[int, int]]:
    # One record per step: the scheduler hands over its read-only map of (int, int) pairs, and the
    # codec a fresh dict of them, taken as they are; documents read back from storage go through
    # the strict conversion in from_json_value.
    if type(value) is FrozenMap or type(value) is dict:
        return value
    return _versions_seen(value)


def _join_state(value: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    if not value:
        return {}
    return {str(key): _names(sources) for key, sources in value.items()}


def _expect(obj: Mapping[str, Any], name: str, kind: type) -> Any:
    value = obj.get(name)
    if type(value) is not kind:  # exact: a bool is not a step number
        raise ValueError(
            f"checkpoint[{name!r}] must be of JSON type {kind.__name__}, got {value!r}"
        )
    return value


def _optional_str(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is not None and type(value) is not str:
        raise ValueError(f"checkpoint[{name!r}] must be a JSON string or null, got {value!r}")
    return value


@attrs.frozen
class Checkpoint:
    """Everything needed to resume a session after a step, plus what that step did.

    Attributes:
        session_id: The session.
        step: The step this checkpoint ends (0 is the state a session started from).
        state: The session's state after the step's barrier.
        frontier: The nodes the next step considers, in frontier order.
        versions_seen: For each node that ran, the ``(messages_version, extra_version)`` it last ran
            on; version gating skips a node whose pair is unchanged.
        join_state: For each join key, the sources seen since the join's target last fired.
        concurrency_limit: How many nodes of a step execute at once.
        created_at: Unix time in milliseconds, from the runner's clock.
        ran_nodes: The nodes that executed in this step, in frontier order.
        skipped_nodes: The frontier nodes that did not execute (START/END or version-gated).
        updated_channels: The channels whose version this step raised.
        graph_hash: The definition hash of the graph that wrote this step (``None`` when unknown,
            as in checkpoints from before treadle recorded it); resuming with another graph is
            refused unless asked for.
        invocation: For an iterative session, how many inputs ``invoke_next`` has applied so far
            (0 before the first), which also marks the session as iterative; ``None`` for a plain
            session. A resumed session reads it to know what it is and where its driver stands.
    """

    session_id: str
    step: int
    state: VersionedState
    frontier: tuple[str, ...] = attrs.field(converter=_names)
    versions_seen: Mapping[str, tuple[int, int]] = attrs.field(converter=_versions_seen_field)
    join_state: Mapping[str, tuple[str, ...]] = attrs.field(converter=_join_state)
    concurrency_limit: int
    created_at: int
    ran_nodes: tuple[str, ...] = attrs.field(default=(), converter=_names)
    skipped_nodes: tuple[str, ...] = attrs.field(default=(), converter=_names)
    updated_channels: tuple[str, ...] = attrs.field(default=(), converter=_names)
    graph_hash: str | None = None
    invocation: int | None = None

    def info(self) -> StepInfo:
        """This checkpoint's step-history entry."""
        return StepInfo.of(self)

    def to_json_value(self) -> dict[str, Any]:
        """A plain JSON document (fresh dicts and lists) holding the whole checkpoint."""
        return {
            "session_id": self.session_id,
            "step": self.step,
            "state": self.state.to_json_value(),
            "frontier": list(self.frontier),
            "versions_seen": {node: list(pair) for node, pair in self.versions_seen.items()},
            "join_state": {key: list(sources) for key, sources in self.join_state.items()},
            "concurrency_limit": self.concurrency_limit,
            "created_at": self.created_at,
            "ran_nodes": list(self.ran_nodes),
            "skipped_nodes": list(self.skipped_nodes),
            "updated_channels": list(self.updated_channels),
            "graph_hash": self.graph_hash,
            **({} if self.invocation is None else {"invocation": self.invocation}),
        }

    @classmethod
    def from_json_value(cls, value: object) -> Checkpoint:
        """Read a document written by :meth:`to_json_value`.

        Raises:
            ValueError: The document does not have that shape.
        """
        if not isinstance(value, Mapping):
            raise ValueError(f"a checkpoint must be a JSON object, got {type(value).__name__}")
        return cls(
            session_id=_expect(value, "session_id", str),
            step=_expect(value, "step", int),
            state=VersionedState.from_json_value(value.get("state")),
            frontier=_expect(value, "frontier", list),
            versions_seen=_versions_seen(_expect(value, "versions_seen", dict)),
            join_state=_expect(value, "join_state", dict),
            concurrency_limit=_expect(value, "concurrency_limit", int),
            created_at=_expect(value, "created_at", int),
            ran_nodes=value.get("ran_nodes", []),
            skipped_nodes=value.get("skipped_nodes", []),
            updated_channels=value.get("updated_channels", []),
            graph_hash=_optional_str(value, "graph_hash"),
            invocation=parse_invocation(value.get("invocation")),
        )


def parse_invocation(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ValueError(f"checkpoint['invocation'] must be a count of invocations, got {value!r}")
    return value


@attrs.frozen
class StepInfo:
    """One entry of a session's stored history: which step, when, and what it did."""

    session_id: str
    step: int
    created_at: int
    ran_nodes: tuple[str, ...] = attrs.field(default=(), converter=_names)
    skipped_nodes: tuple[str, ...] = attrs.field(default=(), converter=_names)
    updated_channels: tuple[str, ...] = attrs.field(default=(), converter=_names)

    @classmethod
    def of(cls, record: Checkpoint | _StepRecord) -> StepInfo:
        """The history entry of a checkpoint, or of a stored step row that has the same fields."""
        return cls(
            session_id=record.session_id,
            step=record.step,
            created_at=record.created_at,
            ran_nodes=record.ran_nodes,
            skipped_nodes=record.skipped_nodes,
            updated_channels=record.updated_channels,
        )


class _StepRecord(Protocol):
    """What :meth:`StepInfo.of` reads: a checkpoint or a stored step row."""

    @property
    def session_id(self) -> str: ...
    @property
    def step(self) -> int: ...
    @property
    def created_at(self) -> int: ...
    @property
    def ran_nodes(self) -> tuple[str, ...]: ...
    @property
    def skipped_nodes(self) -> tuple[str, ...]: ...
    @property
    def updated_channels(self) -> tuple[str, ...]: ...


# -- the protocol ----------------------------------------------------------------------------------


class _Unchecked(enum.Enum):
    UNCHECKED = "unchecked"


UNCHECKED: Final = _Unchecked.UNCHECKED
"""An ``expected`` step meaning "do not check the stored latest step" (a plain :meth:`save`)."""

Expected: TypeAlias = int | Literal[_Unchecked.UNCHECKED] | None
"""The latest stored step a writer builds on: a step, ``None`` (no session yet) or
:data:`UNCHECKED`."""


@runtime_checkable
class Checkpointer(Protocol):
    """Storage for checkpoints. Every method is async; the durable backends run their blocking
    driver in one ``trio.to_thread`` worker thread per connection, behind that connection's
    ``CapacityLimiter(1)`` (:class:`~treadle.runtime.checkpointers.connection.ConnectionThread`), so
    the trio thread never blocks on I/O.

    The "latest" checkpoint of a session is monotonic: saving a step lower than the latest stores it
    in the history but never moves the latest back. The runner talks to a checkpointer only through
    :class:`~treadle.runtime.checkpointers.actor.CheckpointerActor`, which serialises every call.
    """

    backend: str
    """``"memory"``, ``"sqlite"``, ``"postgres"`` or ``"json"``."""

    async def open(self, nursery: trio.Nursery) -> None:
        """Connect (and migrate); raises ``CheckpointBackendError`` naming the URL or path.

        Background work the store needs while open (the durable backends' connection thread) runs
        in ``nursery``; :meth:`aclose` ends it.
        """

    async def aclose(self) -> None:
        """Release the connection and end the store's background work; idempotent."""

    async def save(self, cp: Checkpoint) -> None:
        """Store ``cp`` (replacing a stored checkpoint of the same session and step)."""

    async def save_with_concurrency_check(self, cp: Checkpoint, expected_step: int | None) -> None:
        """Store ``cp`` only if the session's latest step is ``expected_step`` (``None``: no session
        yet), atomically; else raise ``ConcurrencyConflict``."""

    async def load_latest(self, session_id: str) -> Checkpoint | None:
        """The latest checkpoint of a session, or ``None``."""

    async def load(self, session_id: str, step: int) -> Checkpoint:
        """The checkpoint of a session at ``step``; raises ``CheckpointNotFound``."""

    async def list_sessions(self) -> list[str]:
        """Every stored session id, sorted."""

    async def list_steps(self, session_id: str) -> list[StepInfo]:
        """The stored steps of a session, oldest first (empty if none)."""

    async def delete_session(self, session_id: str) -> bool:
        """Remove a session and its history; whether it existed."""

    async def prune(
        self,
        *,
        older_than: float | datetime.timedelta | None = None,
        keep_last: int | None = None,
        session_id: str | None = None,
        now_ms: int | None = None,
    ) -> int:
        """Remove the steps older than ``older_than`` (seconds before ``now_ms``, default the wall
        clock) and outside each session's last ``keep_last``; returns how many. Never removes a
        session's latest step."""

    async def acquire_lease(self, session_id: str, owner: str) -> None:
        """Claim the right to run a session; raises ``SessionLeased`` if another live owner holds
        it. A no-op for backends that cannot be shared between processes."""

    async def release_lease(self, session_id: str, owner: str) -> None:
        """Give up a lease taken by :meth:`acquire_lease`; a no-op if it is not held."""


def prune_cutoff_ms(
    older_than: float | datetime.timedelta | None,
    keep_last: int | None,
    now_ms: int | None,
) -> int | None:
    """Validate :meth:`Checkpointer.prune` arguments; the ``created_at`` cut-off in unix ms, if any.

    Raises:
        ValueError: Neither criterion is given, or one is negative.
    """
    if older_than is None and keep_last is None:
        raise ValueError("prune needs older_than=… or keep_last=… (or both)")
    if keep_last is not None and (isinstance(keep_last, bool) or keep_last < 0):
        raise ValueError(f"keep_last must be an int >= 0, not {keep_last!r}")
    if older_than is None:
        return None
    seconds = (
        older_than.total_seconds() if isinstance(older_than, datetime.timedelta) else older_than
    )
    if seconds < 0:
        raise ValueError(f"older_than must be >= 0 seconds, not {seconds!r}")
    now = (
        now_ms
        if now_ms is not None
        else int(datetime.datetime.now(datetime.UTC).timestamp() * 1000)
    )
    return now - int(seconds * 1000)


# -- in memory -------------------------------------------------------------------------------------


class InMemoryCheckpointer:
    """Keeps the latest checkpoint of each session in this process; nothing survives it.

    There is no history: :meth:`list_steps` and :meth:`load` know the latest step only.
    """

    backend = "memory"
    # Nothing here outlives the process, so waiting for each write buys no durability: the runner
    # pipelines writes to it under every durability mode (reads still queue behind them).
    volatile = True

    def __init__(self) -> None:
        self._latest: dict[str, Checkpoint] = {}

    def __repr__(self) -> str:
        return "InMemoryCheckpointer()"

    async def open(self, nursery: trio.Nursery) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    async def save(self, cp: Checkpoint) -> None:
        # No schedule point: this is the hot path of every step, and the checkpointer actor's
        # asker has already waited once to get here.
        current = self._latest.get(cp.session_id)
        if current is None or cp.step >= current.step:
            self._latest[cp.session_id] = cp

    async def save_with_concurrency_check(self, cp: Checkpoint, expected_step: int | None) -> None:
        # No schedule point, as in save(): the runner writes every step this way.
        current = self._latest.get(cp.session_id)
        actual = current.step if current is not None else None
        if actual != expected_step:
            raise ConcurrencyConflict(cp.session_id, expected_step, actual)
        if current is None or cp.step >= current.step:
            self._latest[cp.session_id] = cp

    async def load_latest(self, session_id: str) -> Checkpoint | None:
        await trio.lowlevel.checkpoint()
        return self._latest.get(session_id)

    async def load(self, session_id: str, step: int) -> Checkpoint:
        await trio.lowlevel.checkpoint()
        current = self._latest.get(session_id)
        if current is None or current.step != step:
            raise CheckpointNotFound(session_id, step)
        return current

    async def list_sessions(self) -> list[str]:
        await trio.lowlevel.checkpoint()
        return sorted(self._latest)

    async def list_steps(self, session_id: str) -> list[StepInfo]:
        await trio.lowlevel.checkpoint()
        current = self._latest.get(session_id)
        return [] if current is None else [current.info()]

    async def delete_session(self, session_id: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self._latest.pop(session_id, None) is not None

    async def prune(
        self,
        *,
        older_than: float | datetime.timedelta | None = None,
        keep_last: int | None = None,
        session_id: str | None = None,
        now_ms: int | None = None,
    ) -> int:
        prune_cutoff_ms(older_than, keep_last, now_ms)
        await trio.lowlevel.checkpoint()
        return 0  # only the latest step is kept, and it is never pruned

    async def acquire_lease(self, session_id: str, owner: str) -> None:
        await trio.lowlevel.checkpoint()

    async def release_lease(self, session_id: str, owner: str) -> None:
        await trio.lowlevel.checkpoint()


# -- choosing a backend ----------------------------------------------------------------------------


class CheckpointerType(enum.Enum):
    """A backend chosen by kind; its location comes from the environment (see
    :func:`resolve_checkpointer`)."""

    IN_MEMORY = "memory"
    SQLITE = "sqlite"
    POSTGRES = "postgres"
    JSON = "json"


DEFAULT_SQLITE_URL = "sqlite:///treadle.db"
DEFAULT_POSTGRES_URL = "postgresql://localhost/treadle"
DEFAULT_JSON_URL = "json:///treadle_checkpoints"
_ACCEPTED = "memory://, sqlite:///relative.db, sqlite:////absolute.db, postgresql://…, json:///dir"

_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for error messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _KEYWORD_PASSWORD.sub(r"\1***", url)
    if not parts.scheme or (parts.netloc == "" and "=" in url):
        # A libpq keyword/value string such as "host=db password=secret".
        return _KEYWORD_PASSWORD.sub(r"\1***", url)
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hostinfo}"
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() == "password" for k, _ in pairs):
            query = urlencode(
                [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*"
            )
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # nothing to hide: keep the text exactly as given
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def read_dotenv(path: Path) -> dict[str, str]:
    """The ``KEY=VALUE`` pairs of a ``.env`` file (``#`` comments, ``export`` and quotes allowed).

    A missing or unreadable file gives ``{}``: ``.env`` is a convenience, never required.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def _environment(environ: Mapping[str, str] | None, cwd: Path) -> dict[str, str]:
    # The real environment wins over .env, as with every dotenv tool.
    merged = read_dotenv(cwd / ".env")
    merged.update(os.environ if environ is None else environ)
    return merged


def default_url(
    kind: CheckpointerType, *, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> str:
    """The URL a :class:`CheckpointerType` resolves to in this environment.

    SQLite: ``TREADLE_SQLITE_URL``, then ``SQLITE_DB_NAME`` (a file name), then
    ``sqlite:///treadle.db``. PostgreSQL: ``TREADLE_POSTGRES_URL``, then ``DATABASE_URL``, then
    ``postgresql://localhost/treadle``. JSON: ``TREADLE_JSON_URL``, then ``json:///treadle_checkpoints``.
    A ``.env`` file in ``cwd`` is read too; the real environment wins.
    """
    env = _environment(environ, cwd if cwd is not None else Path.cwd())
    if kind is CheckpointerType.IN_MEMORY:
        return "memory://"
    if kind is CheckpointerType.SQLITE:
        if env.get("TREADLE_SQLITE_URL"):
            return env["TREADLE_SQLITE_URL"]
        if env.get("SQLITE_DB_NAME"):
            return "sqlite:///" + env["SQLITE_DB_NAME"]
        return DEFAULT_SQLITE_URL
    if kind is CheckpointerType.POSTGRES:
        return env.get("TREADLE_POSTGRES_URL") or env.get("DATABASE_URL") or DEFAULT_POSTGRES_URL
    return env.get("TREADLE_JSON_URL") or DEFAULT_JSON_URL


def _local_path(url: str, scheme: str, cwd: Path) -> Path:
    """The path of ``sqlite:///rel``, ``sqlite:////abs`` (and ``sqlite://rel``) URLs."""
    rest = url[len(scheme) + 3 :]
    if "?" in rest or "#" in rest:
        raise ValueError(
            f"{scheme} URL {url!r} has a query or fragment, which is not supported: "
            f"use {scheme}:///path"
        )
    if rest.startswith("/"):
        rest = rest[1:]  # sqlite:///rel -> "rel", sqlite:////abs -> "/abs"
    path_text = unquote(rest)
    if not path_text:
        raise ValueError(f"{scheme} URL {url!r} names no path: use {scheme}:///path")
    if path_text == ":memory:":
        return Path(path_text)
    path = Path(path_text).expanduser()
    return path if path.is_absolute() else cwd / path


def resolve_checkpointer(
    spec: CheckpointerType | str | Checkpointer | None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Checkpointer:
    """Turn the runner's ``checkpointer=`` argument into a (not yet opened) backend.

    Args:
        spec: ``None`` (in memory), a :class:`CheckpointerType` (located through the environment,
            see :func:`default_url`), a URL (``memory://``, ``sqlite:///relative.db``,
            ``sqlite:////absolute.db``, ``postgresql://…`` or ``postgres://…``, ``json:///dir``), or
            a :class:`Checkpointer`, returned as is.
        environ: The environment to read (default ``os.environ``).
        cwd: Where relative paths and ``.env`` are looked up (default the working directory).

    Raises:
        ValueError: The URL's scheme is unknown (the message names it and the accepted ones).
        TypeError: ``spec`` is none of the above.
    """
    if spec is None:
        return InMemoryCheckpointer()
    base = cwd if cwd is not None else Path.cwd()
    if isinstance(spec, CheckpointerType):
        url = default_url(spec, environ=environ, cwd=base)
    elif isinstance(spec, str):
        url = spec.strip()
    elif isinstance(spec, Checkpointer):
        return spec
    else:
        raise TypeError(
            f"checkpointer must be a CheckpointerType, a URL or a Checkpointer, not "
            f"{type(spec).__name__}"
        )
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"checkpointer {mask_url(url)!r} is not a URL: use one of {_ACCEPTED}")
    if scheme == "memory":
        return InMemoryCheckpointer()
    if scheme == "sqlite":
        from .sqlite import SQLiteCheckpointer

        return SQLiteCheckpointer(_local_path(url, scheme, base))
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresCheckpointer

        return PostgresCheckpointer(url)
    if scheme == "json":
        from .json_files import JSONCheckpointer

        return JSONCheckpointer(_local_path(url, scheme, base))
    raise ValueError(
        f"unknown checkpointer URL scheme {scheme!r} in {mask_url(url)!r}: use one of {_ACCEPTED}"
    )
