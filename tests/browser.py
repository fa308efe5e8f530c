"""Open a page in headless Chromium (Debian's `chromium`) over the DevTools protocol on a pipe (no
extra package, no port) and report what a person would see and what the page did: each chart's
rendered series, console errors and exceptions, the network requests it made, and a screenshot."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

# Per chart (<div class="chart" data-series="N">): the series it should draw, and the trace groups
# plotly rendered in its SVG.
CHART_PROBE = """JSON.stringify([...document.querySelectorAll('div.chart')].map(div => ({
  expected: Number(div.dataset.series),
  svg: div.querySelectorAll('svg.main-svg').length,
  drawn: div.querySelectorAll('g.trace').length,
})))"""


class DevTools:
    """One Chromium over --remote-debugging-pipe: commands on fd 3, answers and events on fd 4."""

    def __init__(self, chromium: str, profile: Path):
        to_browser_read, self.to_browser = os.pipe()
        self.from_browser, from_browser_write = os.pipe()

        def onto_3_and_4() -> None:  # the pipe's ends where Chromium looks for them, kept across exec
            reading, writing = os.dup(to_browser_read), os.dup(from_browser_write)  # clear of 3 and 4 first
            os.dup2(reading, 3)
            os.dup2(writing, 4)
            os.set_inheritable(3, True)  # dup2 onto itself would have kept close-on-exec
            os.set_inheritable(4, True)

        self.process = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1200,900"],
            close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=onto_3_and_4)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout_s: float = 60) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reply = self.read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(method)

    def read(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def wait_for(self, method: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(event.get("method") == method for event in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(method)
            self.events.append(self.read())

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout_s=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.to_browser)
        os.close(self.from_browser)


def open_page(path: Path, screenshot: Path) -> dict[str, Any]:
    """What `path` shows in Chromium once loaded: its charts, console errors, requests (URLs), and
    a full-page screenshot written to `screenshot`."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise AssertionError("no chromium on PATH: apt-get install chromium (CI installs it)")
    with tempfile.TemporaryDirectory() as profile:
        browser = DevTools(chromium, Path(profile))
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Network", "Runtime", "Log"):
                browser.send(f"{domain}.enable", session=session)
            browser.events.clear()
            browser.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
            browser.wait_for("Page.loadEventFired")
            time.sleep(1.0)  # plotly draws right after load; give any late error a moment to show
            charts = json.loads(browser.send("Runtime.evaluate", {"expression": CHART_PROBE, "returnByValue": True},
                                             session=session)["result"]["value"])
            shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                                session=session)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        finally:
            browser.close()
    requests = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    errors = [json.dumps(e["params"])[:300] for e in browser.events
              if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") == "error")
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")]
    return {"charts": charts, "requests": requests, "errors": errors}
