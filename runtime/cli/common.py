"""What several commands share: resolving a checkpointer, loading ``MODULE:ATTR``, printing state."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any


def checkpointer_arg(url: str | None) -> Any:
    """The ``--checkpointer`` value, or the embedded SQLite default."""
    from ..checkpoint import CheckpointerType

    return url if url is not None else CheckpointerType.SQLITE


def load_app(target: str, *, workflows: bool = False) -> Any:
    """The compiled ``App`` that ``MODULE:ATTR`` names (a ``GraphBuilder`` is compiled, a factory
    called); with ``workflows=True`` a ``Workflow`` is returned as it is."""
    from ..app import App
    from ..graph import GraphBuilder
    from ..workflow import Workflow

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{target!r} is not MODULE:ATTR (for example 'myflows:app')")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, GraphBuilder):
        obj = obj.compile()
    if callable(obj) and not isinstance(obj, App | Workflow):
        obj = obj()
    if workflows and isinstance(obj, Workflow):
        return obj
    if not isinstance(obj, App):
        raise ValueError(f"{target} is a {type(obj).__name__}, not a compiled App")
    return obj


def parse_input(raw: str | None) -> Any:
    """The ``--input`` value as a ``VersionedState``."""
    from ..state import Message, VersionedState

    if raw is None:
        return VersionedState()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return VersionedState.with_user_message(raw)
    if isinstance(value, str):
        return VersionedState.with_user_message(value)
    if not isinstance(value, dict):
        raise ValueError("--input must be a JSON object with 'messages' and/or 'extra', or text")
    messages = [Message(m["role"], m["content"]) for m in value.get("messages", [])]
    return VersionedState(messages=messages, extra=value.get("extra", {}))


def print_state(state: Any, step: int) -> None:
    """A final state as the commands print it."""
    print(f"\nfinal state after step {step}:")
    for message in state.messages:
        print(f"  [{message.role}] {message.content}")
    for key, value in sorted(state.extra.items()):
        print(f"  extra[{key!r}] = {json.dumps(value)}")
    for error in state.errors:
        print(f"  error: {error.error}")
