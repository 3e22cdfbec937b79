"""A real headless Chromium driven over the DevTools protocol (Tornado's websocket client): open
pages, read the DOM, wait for live changes, collect console errors, take screenshots."""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tornado.websocket import websocket_connect

from p3s.cli.common import stop_processes

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000", "--remote-debugging-port=0"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.proc = subprocess.Popen([chromium_path(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.ws = self.loop.run_until_complete(self._connect(page["webSocketDebuggerUrl"]))
        self._id = 0
        self.console: list[str] = []
        self.dialogs: list[str] = []
        self.paused: list[dict] = []        # requests held by Fetch.enable, to continue with Fetch.continueRequest
        self.call("Page.enable")
        self.call("Runtime.enable")

    @staticmethod
    async def _connect(url: str) -> Any:
        return await websocket_connect(url, max_message_size=1 << 28)

    def call(self, method: str, **params: Any) -> dict:
        return self.loop.run_until_complete(self._call(method, params))

    async def _call(self, method: str, params: dict) -> dict:
        self._id += 1
        ident = self._id
        await self.ws.write_message(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = await asyncio.wait_for(self.ws.read_message(), 30)
            if message is None:
                raise RuntimeError("the browser closed the connection")
            data = json.loads(message)
            if data.get("id") == ident:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
            self._event(data)

    def _event(self, data: dict) -> None:
        method = data.get("method")
        if method == "Runtime.exceptionThrown":
            self.console.append(data["params"]["exceptionDetails"].get("exception", {}).get("description", "error"))
        elif method == "Runtime.consoleAPICalled" and data["params"]["type"] == "error":
            self.console.append(" ".join(str(a.get("value", a.get("description"))) for a in data["params"]["args"]))
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(data["params"]["message"])
            self.loop.create_task(self._call("Page.handleJavaScriptDialog", {"accept": True}))
        elif method == "Fetch.requestPaused":
            self.paused.append(data["params"])

    def eval(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def wait_for(self, expression: str, timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not true within {timeout} s: {expression}; console: {self.console}")
            time.sleep(0.1)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            stop_processes([self.proc], 10)
            self.loop.close()
            asyncio.set_event_loop(None)
