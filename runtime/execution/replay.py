"""Replay conformance (SPEC 9): does a run (resumed, replayed, re-scheduled) equal another one?"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..events.types import Event, canonical_order
from ..graph.frozen import thaw
from ..graph.state import VersionedState

__all__ = [
    "ReplayComparison",
    "ReplayRun",
    "compare_event_sequences_with",
    "compare_final_state",
    "compare_replay_runs",
    "normalize_event",
    "normalize_event_default",
    "normalize_state",
]

# Metadata keys that name an invocation or a moment rather than what happened.
_INVOCATION_SCOPED = ("invocation_id", "now_unix_ms")


def _events(value: Iterable[Event]) -> tuple[Event, ...]:
    return tuple(value)


@attrs.frozen
class ReplayRun:
    """What one run produced: its final state and the events it emitted (in any order)."""

    state: VersionedState
    events: tuple[Event, ...] = attrs.field(default=(), converter=_events)


@attrs.frozen
class ReplayComparison:
    """The result of comparing two runs; ``differences`` are readable lines, first one first."""

    differences: tuple[str, ...] = ()

    @property
    def matches(self) -> bool:
        return not self.differences

    def assert_matches(self, *, limit: int = 5) -> None:
        """Raise ``AssertionError`` showing the first ``limit`` differences, if there are any."""
        if self.differences:
            shown = list(self.differences[:limit])
            if len(self.differences) > limit:
                shown.append(f"... and {len(self.differences) - limit} more")
            raise AssertionError("the runs differ:\n" + "\n".join("  " + d for d in shown))


def normalize_event(event: Event) -> dict[str, Any]:
    """``event.to_json_value()`` as plain JSON without ``timestamp``."""
    value = event.to_json_value()
    del value["timestamp"]
    value["metadata"] = thaw(value["metadata"])
    return value


def normalize_event_default(event: Event) -> dict[str, Any]:
    """The default profile: :func:`normalize_event` without the bus ``seq`` and the
    invocation-scoped metadata (``invocation_id``, ``now_unix_ms``), which differ between a
    resumed run and an uninterrupted one though nothing else does."""
    value = normalize_event(event)
    del value["seq"]
    metadata = value["metadata"]
    for key in _INVOCATION_SCOPED:
        metadata.pop(key, None)
    return value


def normalize_state(state: VersionedState) -> dict[str, Any]:
    """A state as plain JSON: every channel with its version."""
    return state.to_json_value()


def compare_final_state(left: VersionedState, right: VersionedState) -> ReplayComparison:
    """Compare two states channel by channel; each difference names the first place it shows."""
    a, b = normalize_state(left), normalize_state(right)
    if _text(a) == _text(b):  # as text: 1, 1.0 and true are three different values
        return ReplayComparison()
    lines: list[str] = []
    for key in sorted(set(a) | set(b)):
        lines.extend(_differences(f"state.{key}", a.get(key), b.get(key)))
    return ReplayComparison(tuple(lines) or ("final state differs",))


def compare_event_sequences_with(
    left: Iterable[Event],
    right: Iterable[Event],
    normalize: Callable[[Event], Any],
    *,
    canonical: bool = True,
) -> ReplayComparison:
    """Compare two event sequences after mapping each event through ``normalize``.

    With ``canonical`` (the default) both sides are first put in :func:`canonical_order`, so the
    comparison does not depend on how actors interleaved. A length difference is reported first,
    then the first index at which the normalised events differ.
    """
    a_events, b_events = list(left), list(right)
    if canonical:
        a_events, b_events = canonical_order(a_events), canonical_order(b_events)
    a = [normalize(e) for e in a_events]
    b = [normalize(e) for e in b_events]
    if a == b:
        return ReplayComparison()
    lines: list[str] = []
    if len(a) != len(b):
        lines.append(f"event count differs: left={len(a)} right={len(b)}")
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            lines.append(f"event {index} differs: left={_text(x)} right={_text(y)}")
            break
    return ReplayComparison(tuple(lines))


def compare_replay_runs(
    left: ReplayRun,
    right: ReplayRun,
    *,
    normalize: Callable[[Event], Any] = normalize_event_default,
) -> ReplayComparison:
    """Compare two runs: final states first, then their events in canonical order under the
    default profile (no timestamps, ``seq`` or invocation-scoped keys) unless ``normalize`` says
    otherwise."""
    state = compare_final_state(left.state, right.state)
    events = compare_event_sequences_with(left.events, right.events, normalize)
    return ReplayComparison(state.differences + events.differences)


def _differences(path: str, a: object, b: object) -> list[str]:
    """Lines naming where two JSON values differ, the first difference of a list only."""
    if _text(a) == _text(b):
        return []
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        lines: list[str] = []
        for key in sorted(set(a) | set(b)):
            if key not in a:
                lines.append(f"{path}[{key!r}]: only right has it ({_text(b[key])})")
            elif key not in b:
                lines.append(f"{path}[{key!r}]: only left has it ({_text(a[key])})")
            else:
                lines.extend(_differences(f"{path}[{key!r}]", a[key], b[key]))
        return lines
    if isinstance(a, Sequence) and isinstance(b, Sequence) and not isinstance(a, str | bytes):
        for index, (x, y) in enumerate(zip(a, b, strict=False)):
            if _text(x) != _text(y):
                return [f"{path}[{index}]: left={_text(x)} right={_text(y)}"]
        return [f"{path}: left has {len(a)} items, right has {len(b)}"]
    return [f"{path}: left={_text(a)} right={_text(b)}"]


def _text(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)
