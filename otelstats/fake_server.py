"""FakeOpenAIServer: a real threaded HTTP server on 127.0.0.1 speaking the OpenAI wire format.

Used by `otelstats demo`, the tests and the benchmarks. Replies are scripted per request with
`push(Reply(...))` (faults, usage dialects, cut streams); the default reply is a normal answer.
Every request received is kept in `.requests`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from ._fake_wire import MODELS, Rendered, Reply, render

__all__ = ["MODELS", "FakeOpenAIServer", "ReceivedRequest", "Reply"]


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeOpenAIServer:
    """`with FakeOpenAIServer() as server: OpenAI(base_url=server.base_url, api_key="x")`."""

    def __init__(
        self,
        *,
        token_delay: float = 0.0,
        default: Reply | None = None,
        reject_stream_options: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token_delay = token_delay
        self.default = default or Reply()
        self.reject_stream_options = reject_stream_options
        """Answer 400 to any request carrying `stream_options` (servers that do not know it)."""
        self.requests: list[ReceivedRequest] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *replies: Reply) -> None:
        """Script the next requests' replies, in order (then the default applies again)."""
        with self._lock:
            self._queue.extend(replies)

    def start(self) -> FakeOpenAIServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-openai",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _next(self, request: ReceivedRequest) -> tuple[Reply, int]:
        with self._lock:
            self.requests.append(request)
            reply = self._queue.popleft() if self._queue else self.default
            return reply, len(self.requests)


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: the fake server is used inside tests and the demo."""

        def handle(self) -> None:
            # The client hung up (a `break`, a cancelled task): normal for streams.
            with contextlib.suppress(ConnectionError):
                super().handle()

        def do_GET(self) -> None:
            self._serve({})

        def do_DELETE(self) -> None:
            self._serve({})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            self._serve(body if isinstance(body, dict) else {})

        def _serve(self, body: dict[str, Any]) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            request = ReceivedRequest(self.command, self.path, headers, body)
            reply, seq = server._next(request)
            if server.reject_stream_options and "stream_options" in body:
                reply = Reply(
                    status=400,
                    error_code="unrecognized_argument",
                    error_message="Unrecognized request argument supplied: stream_options",
                )
            rendered = render(self.command, self.path, body, reply, seq)
            if rendered.events:
                delay = reply.token_delay if reply.token_delay is not None else server.token_delay
                self._stream(rendered, delay)
            else:
                self._send(rendered)

        def _send(self, rendered: Rendered) -> None:
            self.send_response(rendered.status)
            self.send_header("Content-Type", rendered.content_type)
            self.send_header("Content-Length", str(len(rendered.body)))
            for name, value in rendered.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(rendered.body)

        def _stream(self, rendered: Rendered, delay: float) -> None:
            self.send_response(rendered.status)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            for name, value in rendered.headers.items():
                self.send_header(name, value)
            self.end_headers()
            try:
                for i, event in enumerate(rendered.events):
                    if delay and i:
                        time.sleep(delay)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                if rendered.cut == "reset":
                    # Drop the connection mid-body: the client sees a protocol error.
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(b"0\r\n\r\n")
                if rendered.cut == "eof":
                    self.close_connection = True
            except (BrokenPipeError, ConnectionResetError):
                # The client stopped reading (a `break` in its loop): nothing left to do.
                self.close_connection = True

    return Handler
