"""The live page in a real headless Chromium while a real graph runs: each node's colour follows its
lifecycle events, a failed node turns red, and a connection dropped mid-run resumes with
``from_seq`` and still ends with the right colours.

The page subscribes to a real ``WebSocketSink`` (``/sessions/{id}/events?from_seq=N``) over
loopback.

Skipped without Chromium or ``TREADLE_MERMAID_JS`` (failed instead with
``TREADLE_REQUIRE_BROWSER=1``). Real time and real loopback sockets: no autojump clock here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from browser import Page, browser_parts, open_page

from treadle import (
    END,
    START,
    AppRunner,
    EventBus,
    GraphBuilder,
    NodeRunError,
    WebSocketSink,
    view_mermaid,
)

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "visualisation.png"
SCREENSHOT_SIZE = (1100, 560)
GREEN, RED, GREY = "rgb(40, 167, 69)", "rgb(220, 53, 69)", "rgb(108, 117, 125)"
NODES = ("fetch", "parse", "index", "report")

# Each node's status class, shape fill and the colours it went through, by node name.
READ_NODES = """
Object.fromEntries([...document.querySelectorAll('#treadle-diagram g.node[data-node]')].map(g => {
  const name = g.getAttribute('data-node');
  return [name, {status: g.getAttribute('data-status'),
                 fill: getComputedStyle(g.querySelector('rect, path, polygon')).fill,
                 history: window.treadleView.history[name]}];
}))
"""


@pytest.fixture
def parts() -> tuple[str, Path]:
    return browser_parts()


def pipeline(pause: float, failing: str | None = None) -> GraphBuilder:
    """fetch, then parse and index side by side, then report (a join); each node takes ``pause``
    real seconds so the page sees it running."""

    def node(name: str) -> Any:
        async def body(snapshot: object, ctx: object) -> None:
            await trio.sleep(pause)
            if name == failing:
                raise RuntimeError(f"{name} broke")

        return body

    builder = GraphBuilder()
    for name in NODES:
        builder.add_node(name, node(name))
    return (
        builder.add_edge(START, "fetch")
        .add_edge("fetch", "parse")
        .add_edge("fetch", "index")
        .add_edge(["parse", "index"], "report")
        .add_edge("report", END)
    )


class DroppingProxy:
    """A TCP relay in front of the sink that can cut every connection, as a network drop would,
    and records the request line of each WebSocket handshake."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.requests: list[str] = []
        self._links: set[trio.CancelScope] = set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._relay, listeners)

    def drop_all(self) -> None:
        for link in list(self._links):
            link.cancel()

    async def _relay(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as link:
            self._links.add(link)
            try:
                upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                async with client, upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, upstream, True, nursery.cancel_scope)
                    nursery.start_soon(self._pump, upstream, client, False, nursery.cancel_scope)
            finally:
                self._links.discard(link)

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        record: bool,
        done: trio.CancelScope,
    ) -> None:
        try:
            async for chunk in source:
                if record:
                    self.requests.append(chunk.split(b"\r\n", 1)[0].decode())
                    record = False
                await sink.send_all(chunk)
        except trio.BrokenResourceError:
            pass
        done.cancel()


@asynccontextmanager
async def live_page(
    parts: tuple[str, Path], tmp_path: Path, app: Any, port: int, session: str
) -> AsyncIterator[Page]:
    chromium, mermaid = parts
    url = f"ws://127.0.0.1:{port}/sessions/{session}/events"
    path = view_mermaid(app, tmp_path / "live.html", open_browser=False, live=url,
                        mermaid_js=mermaid, title=f"live view of session {session!r}")  # fmt: skip
    async with open_page(chromium, tmp_path / "profile") as page:
        await page.set_viewport(*SCREENSHOT_SIZE)
        await page.goto(path.as_uri())
        await page.wait_for("window.treadleView.connection === 'connected'", 30)
        yield page


@asynccontextmanager
async def sink_run(app: Any) -> AsyncIterator[tuple[AppRunner, WebSocketSink, trio.Nursery]]:
    """A runner with lifecycle events on and a real WebSocketSink on its bus."""
    sink = WebSocketSink()
    async with (
        AppRunner(app, event_bus=EventBus([sink]), lifecycle_events=True) as runner,
        trio.open_nursery() as nursery,
    ):
        yield runner, sink, nursery
        nursery.cancel_scope.cancel()


@pytest.mark.watchdog(120)
async def test_every_node_turns_green_as_a_real_run_completes(
    tmp_path: Path, parts: tuple[str, Path]
) -> None:
    app = pipeline(pause=0.2).compile()
    async with (
        sink_run(app) as (runner, sink, _),
        live_page(parts, tmp_path, app, sink.port, "ok") as page,
    ):
        assert await page.evaluate("window.treadleView.statuses") == dict.fromkeys(NODES, "pending")
        await runner.create_session("ok")
        await runner.run_until_complete("ok")
        await page.wait_for("window.treadleView.ended", 30)
        nodes = await page.evaluate(READ_NODES)
        view = await page.evaluate("window.treadleView")
    for name in NODES:
        assert nodes[name]["history"] == ["pending", "running", "completed"], name
        assert nodes[name]["status"] == "completed"
        assert nodes[name]["fill"] == GREEN
    assert view["outcome"] == "completed"
    assert view["step"] == 3
    assert view["connects"] == 1


