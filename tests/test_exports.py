"""The package root re-exports every public name SPEC.md lists, and nothing it imports is private."""

from __future__ import annotations

import inspect

import treadle

SPEC_NAMES = [
    "GraphBuilder",
    "START",
    "END",
    "App",
    "RetryPolicy",
    "GraphCompileError",
    "MissingEntry",
    "UnknownNode",
    "DuplicateNode",
    "DuplicateEdge",
    "EdgeFromEnd",
    "CycleDetected",
    "UnreachableNodes",
    "NoPathToEnd",
    "VersionedState",
    "StateSnapshot",
    "Message",
    "ErrorEvent",
    "NodePartial",
    "Replace",
    "Append",
    "StateKey",
    "StateSlotError",
    "add_messages",
    "map_merge",
    "add_errors",
    "AppRunner",
    "SessionExists",
    "GraphMismatch",
    "CheckpointerType",
    "Checkpointer",
    "Checkpoint",
    "InMemoryCheckpointer",
    "SQLiteCheckpointer",
    "PostgresCheckpointer",
    "JSONCheckpointer",
    "EventBus",
    "StdOutSink",
    "MemorySink",
    "ChannelSink",
    "JsonLinesSink",
    "MockClock",
    "SystemClock",
    "StepOptions",
    "StepReport",
    "Completed",
    "Paused",
    "Fresh",
    "Resumed",
    "NodeEvent",
    "DiagnosticEvent",
    "LLMEvent",
    "Event",
    "STREAM_END_SCOPE",
    "INVOCATION_END_SCOPE",
    "DiagnosticsConfig",
    "SinkHealth",
    "SinkDiagnostic",
    "EventStream",
    "TreadleError",
    "NodeRunError",
    "SessionNotFound",
    "NoStartNodes",
    "InvalidIterativeEntry",
    "CheckpointerError",
    "WorkflowExecutionError",
    "TaskExecutionError",
    "run",
    "export_mermaid",
    "save_mermaid",
    "view_mermaid",
    "Worker",
]


def test_every_spec_name_is_exported() -> None:
    missing = [name for name in SPEC_NAMES if not hasattr(treadle, name)]
    assert missing == []


def test_errors_derive_from_treadle_error() -> None:
    for name in ("GraphCompileError", "NodeRunError", "SessionNotFound", "CheckpointerError",
                 "StateSlotError", "NoStartNodes", "RouterFailed", "SinkError"):  # fmt: skip
        assert issubclass(getattr(treadle, name), treadle.TreadleError), name
    assert treadle.CheckpointerError.NotFound is treadle.CheckpointNotFound  # type: ignore[attr-defined]
    assert issubclass(treadle.WorkflowExecutionError, RuntimeError)


def test_exported_names_are_public_objects() -> None:
    for name in dir(treadle):
        obj = getattr(treadle, name)
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        assert obj.__module__.startswith("treadle"), (name, obj.__module__)
