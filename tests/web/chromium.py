"""Headless Chromium driven over the DevTools protocol: no Playwright, no Selenium.

`async with Chromium(tmp) as browser:` starts it with a fresh profile; `await browser.page(url)`
opens a tab; `page.evaluate(js)`, `page.wait_for(js)`, `page.screenshot(path)` drive it."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
]


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """One headless browser process with its own profile under `tmp`."""

    def __init__(self, tmp: Path, executable: str) -> None:
        self.tmp = tmp
        self.executable = executable
        self.proc: asyncio.subprocess.Process | None = None
        self.http = ""

    async def __aenter__(self) -> Chromium:
        profile = self.tmp / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        self.log = self.tmp / "chromium.log"
        with self.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                self.executable,
                *FLAGS,
                f"--user-data-dir={profile}",
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        ws_url = await self._devtools_url(30.0)
        self.http = "http://" + ws_url.removeprefix("ws://").split("/", 1)[0]
        return self

    async def _devtools_url(self, timeout_s: float) -> str:
        """The browser's DevTools websocket, from the line Chromium prints on stderr."""
        assert self.proc is not None
        async with asyncio.timeout(timeout_s):
            while True:
                for line in self.log.read_text(errors="replace").splitlines():
                    if line.startswith("DevTools listening on "):
                        return line.removeprefix("DevTools listening on ").strip()
                if self.proc.returncode is not None:
                    tail = self.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"chromium exited before DevTools listened:\n{tail}")
                await asyncio.sleep(0.05)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def page(
        self, url: str, *, width: int = 1366, height: int = 900, mobile: bool = False
    ) -> Page:
        """A new tab at `url`, its viewport `width` x `height` CSS pixels."""
        request = urllib.request.Request(f"{self.http}/json/new?about:blank", method="PUT")
        target = json.loads(await asyncio.to_thread(_read, request))
        page = Page(await connect(target["webSocketDebuggerUrl"], max_size=64 * 2**20))
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.viewport(width, height, mobile=mobile)
        await page.send("Page.navigate", url=url)
        await page.wait_for("document.readyState === 'complete'")
        return page


class Page:
    """One tab's DevTools session."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.errors: list[str] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events meanwhile: console errors are kept)."""
        call = next(self.ids)
        await self.ws.send(json.dumps({"id": call, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") == call:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
            if message.get("method") == "Runtime.exceptionThrown":
                self.errors.append(json.dumps(message["params"]["exceptionDetails"])[:500])

    async def evaluate(self, expression: str) -> Any:
        """The value of a JS expression (awaited if a promise)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 15.0) -> Any:
        """The first truthy value of `expression`, polled every 100 ms."""
        async with asyncio.timeout(timeout_s):
            while True:
                value = await self.evaluate(expression)
                if value:
                    return value
                await asyncio.sleep(0.1)

    async def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        """Emulate a screen of `width` x `height` CSS pixels (a phone when `mobile`)."""
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=2 if mobile else 1,
            mobile=mobile,
        )

    async def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        """A PNG of the page (the whole scroll height when `full_page`)."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            metrics = await self.send("Page.getLayoutMetrics")
            size = metrics["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                              "scale": 1}  # fmt: skip
        shot = await self.send("Page.captureScreenshot", **params)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        """Close the DevTools session (the tab goes with the browser)."""
        await self.ws.close()


def _read(request: urllib.request.Request) -> str:
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(resp.read().decode())
