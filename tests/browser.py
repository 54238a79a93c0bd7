"""Open a page in headless Chromium over the DevTools protocol (aiohttp's websocket client).

`inspect_page(path, screenshot)` returns a local HTML file's console errors and exceptions, what
every <img> decoded to, and writes a full-page PNG screenshot. `drive_page(url, script)` runs
`await script(page)` with a PageDriver: type, click, choose a file, wait, screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-allow-origins=*",
         "--window-size=1280,900"]
CANVAS_INK_JS = ("(() => { const c = document.getElementById('map-canvas'); const d = c.getContext('2d')"
                 ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 3; i < d.length; i += 4) "
                 "if (d[i] > 0) n++; return n; })()")
"""How many pixels of the page's map canvas are drawn (not transparent)."""
IMAGES_JS = ("JSON.stringify(Array.from(document.images).map(i => ({src: i.src.slice(0, 40), complete: i.complete, "
             "naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight})))")


def find_chromium() -> str | None:
    for name in ("/usr/bin/chromium",) + CHROMIUM_NAMES:
        found = shutil.which(name) if not os.path.isabs(name) else (name if os.access(name, os.X_OK) else None)
        if found:
            return found
    return None


def _devtools_port(profile: Path, process: subprocess.Popen, timeout: float) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.is_file():
            lines = marker.read_text().split()
            if lines:
                return int(lines[0])
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}: {process.stderr.read()[-2000:]!r}")
        time.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")


async def _inspect(page: "PageDriver", screenshot: Path) -> dict:
    """What inspect_page reports, once the page has loaded."""
    images = json.loads(await page.evaluate(IMAGES_JS))
    height = await page.screenshot(screenshot, max_height=12000)
    await page.evaluate("1")  # drain events that arrived meanwhile
    return {"errors": page.errors(), "images": images, "screenshot": screenshot, "height": height}


def inspect_page(path: str | Path, screenshot: str | Path, chromium: str | None = None, timeout: float = 60) -> dict:
    """Load file://path in a fresh headless Chromium profile; errors, images and a screenshot."""
    return drive_page(Path(path).resolve().as_uri(), lambda page: _inspect(page, Path(screenshot)), chromium, timeout)


def _stop(process: subprocess.Popen) -> None:
    """End Chromium and every helper process of its session."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue


def _remove_profile(profile: str) -> None:
    """Remove the profile; a helper that was still exiting may write one last file into it."""
    for _ in range(10):
        try:
            shutil.rmtree(profile)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.2)
    shutil.rmtree(profile, ignore_errors=True)


class PageDriver:
    """One page driven over the DevTools protocol: evaluate, wait for a condition, choose a file in
    an <input type=file>, screenshot; console errors and exceptions are collected as they come."""

    def __init__(self, ws, timeout: float):
        self.ws = ws
        self.timeout = timeout
        self.counter = 0
        self.events: list[dict] = []

    async def call(self, method: str, **params) -> dict:
        self.counter += 1
        my_id = self.counter
        await self.ws.send_str(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            message = json.loads((await asyncio.wait_for(self.ws.receive(), self.timeout)).data)
            if message.get("id") == my_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {json.dumps(result['exceptionDetails'])[:300]}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float | None = None):
        """Poll until `expression` is truthy; its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise TimeoutError(f"waited {timeout or self.timeout:.0f} s for {expression[:120]}")

    async def choose_file(self, selector: str, path: str | Path) -> None:
        root = (await self.call("DOM.getDocument"))["root"]["nodeId"]
        node = (await self.call("DOM.querySelector", nodeId=root, selector=selector))["nodeId"]
        await self.call("DOM.setFileInputFiles", nodeId=node, files=[str(Path(path).resolve())])

    async def screenshot(self, path: str | Path, max_height: int = 6000) -> float:
        """A full-page PNG (at most 1280 wide and `max_height` tall); the page's height."""
        metrics = await self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                               clip={"x": 0, "y": 0, "width": min(size["width"], 1280),
                                     "height": min(size["height"], max_height), "scale": 1})
        Path(path).write_bytes(base64.b64decode(shot["data"]))
        return size["height"]

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                found.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append("log: " + params["entry"].get("text", ""))
        return found


async def _drive(port: int, url: str, script, timeout: float):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as response:
            target = json.loads(await response.text())
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = PageDriver(ws, timeout)
            for domain in ("Page", "Runtime", "Log", "DOM"):
                await page.call(f"{domain}.enable")
            await page.call("Page.navigate", url=url)
            await page.wait_for("document.readyState === 'complete'")  # the load event has fired
            return await script(page)


def drive_page(url: str, script, chromium: str | None = None, timeout: float = 60):
    """Open `url` in a fresh headless Chromium and run `await script(page)` (a PageDriver); its result."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium binary")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    process = subprocess.Popen([chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        port = _devtools_port(Path(profile), process, timeout)
        return asyncio.run(_drive(port, url, script, timeout))
    finally:
        _stop(process)
        _remove_profile(profile)
