"""The JSON-files checkpointer: a directory of human-readable step files, written atomically; a
corrupt file is logged, listed and skipped, never fatal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import attrs
import trio

from ..errors import CheckpointBackendError, CheckpointerError
from ..graph.state import Message
from .base import ThreadedStore
from .checkpoint import Checkpoint, StepInfo
from .codec import (
    BrokenHistory,
    Head,
    StepCodec,
    StepMeta,
    StepRow,
    StepTx,
    load_step,
    prune_session,
)
from .connection import ConnectionThread

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: one process per directory there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("treadle.checkpointer.json")

T = TypeVar("T")

FILE_FORMAT = "treadle.checkpoint/1"
_SUFFIX = ".json"
_STEP_DIGITS = 12
_HEADS_REMEMBERED = 1024


@attrs.frozen
class CorruptFile:
    """A checkpoint file that could not be read; it is skipped, never deleted.

    Attributes:
        path: The file.
        reason: What is wrong with it (empty, truncated, not a checkpoint…).
    """

    path: Path
    reason: str


class _Unreadable(Exception):
    """A step file is not a checkpoint file; carries the reason."""


_MAX_NAME = 240
_SET_ASIDE_INDEX = ".treadle-set-aside.jsonl"
"""The store's index of the step files set aside because they could not be rebuilt."""


def _session_dir_name(session_id: str) -> str:
    # Percent-encoding keeps any session id one safe path component; a leading dot is encoded too,
    # so ".", ".." and hidden names cannot occur.
    name = quote(session_id, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name.encode()) > _MAX_NAME:
        raise CheckpointerError(
            f"session id {session_id[:40]!r}… is too long for the JSON store (at most "
            f"{_MAX_NAME} bytes once percent-encoded); use a shorter id"
        )
    return name


def _step_file_name(step: int) -> str:
    return f"{step:0{_STEP_DIGITS}d}{_SUFFIX}"


def _step_of(name: str) -> int | None:
    stem, suffix = name[: -len(_SUFFIX)], name[-len(_SUFFIX) :]
    if suffix != _SUFFIX or not stem.isdigit():
        return None
    return int(stem)