@pytest.mark.watchdog(120)
async def test_a_failing_node_turns_red_and_what_never_ran_stays_grey(
    tmp_path: Path, parts: tuple[str, Path]
) -> None:
    app = pipeline(pause=0.1, failing="index").compile()
    async with (
        sink_run(app) as (runner, sink, _),
        live_page(parts, tmp_path, app, sink.port, "bad") as page,
    ):
        await runner.create_session("bad")
        with pytest.raises(NodeRunError):
            await runner.run_until_complete("bad")
        await page.wait_for("window.treadleView.outcome === 'error'", 30)
        nodes = await page.evaluate(READ_NODES)
        shot = tmp_path / "visualisation.png"
        await page.screenshot(shot)
    assert nodes["index"]["history"] == ["pending", "running", "failed"]
    assert nodes["index"]["fill"] == RED
    for name in ("fetch", "parse"):
        assert nodes[name]["fill"] == GREEN, name
    assert nodes["report"]["history"] == ["pending"]
    assert nodes["report"]["fill"] == GREY
    # The picture docs/visualisation.md shows; TREADLE_UPDATE_SCREENSHOTS=1 replaces it.
    assert png_size(shot.read_bytes()) == SCREENSHOT_SIZE
    if os.environ.get("TREADLE_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, SCREENSHOT)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_the_docs_screenshot_is_committed() -> None:
    assert png_size(SCREENSHOT.read_bytes()) == SCREENSHOT_SIZE


@pytest.mark.watchdog(120)
async def test_a_dropped_connection_resumes_from_seq_and_ends_with_the_right_colours(
    tmp_path: Path, parts: tuple[str, Path]
) -> None:
    app = pipeline(pause=0.4).compile()
    async with sink_run(app) as (runner, sink, nursery):
        proxy = DroppingProxy(sink.port)
        await nursery.start(proxy.serve)
        async with live_page(parts, tmp_path, app, proxy.port, "drop") as page:
            await runner.create_session("drop")
            nursery.start_soon(runner.run_until_complete, "drop")
            # Cut the connection once fetch is done, while parse and index run.
            await page.wait_for("window.treadleView.statuses.fetch === 'completed'", 30)
            seen = await page.evaluate("window.treadleView.lastSeq")
            proxy.drop_all()
            await page.wait_for("window.treadleView.connects >= 2", 30)
            await page.wait_for("window.treadleView.ended", 30)
            nodes = await page.evaluate(READ_NODES)
            view = await page.evaluate("window.treadleView")
    for name in NODES:
        # Exactly once each: nothing replayed twice, nothing missed across the drop.
        assert nodes[name]["history"] == ["pending", "running", "completed"], name
        assert nodes[name]["fill"] == GREEN
    assert view["outcome"] == "completed"
    assert proxy.requests[0].startswith("GET /sessions/drop/events?from_seq=0 ")
    resumed = proxy.requests[1]
    from_seq = int(resumed.split("from_seq=")[1].split()[0].split("&")[0])
    assert from_seq > seen, resumed  # it resumed after what it had, not from the start


FLOW = """
import pathlib

import trio

from treadle import END, START, GraphBuilder


async def gate(snapshot, ctx):
    while not pathlib.Path("go").exists():  # the test says when the page is watching
        await trio.sleep(0.05)


async def step(snapshot, ctx):
    await trio.sleep(0.05)


app = (
    GraphBuilder()
    .add_node("gate", gate)
    .add_node("work", step)
    .add_node("finish", step)
    .add_edge(START, "gate")
    .add_edge("gate", "work")
    .add_edge("work", "finish")
    .add_edge("finish", END)
)
"""


@pytest.mark.watchdog(120)
async def test_treadle_run_ws_view_opens_a_page_that_follows_the_run(
    tmp_path: Path, parts: tuple[str, Path]
) -> None:
    chromium, mermaid = parts
    (tmp_path / "flow.py").write_text(FLOW, encoding="utf-8")
    # The browser webbrowser.open starts ($BROWSER): a script that notes the page it was given.
    opener = tmp_path / "browser.sh"
    opener.write_text('#!/bin/sh\necho "$1" > opened.txt\n', encoding="utf-8")
    opener.chmod(0o755)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "BROWSER": f"{opener} %s",
        "TREADLE_MERMAID_JS": str(mermaid),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    command = [sys.executable, "-m", "treadle", "run", "flow:app", "--ws", "0", "--view",
               "--checkpointer", "memory://"]  # fmt: skip
    with (tmp_path / "out.txt").open("wb") as out:
        process = await trio.lowlevel.open_process(
            command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            opened = trio.Path(tmp_path / "opened.txt")
            with trio.fail_after(60):
                while not await opened.exists():
                    await trio.sleep(0.05)
            async with open_page(chromium, tmp_path / "profile") as page:
                await page.goto((await opened.read_text()).strip())
                await page.wait_for("window.treadleView.connection === 'connected'", 30)
                await trio.Path(tmp_path / "go").touch()
                await page.wait_for("window.treadleView.ended", 30)
                nodes = await page.evaluate(READ_NODES)
            with trio.fail_after(30):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    output = (tmp_path / "out.txt").read_text(encoding="utf-8")
    assert process.returncode == 0, output
    assert "serving events at ws://127.0.0.1:" in output
    assert "live view: " in output
    for name in ("gate", "work", "finish"):
        assert nodes[name]["history"] == ["pending", "running", "completed"], name
        assert nodes[name]["fill"] == GREEN
