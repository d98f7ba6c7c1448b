"""A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe`, for timing a page the
way a visitor's browser loads it.

Playwright enables the Runtime domain in every page it drives. With it on, plotly.js starts about
0.45 s later here (657 → 1 117 ms on an empty page), and a trace shows V8 parsing plotly's
multi-megabyte functions again to collect their source positions (as it does when it has to say
where code is, for stack traces), which a visitor's browser, with no DevTools attached, does not
do. This client enables no domain: it opens a page in a fresh browser context, navigates, and
reads the page's state with `Runtime.evaluate`, which needs none.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any


class CdpError(RuntimeError):
    pass


class Browser:
    """One headless Chromium, spoken to over fds 3 (commands) and 4 (replies and events)."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self._write = os.fdopen(write_fd, "wb", buffering=0)
        self._read = os.fdopen(read_fd, "rb", buffering=0)
        self._buffer = b""
        self._next_id = 0

    def send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        """Send one command and wait for its reply (events in between are skipped)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._write.write(json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = self._read.read(65536)
            if not chunk:
                raise CdpError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    @contextmanager
    def page(self, timezone_id: str, width: int, height: int) -> Iterator[Page]:
        """A page in a browser context of its own (nothing cached, as for a first visit)."""
        ctx = self.send("Target.createBrowserContext", {"disposeOnDetach": True})
        context_id = ctx["browserContextId"]
        target = self.send(
            "Target.createTarget",
            {
                "url": "about:blank",
                "browserContextId": context_id,
                "width": width,
                "height": height,
            },
        )
        session = self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )["sessionId"]
        page = Page(self, session)
        page.send("Emulation.setTimezoneOverride", {"timezoneId": timezone_id})
        page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        try:
            yield page
        finally:
            self.send("Target.disposeBrowserContext", {"browserContextId": context_id})


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self._browser = browser
        self._session = session

    def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self._browser.send(method, params, self._session)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression!r}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0, every_s: float = 0.25) -> Any:
        """Poll `expression` until it is truthy. Polling is sparse: each poll is a task on the
        page's main thread, which the timing being measured shares."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(every_s)
        raise CdpError(f"{expression!r} still false after {timeout_s} s")


@contextmanager
def chromium(executable: str, args: list[str]) -> Iterator[Browser]:
    """Chromium with `args`, headless, a throwaway profile, DevTools on a pipe."""
    cmd_read, cmd_write = os.pipe()
    reply_read, reply_write = os.pipe()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:

        def onto_3_and_4() -> None:  # Chromium reads commands on fd 3, writes replies on fd 4
            commands, replies = os.dup(cmd_read), os.dup(reply_write)  # clear of 3 and 4
            os.dup2(commands, 3)
            os.dup2(replies, 4)

        proc = subprocess.Popen(
            [executable, *args, f"--user-data-dir={profile}", "--remote-debugging-pipe"],
            pass_fds=(3, 4),  # kept open past the preexec function (closing comes after it)
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=onto_3_and_4,
        )
        os.close(cmd_read)
        os.close(reply_write)
        browser = Browser(cmd_write, reply_read)
        try:
            yield browser
        finally:
            with suppress(CdpError, OSError):
                browser.send("Browser.close")
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
