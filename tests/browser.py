"""Headless Chromium driven over the DevTools protocol (on trio-websocket), for the page tests.

Where the browser or Mermaid is missing the tests skip, naming what to install; with
``TREADLE_REQUIRE_BROWSER=1`` (set by ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser_parts() -> tuple[str, Path]:
    """The Chromium executable and Mermaid's ``mermaid.min.js``, or skip (fail in CI) the test."""
    chromium = os.environ.get("TREADLE_CHROMIUM") or next(
        (found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None
    )
    mermaid = os.environ.get("TREADLE_MERMAID_JS")
    missing = []
    if chromium is None:
        missing.append("a Chromium (apt-get install chromium, or TREADLE_CHROMIUM=path)")
    if not mermaid or not Path(mermaid).is_file():
        missing.append(
            "Mermaid from npm (npm pack mermaid; TREADLE_MERMAID_JS=.../package/dist/mermaid.min.js)"
        )
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("TREADLE_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (TREADLE_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    assert chromium is not None
    assert mermaid is not None
    return chromium, Path(mermaid)


class BrowserError(Exception):
    """The page or the DevTools protocol reported an error."""


class Page:
    """One tab: navigate, evaluate JavaScript, wait for a condition, take a screenshot."""

    def __init__(self, socket: WebSocketConnection, session_id: str) -> None:
        self._socket = socket
        self._session_id = session_id
        self._ids = itertools.count(1)
        self._replies: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self.console: list[str] = []
        """Console messages and uncaught exceptions of the page, for failure messages."""

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command to this tab and return its result."""
        call_id = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._replies[call_id] = send
        message = {"id": call_id, "method": method, "params": params}
        message["sessionId"] = self._session_id
        await self._socket.send_message(json.dumps(message))
        async with receive:
            reply = await receive.receive()
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def _dispatch(self, message: dict[str, Any]) -> None:
        reply_to = self._replies.pop(message.get("id", -1), None)
        if reply_to is not None:
            reply_to.send_nowait(message)
            return
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            texts = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
            self.console.append(f"console.{params['type']}: {' '.join(texts)}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console.append(f"exception: {text}")

    async def goto(self, url: str, seconds: float = 30) -> None:
        """Open ``url`` and wait up to ``seconds`` until the document has loaded."""
        await self.call("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", seconds)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` (a promise is awaited)."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} raised {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, seconds: float, interval: float = 0.05) -> Any:
        """Poll ``expression`` until it is truthy (for up to ``seconds``); return its value."""
        with trio.move_on_after(seconds):
            while True:
                value = await self.evaluate(expression)
                if value:
                    return value
                await trio.sleep(interval)
        raise BrowserError(
            f"{expression!r} still false after {seconds} s; page console: {self.console}"
        )

    async def set_viewport(self, width: int, height: int) -> None:
        """Lay the page out in a ``width`` x ``height`` window (screenshots have that size)."""
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    async def screenshot(self, path: Path) -> None:
        """Save a PNG of the viewport."""
        shot = await self.call("Page.captureScreenshot", format="png")
        await trio.Path(path).write_bytes(base64.b64decode(shot["data"]))


@asynccontextmanager
async def open_page(chromium: str, profile: Path) -> AsyncIterator[Page]:
    """Start a headless Chromium with its own profile directory and give one blank tab.

    The browser is ended (terminate, then kill) when the block is left.
    """
    args = [
        chromium,
        "--headless",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    process = await trio.lowlevel.open_process(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        async with trio.open_nursery() as nursery:
            endpoint = await nursery.start(_read_stderr, process)
            async with (
                open_websocket_url(endpoint, max_message_size=256 * 2**20) as socket,
                trio.open_nursery() as reader,
            ):
                yield await _new_tab(socket, reader)
                reader.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    finally:
        process.terminate()
        with trio.move_on_after(5) as waited:
            await process.wait()
        if waited.cancelled_caught:
            process.kill()
            await process.wait()


async def _read_stderr(
    process: trio.Process, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Report the DevTools endpoint Chromium prints, then keep draining its stderr."""
    assert process.stderr is not None
    seen = b""
    started = False
    with trio.fail_after(30):
        while not started:
            chunk = await process.stderr.receive_some()
            if not chunk:
                raise BrowserError(f"Chromium ended before listening: {seen.decode()}")
            seen += chunk
            match = re.search(rb"DevTools listening on (ws://\S+)", seen)
            if match:
                task_status.started(match.group(1).decode())
                started = True
    while await process.stderr.receive_some():
        pass


async def _browser_call(socket: WebSocketConnection, method: str, **params: Any) -> Any:
    """A browser-level command, answered before the tab's reader task starts."""
    await socket.send_message(json.dumps({"id": 0, "method": method, "params": params}))
    while True:
        message = json.loads(await socket.get_message())
        if message.get("id") == 0:
            if "error" in message:
                raise BrowserError(f"{method}: {message['error']}")
            return message["result"]


async def _new_tab(socket: WebSocketConnection, nursery: trio.Nursery) -> Page:
    target = await _browser_call(socket, "Target.createTarget", url="about:blank")
    attached = await _browser_call(
        socket, "Target.attachToTarget", targetId=target["targetId"], flatten=True
    )
    page = Page(socket, attached["sessionId"])

    async def read() -> None:
        while True:
            page._dispatch(json.loads(await socket.get_message()))

    nursery.start_soon(read)
    await page.call("Page.enable")
    await page.call("Runtime.enable")
    return page
