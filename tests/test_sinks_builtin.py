"""The built-in sinks on their own: StdOutSink, MemorySink, JsonLinesSink, ChannelSink."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import trio

from treadle.runtime.events.types import (
    DiagnosticEvent,
    Event,
    LLMEvent,
    NodeEvent,
    stream_end,
)
from treadle.sinks import (
    ChannelSink,
    JsonLinesSink,
    MemorySink,
    Sink,
    SinkError,
    StdOutSink,
    format_event,
)

NODE = NodeEvent("plan", 2, "progress", "half\nway", timestamp=1.0, session_id="s1", seq=4)
END = stream_end("s1", 3).stamped("s1", 9)


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty
        self.checks = 0

    def isatty(self) -> bool:
        self.checks += 1
        return self.tty


def test_format_event_plain_lines() -> None:
    assert format_event(NODE) == "[s1 #4] plan@2 progress: half\\nway"
    assert (
        format_event(DiagnosticEvent("routing.unknown_target", "x"))
        == "[-] routing.unknown_target: x"
    )
    llm = LLMEvent("s1", "writer", "st", "Hel", False, "chunk", seq=0)
    assert format_event(llm) == "[s1 #0] LLM writer/st chunk: Hel"
    assert format_event(END) == "[s1 #9] __treadle_stream_end__: session=s1 status=completed step=3"


def test_stdout_sink_colours_only_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    tty, pipe = FakeTerminal(True), FakeTerminal(False)
    StdOutSink(tty).handle(NODE)
    StdOutSink(pipe).handle(NODE)
    assert pipe.getvalue() == "[s1 #4] plan@2 progress: half\\nway\n"
    assert tty.getvalue() == ("\x1b[32m[s1 #4] plan@2\x1b[0m \x1b[35mprogress\x1b[0m: half\\nway\n")
    sink = StdOutSink(tty)
    for _ in range(3):
        sink.handle(NODE)
    assert tty.checks == 2  # one check per sink and stream, not per event


def test_stdout_sink_colour_can_be_forced_and_no_color_is_respected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipe = FakeTerminal(False)
    StdOutSink(pipe, colour=True).handle(END)
    assert pipe.getvalue().startswith("\x1b[32m")
    assert "\x1b[1msession=s1 status=completed step=3\x1b[0m" in pipe.getvalue()
    tty = FakeTerminal(True)
    StdOutSink(tty, colour=False).handle(NODE)
    assert "\x1b" not in tty.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    tty = FakeTerminal(True)
    StdOutSink(tty).handle(NODE)
    assert "\x1b" not in tty.getvalue()


def test_stdout_sink_defaults_to_the_current_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    StdOutSink().handle(NODE)
    assert capsys.readouterr().out == "[s1 #4] plan@2 progress: half\\nway\n"


def test_memory_sink_snapshot_clear_and_bound() -> None:
    memory = MemorySink()
    memory.handle(NODE)
    memory.handle(END)
    snap = memory.snapshot()
    assert snap == [NODE, END]
    snap.clear()  # a copy
    assert len(memory) == 2
    memory.clear()
    assert memory.snapshot() == []
    bounded = MemorySink(max_events=2)
    for i in range(5):
        bounded.handle(DiagnosticEvent("d", str(i)))
    assert [e.message for e in bounded.snapshot()] == ["3", "4"]
    with pytest.raises(ValueError, match="max_events"):
        MemorySink(max_events=0)


def test_jsonl_sink_with_a_path_truncates_then_appends(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("stale\n")
    sink = JsonLinesSink(path)
    sink.open()
    sink.handle(NODE)
    sink.close()
    sink.open()  # reopened: appends, never truncates what it wrote
    sink.handle(END)
    sink.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [Event.from_json(line) for line in lines] == [NODE, END]
    appending = JsonLinesSink(path, append=True)
    appending.handle(NODE)  # opens lazily when used without open()
    appending.close()
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3


def test_jsonl_sink_pretty_and_file_objects() -> None:
    out = io.StringIO()
    sink = JsonLinesSink(out, pretty=True)
    assert sink.name == "jsonl(pretty)"
    sink.handle(NODE)
    sink.close()
    assert not out.closed  # the caller's file stays open
    text = out.getvalue()
    assert text.count("\n") > 3
    assert Event.from_json(json.loads(text)) == NODE


def test_jsonl_lines_are_compact_utf8() -> None:
    out = io.StringIO()
    JsonLinesSink(out).handle(NodeEvent("n", 1, "s", "héllo ✓", timestamp=0.0))
    line = out.getvalue()
    assert line.endswith("\n")
    assert line.count("\n") == 1
    assert "héllo ✓" in line
    assert ", " not in line


async def test_channel_sink_fast_path_blocking_path_and_close() -> None:
    send, receive = trio.open_memory_channel[Event](1)
    sink = ChannelSink(send)
    assert sink.handle(NODE) is None  # room: sent without awaiting
    pending = sink.handle(END)
    assert pending is not None  # full: the sink must wait

    async def finish() -> None:
        assert pending is not None
        await pending

    async with trio.open_nursery() as nursery:
        nursery.start_soon(finish)
        assert await receive.receive() == NODE
        assert await receive.receive() == END
    await sink.close()
    with pytest.raises(trio.EndOfChannel):
        await receive.receive()


async def test_channel_sink_reports_a_gone_receiver() -> None:
    send, receive = trio.open_memory_channel[Event](1)
    sink = ChannelSink(send, name="feed", close_channel=False)
    await receive.aclose()
    with pytest.raises(SinkError, match="sink 'feed': the channel's receiver is closed"):
        sink.handle(NODE)
    await sink.close()
    # Left open as asked: sending reports the gone receiver, not a closed channel.
    with pytest.raises(trio.BrokenResourceError):
        send.send_nowait(NODE)


def test_builtin_sinks_satisfy_the_protocol() -> None:
    send, _ = trio.open_memory_channel[Event](1)
    for sink in (StdOutSink(), MemorySink(), JsonLinesSink(io.StringIO()), ChannelSink(send)):
        assert isinstance(sink, Sink)
        assert sink.name