def _names(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Unreadable(f"{what} is not a list of names")
    return tuple(value)


def _int(doc: Mapping[str, Any], key: str, *, optional: bool = False) -> Any:
    value = doc.get(key)
    if value is None and optional:
        return None
    if type(value) is not int:
        raise _Unreadable(f"{key!r} is {value!r}, not an integer")
    return value


class _FilesTx:
    """:class:`~.codec.StepTx` over one session directory per session (messages are inline)."""

    def __init__(self, store: JSONCheckpointer) -> None:
        self.store = store
        self.pending_heads: dict[str, Head] = {}

    def head(self, session_id: str) -> Head | None:
        steps = self.store._step_numbers(session_id)
        if not steps:
            return None
        latest = steps[-1]
        path = self.store._step_path(session_id, latest)
        try:
            stat = path.stat()
        except OSError:
            return None
        # A head written by this process keeps its token while the file is untouched; any other
        # file gets a token derived from its stat, so the codec never builds on what it did not see.
        mark = (latest, stat.st_mtime_ns, stat.st_size)
        known = self.store._heads.get(session_id)
        if known is not None and known[1] == mark:
            return known[0]
        return Head(latest, f"file:{stat.st_mtime_ns}:{stat.st_size}", 0)

    def rows(self, session_id: str, lo: int, hi: int) -> dict[int, StepRow]:
        found: dict[int, StepRow] = {}
        for step in self.store._step_numbers(session_id):
            if lo <= step <= hi:
                row = self.store._read_row(session_id, step)
                if row is not None:
                    found[step] = row
        return found

    def metas(self, session_id: str) -> list[StepMeta]:
        return [
            StepMeta(row.step, row.created_at, row.base_step, row.messages_start)
            for row in self.rows(session_id, 0, 2**63).values()
        ]

    def dependents(self, session_id: str, step: int) -> list[StepRow]:
        return [
            row for row in self.rows(session_id, step + 1, 2**63).values() if row.base_step == step
        ]

    def put_rows(self, rows: Sequence[StepRow]) -> None:
        for row in rows:
            self.store._write_row(row)

    def append_messages(self, session_id: str, start: int, messages: Sequence[Message]) -> None:
        raise AssertionError("the JSON store keeps messages inline")

    def messages(self, session_id: str, start: int, count: int) -> list[dict[str, Any]]:
        raise AssertionError("the JSON store keeps messages inline")

    def set_head(self, session_id: str, head: Head, *, updated_at: int) -> None:
        # The head is the newest file itself; remember its token once that file is written.
        self.pending_heads[session_id] = head

    def commit(self) -> None:
        """Record the heads set in this "transaction", now that their files are on disk."""
        for session_id, head in self.pending_heads.items():
            stat = self.store._step_path(session_id, head.latest_step).stat()
            self.store._remember_head(
                session_id, head, (head.latest_step, stat.st_mtime_ns, stat.st_size)
            )
        self.pending_heads.clear()

    def delete_steps(self, session_id: str, steps: Sequence[int]) -> None:
        for step in steps:
            try:
                self.store._step_path(session_id, step).unlink()
            except FileNotFoundError:
                pass

    def trim_messages(self, session_id: str, keep_from: int) -> None:
        raise AssertionError("the JSON store keeps messages inline")


_INDENTED_BODY = 1 << 20
"""The longest body (in characters of compact JSON) that a file shows indented."""


class JSONCheckpointer(ThreadedStore):
    """Checkpoints as JSON files you can read: ``<directory>/<session>/<step>.json``.

    Each file is one step: a full snapshot, or a delta naming the step it builds on (the same
    encoding as the database backends, with messages inline), so the directory grows with what a
    run writes. Files are written to a temporary name, fsynced, then renamed over the final name, so
    a crash never leaves half a file. A file that is empty, truncated or not a checkpoint is logged,
    listed by :meth:`corrupt_files` and skipped, never fatal: :meth:`load_latest` returns the newest
    step that can still be rebuilt and sets aside the newer files (renamed to a hidden
    ``.<step>.json.set-aside-…`` beside them, never deleted, and listed in the store's index file
    ``.treadle-set-aside.jsonl``), so the session goes on from that step and its next save is a full
    snapshot. Opening a store reads that index only, never the step files. Several processes may
    share a directory: a session's directory is locked while a step is written, so
    :meth:`save_with_concurrency_check` lets one writer win.

    Args:
        directory: Where the session directories live (created by :meth:`open`).
        max_chain: The most deltas stored between two snapshots of a session.
        indent: JSON indentation of the files (``None`` for compact files). A body over 1 MiB
            (a snapshot of a big state) is written on one line whatever the indentation.
    """

    backend = "json"

    def __init__(
        self, directory: str | os.PathLike[str], *, max_chain: int = 32, indent: int | None = 2
    ) -> None:
        self.directory = Path(directory)
        self.indent = indent
        self._codec = StepCodec(inline_messages=True, max_chain=max_chain)
        self._thread: ConnectionThread[None] | None = None
        # Written by worker threads, read by corrupt_files() on the Trio thread.
        self._corrupt: dict[Path, CorruptFile] = {}
        self._corrupt_lock = threading.Lock()
        self._heads: OrderedDict[str, tuple[Head, tuple[int, int, int]]] = OrderedDict()

    def __repr__(self) -> str:
        return f"JSONCheckpointer({str(self.directory)!r})"

    # -- files -------------------------------------------------------------------------------------

    def _session_path(self, session_id: str) -> Path:
        return self.directory / _session_dir_name(session_id)

    def _step_path(self, session_id: str, step: int) -> Path:
        return self._session_path(session_id) / _step_file_name(step)

    def _step_numbers(self, session_id: str) -> list[int]:
        try:
            names = os.listdir(self._session_path(session_id))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(step for name in names if (step := _step_of(name)) is not None)

    def _remember_head(self, session_id: str, head: Head, mark: tuple[int, int, int]) -> None:
        self._heads[session_id] = (head, mark)
        self._heads.move_to_end(session_id)
        while len(self._heads) > _HEADS_REMEMBERED:
            self._heads.popitem(last=False)

    def _report(self, path: Path, reason: str) -> None:
        with self._corrupt_lock:
            known = self._corrupt.get(path)
            self._corrupt[path] = CorruptFile(path, reason)
        if known is None or known.reason != reason:
            log.warning("skipping corrupt checkpoint file %s: %s", path, reason)

    def _read_row(self, session_id: str, step: int) -> StepRow | None:
        """The row stored in a step file, or ``None`` (and reported) if it cannot be read."""
        path = self._step_path(session_id, step)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._report(path, f"cannot be read ({exc.strerror or exc})")
            return None
        try:
            row = self._parse(data, session_id, step)
        except _Unreadable as exc:
            self._report(path, str(exc))
            return None
        return row

    def _parse(self, data: bytes, session_id: str, step: int) -> StepRow:
        if not data.strip():
            raise _Unreadable("the file is empty")
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Unreadable(f"not valid JSON (truncated or garbage?): {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
            raise _Unreadable(f'not a treadle checkpoint (no "format": {FILE_FORMAT!r})')
        if doc.get("session_id") != session_id or doc.get("step") != step:
            raise _Unreadable("its session id or step does not match its location")
        kind = doc.get("kind")
        body = doc.get("body")
        if kind not in ("snapshot", "delta") or not isinstance(body, dict):
            raise _Unreadable("its kind or body is missing")
        return StepRow(
            session_id=session_id,
            step=step,
            created_at=_int(doc, "created_at"),
            kind=kind,
            base_step=_int(doc, "base_step", optional=True),
            root_step=_int(doc, "root_step"),
            messages_start=0,
            messages_len=_int(doc, "messages_len"),
            ran_nodes=_names(doc.get("ran_nodes"), "ran_nodes"),
            skipped_nodes=_names(doc.get("skipped_nodes"), "skipped_nodes"),
            updated_channels=_names(doc.get("updated_channels"), "updated_channels"),
            body=json.dumps(body),
        )

    def _file_text(self, row: StepRow) -> str:
        doc: dict[str, Any] = {
            "format": FILE_FORMAT,
            "session_id": row.session_id,
            "step": row.step,
            "created_at": row.created_at,
            "kind": row.kind,
            "base_step": row.base_step,
            "root_step": row.root_step,
            "messages_len": row.messages_len,
            "ran_nodes": list(row.ran_nodes),
            "skipped_nodes": list(row.skipped_nodes),
            "updated_channels": list(row.updated_channels),
        }
        if self.indent is not None and len(row.body) <= _INDENTED_BODY:
            doc["body"] = json.loads(row.body)
            return json.dumps(doc, ensure_ascii=False, indent=self.indent) + "\n"
        # The body as the codec wrote it, on one line: indenting it goes through the json
        # module's Python encoder, seconds for a body of 100,000 messages.
        head = json.dumps(doc, ensure_ascii=False, indent=self.indent)
        gap, end = ("\n" + " " * self.indent, "\n") if self.indent is not None else (" ", "")
        return f'{head[:-1].rstrip()},{gap}"body": {row.body}{end}}}\n'

    def _write_row(self, row: StepRow) -> None:
        text = self._file_text(row)
        folder = self._session_path(row.session_id)
        folder.mkdir(exist_ok=True)
        final = folder / _step_file_name(row.step)
        temp = folder / f".{final.name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(temp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(folder)
        self._forget_corrupt(final)

    # -- plumbing ----------------------------------------------------------------------------------

    def _not_open(self) -> CheckpointerError:
        return CheckpointerError(
            f"the JSON checkpointer for {self.directory} is not open: call open() first"
        )

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await super()._run(fn)
        except OSError as exc:
            raise CheckpointBackendError(
                "json", f"{self.directory}: {exc.strerror or exc} ({exc.filename or ''})"
            ) from exc

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self, nursery: trio.Nursery) -> None:
        """Create the directory if needed and read the index of the files set aside earlier.

        The file I/O runs in a worker thread of its own, in ``nursery``.
        """
        if self._thread is not None:
            return
        thread = ConnectionThread("treadle-json", self._open_sync, lambda _: None)
        await nursery.start(thread.run)
        self._thread = thread

    def _open_sync(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".treadle-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise CheckpointBackendError(
                "json",
                f"cannot use {self.directory} as a checkpoint directory: "
                f"{exc.strerror or exc}; choose a writable directory",
            ) from exc
        # No step file is read here, whatever the store's size: damaged files are found by the
        # reads that need them; the ones set aside by earlier runs are listed in the index.
        self._read_set_aside_index()

    def _read_set_aside_index(self) -> None:
        try:
            lines = (self.directory / _SET_ASIDE_INDEX).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                entry = json.loads(line)
                path = self.directory / entry["session"] / entry["file"]
                moved = path.parent / entry["moved_to"]
                reason = str(entry["reason"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line: the entry is lost, the file itself is not
            if moved.exists() and not path.exists():
                self._report(path, reason)

    async def aclose(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            await thread.aclose()
        else:
            await trio.lowlevel.checkpoint()
        self._codec.forget()
        self._heads.clear()

    def corrupt_files(self) -> list[CorruptFile]:
        """The files found unreadable so far (by reads, and set aside earlier as the index says),
        by path; a file's entry goes once its step is written again."""
        with self._corrupt_lock:
            found = list(self._corrupt.values())
        return sorted(found, key=lambda c: str(c.path))

    def _forget_corrupt(self, path: Path) -> None:
        with self._corrupt_lock:
            self._corrupt.pop(path, None)

    # -- writes ------------------------------------------------------------------------------------

    @contextmanager
    def _write_transaction(self, session_ids: Sequence[str]) -> Iterator[StepTx]:
        # Each session's directory is locked (flock) while its head is checked and its file
        # written, so that of two processes building on the same step exactly one succeeds.
        with contextlib.ExitStack() as locks:
            for session_id in sorted(set(session_ids)):
                locks.enter_context(_locked_dir(self._session_path(session_id)))
            tx = _FilesTx(self)
            yield tx
            tx.commit()

    def _forget(self, session_ids: Sequence[str]) -> None:
        super()._forget(session_ids)
        for session_id in session_ids:
            self._heads.pop(session_id, None)

    # -- reads -------------------------------------------------------------------------------------

    def _load_sync(self, session_id: str, step: int | None) -> Checkpoint | None:
        if step is not None:
            return self._load_step_sync(session_id, step)
        # The newest step that can be rebuilt: a corrupt newer file is reported and skipped.
        steps = self._step_numbers(session_id)
        for newest in reversed(steps):
            found = self._load_step_sync(session_id, newest)
            if found is not None:
                if newest != steps[-1]:
                    self._set_aside(session_id, [s for s in steps if s > newest])
                return found
        if steps:
            self._set_aside(session_id, steps)
        return None

    def _set_aside(self, session_id: str, steps: Sequence[int]) -> None:
        """Move the files of ``steps`` (newer than the session's newest intact step, so none can
        be rebuilt) out of the history, so the session goes on from its intact step: renamed to a
        hidden name beside them, never deleted, and listed in the store's index."""
        folder = self._session_path(session_id)
        with _locked_dir(folder):
            if self._step_numbers(session_id)[-1:] != [steps[-1]]:
                return  # another process wrote the session meanwhile: its history, not ours
            entries = []
            for step in steps:
                path = self._step_path(session_id, step)
                moved = folder / f".{path.name}.set-aside-{uuid.uuid4().hex[:8]}"
                try:
                    os.replace(path, moved)
                except FileNotFoundError:
                    continue
                with self._corrupt_lock:
                    known = self._corrupt.get(path)
                reason = known.reason if known is not None else "it builds on a damaged step"
                reason = f"{reason}; set aside as {moved.name}"
                self._report(path, reason)
                entries.append(
                    {
                        "session": folder.name,
                        "file": path.name,
                        "moved_to": moved.name,
                        "reason": reason,
                    }
                )
            _fsync_dir(folder)
        # Its next save is a full snapshot, so the history heals for every later reader.
        self._codec.forget(session_id)
        self._heads.pop(session_id, None)
        with open(self.directory / _SET_ASIDE_INDEX, "a", encoding="utf-8") as index:
            index.writelines(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)

    def _load_step_sync(self, session_id: str, step: int) -> Checkpoint | None:
        try:
            return load_step(self._codec, _FilesTx(self), session_id, step)
        except BrokenHistory as exc:
            self._report(self._step_path(session_id, step), str(exc))
            return None

    def _list_sessions_sync(self) -> list[str]:
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        return sorted(
            unquote(entry.name)
            for entry in entries
            if entry.is_dir()
            and not entry.name.startswith(".")
            and self._step_numbers(unquote(entry.name))
        )

    def _list_steps_sync(self, session_id: str) -> list[StepInfo]:
        rows = _FilesTx(self).rows(session_id, 0, 2**63)
        return [rows[step].info() for step in sorted(rows)]

    # -- maintenance -------------------------------------------------------------------------------

    def _delete_sync(self, session_id: str) -> bool:
        self._codec.forget(session_id)
        self._heads.pop(session_id, None)
        folder = self._session_path(session_id)
        if not folder.is_dir():
            return False
        existed = False
        for entry in os.scandir(folder):
            if _step_of(entry.name) is not None:
                existed = True
            if entry.is_file():
                os.unlink(entry.path)
                self._forget_corrupt(Path(entry.path))
        try:
            folder.rmdir()
        except OSError:
            pass  # something that is not ours lives there: leave it
        return existed

    def _prune_sync(self, session_id: str | None, cutoff: int | None, keep_last: int | None) -> int:
        sessions = [session_id] if session_id is not None else self._list_sessions_sync()
        tx = _FilesTx(self)
        return sum(
            prune_session(self._codec, tx, sid, cutoff_ms=cutoff, keep_last=keep_last)
            for sid in sessions
        )


@contextmanager
def _locked_dir(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (created if missing) for the block."""
    folder.mkdir(exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the directory holding it (where the platform allows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
