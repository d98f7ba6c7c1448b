"""The recording proxy: an OpenAI-compatible endpoint that forwards to a real server and records.

Each inference call becomes one OTel span on the proxy's own TracerProvider (never the global
one), whose processor feeds the store. Streams are relayed event by event as they arrive.
Request headers, Authorization included, are forwarded and never stored or logged.
Upstream HTTP uses the standard library (`http.client`): no extra dependency, and `read1()` hands
over each chunk the moment it arrives, so nothing is buffered.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from flask import Flask, Response, request
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import WebsocketMismatch
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .. import semconv
from .._parked import ParkedResponses
from ..config import SDK_DISABLED_WARNING, sdk_disabled
from ..conversation import ResponseChains
from ..conversation import from_request as conversation_from_request
from ..usage_request import may_refuse_usage, sends_usage_unasked, with_usage
from ._accounting import OPERATIONS, CallTally
from ._followups import FOLLOW_UP, forward_follow_up
from ._proxy_call import ProxiedCall, error_response
from ._upstream import (
    CONVERSATION_HEADER,
    Upstream,
    UpstreamFailure,
    forward_headers,
    response_headers,
)

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""Largest request body accepted: above OpenAI's own 50 MB per request (pictures and files as
base64), so the upstream decides what it accepts; `otelstats proxy --max-request-mb` moves it."""
MAX_CONVERSATION_ID = 128
PARKED = "otelstats.parked"
"""`app.extensions` key of the proxy's background responses still going on (`_followups`)."""


@dataclass(frozen=True)
class ProxyOptions:
    timeout: float = 600.0
    """Seconds without a byte from the upstream before the call fails with 504."""
    connect_timeout: float = 10.0
    max_request_bytes: int = MAX_REQUEST_BYTES
    stream_usage: bool = True
    """Ask chat/completions streams for usage when the client did not, hiding the extra chunk."""
    provider: str | None = None
    """`gen_ai.provider.name` of the calls; None: by the upstream's address (Azure OpenAI on
    Azure's hosts, else openai), as the SDK instrumentation names it."""
    conversation_salt: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    """Secret key of the conversation fingerprints (`conversation.fingerprint`); `otelstats
    proxy` uses the user's, as `instrument()` does, so both group a conversation alike."""


def _conversation_id(raw: str | None) -> str | None:
    if not raw:
        return None
    cleaned = "".join(ch for ch in raw.strip() if ch.isprintable())
    return cleaned[:MAX_CONVERSATION_ID] or None


def _from_body(body: Mapping[str, Any], salt: bytes, chains: ResponseChains) -> str | None:
    """The conversation a request's body gives, as for an instrumented call; None if unreadable
    (the call is still forwarded and recorded)."""
    try:
        return conversation_from_request(body, salt, chains)
    except Exception as exc:  # a conversation id is never worth a failed call
        # Only the class: a message could quote the request, which is the user's.
        log.warning("otelstats proxy: no conversation id for a request (%s)", type(exc).__name__)
        return None


def create_proxy_app(
    upstream: str, tracer_provider: trace.TracerProvider, options: ProxyOptions | None = None
) -> Flask:
    """The proxy as a WSGI app; spans go to `tracer_provider` (give it a processor to the store)."""
    target = Upstream.parse(upstream)
    opts = options or ProxyOptions()
    if opts.provider is None:  # named once, by the upstream's address
        opts = replace(opts, provider=semconv.provider_name(target.host, target.base_path))
    # Whether streams are asked for usage is the upstream's to decide once, not each request's.
    ask_usage = opts.stream_usage and not sends_usage_unasked(target.host)
    tracer = tracer_provider.get_tracer("otelstats.receivers.proxy")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = opts.max_request_bytes
    chains = ResponseChains()
    parked = ParkedResponses()
    app.extensions[PARKED] = parked

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Response:
        limit = round(opts.max_request_bytes / 2**20, 3)
        message = (
            f"request body larger than the otelstats proxy accepts ({limit:g} MiB); "
            "start it with a larger --max-request-mb"
        )
        return error_response(413, message, "invalid_request_error")

    @app.errorhandler(WebsocketMismatch)
    def _websocket(exc: WebsocketMismatch) -> Response:
        # Routing refuses every WebSocket handshake (no rule takes one).
        message = (
            f"otelstats proxy does not forward WebSocket connections ({request.path}: the "
            "Responses API's WebSocket mode, the Realtime API); send these calls over HTTP, "
            "or record them by instrumenting the SDK"
        )
        return error_response(501, message, "not_implemented")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name, "invalid_request_error")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error("proxy error: %s", exc.__class__.__name__)  # never the request: it has keys
        return error_response(500, "internal error in the otelstats proxy", "proxy_error")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response('{"status": "ok"}', mimetype="application/json")

    @app.route("/<path:path>", methods=["GET", "POST", "DELETE"])
    def forward(path: str) -> Response:
        endpoint = path.strip("/").removeprefix("v1/")
        if request.method == "GET" and (endpoint == "models" or endpoint.startswith("models/")):
            return _forward_plain(endpoint)
        follow_up = FOLLOW_UP.fullmatch(endpoint)
        if follow_up is not None and endpoint not in OPERATIONS:
            return forward_follow_up(endpoint, follow_up, plain_call, parked)
        if endpoint not in OPERATIONS:
            return error_response(404, f"otelstats proxy does not forward /{path}", "not_found")
        if request.method != "POST":
            return error_response(405, f"/{path} takes POST", "invalid_request_error")
        return _forward_call(endpoint)

    def plain_call() -> ProxiedCall:
        """A request that is no call: forwarded, never recorded."""
        return ProxiedCall(target, opts, tracer, None, None)

    def _forward_plain(endpoint: str) -> Response:
        call = plain_call()
        try:
            conn, resp = call.send("GET", endpoint, None, forward_headers(request.headers, False))
        except UpstreamFailure as exc:
            return error_response(exc.status, str(exc), exc.error_type)
        try:
            body = resp.read()
        except (OSError, http.client.HTTPException):
            return error_response(502, "the upstream closed the connection", "upstream_error")
        finally:
            conn.close()
        return Response(body, status=resp.status, headers=response_headers(resp))

    def _forward_call(endpoint: str) -> Response:
        start_ns = time.time_ns()
        raw = request.get_data(cache=False)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return error_response(
                400, f"the request body is not valid JSON: {exc}", "invalid_request_error"
            )
        if not isinstance(body, dict):
            return error_response(
                400, "the request body must be a JSON object", "invalid_request_error"
            )
        tally = CallTally.for_request(endpoint, body, start_ns)
        conversation_id = _conversation_id(request.headers.get(CONVERSATION_HEADER))
        if conversation_id is None and endpoint != "embeddings":
            conversation_id = _from_body(body, opts.conversation_salt, chains)
        call = ProxiedCall(target, opts, tracer, tally, conversation_id, chains, parked)
        headers = forward_headers(request.headers, tally.streaming)
        requested = body.get("stream_options")
        stream_options = (
            with_usage(requested)
            if ask_usage
            and tally.streaming
            and endpoint in {"chat/completions", "completions"}
            and (requested is None or isinstance(requested, dict))
            else None
        )
        injected = stream_options is not None
        sent = raw
        if stream_options is not None:
            sent = json.dumps({**body, "stream_options": stream_options}).encode()
        try:
            conn, resp = call.send("POST", endpoint, sent, headers)
            if injected and resp.status in {400, 422}:
                refusal = _read_refusal(conn, resp)
                if not may_refuse_usage(refusal):
                    return call.whole(conn, resp, refusal)  # the client's own bad request
                # A server that rejects stream_options: send the client's own body.
                injected = False
                conn, resp = call.send("POST", endpoint, raw, headers)
        except UpstreamFailure as exc:
            call.finish(exc.error_type)
            return error_response(exc.status, str(exc), exc.error_type)
        content_type = resp.getheader("Content-Type", "")
        if resp.status < 400 and content_type.startswith("text/event-stream"):
            return Response(
                call.relay(conn, resp, hide_usage_chunk=injected),
                status=resp.status,
                headers=response_headers(resp),
                direct_passthrough=True,
            )
        return call.whole(conn, resp)

    return app


def _read_refusal(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> bytes:
    """The body of an error answer (empty if it cannot be read); the connection is closed."""
    try:
        return resp.read()
    except (OSError, http.client.HTTPException):
        return b""
    finally:
        conn.close()


def recording_provider(exporter: SpanExporter, export_interval_ms: int = 1000) -> TracerProvider:
    """The proxy's own TracerProvider: spans are exported off the request threads to `exporter`.

    `OTEL_RESOURCE_ATTRIBUTES` is honoured (e.g. service.instance.id for team mode).
    """
    # Every call is a record: the proxy's own provider never samples (OTEL_TRACES_SAMPLER is
    # for the app's traces, and this provider traces nothing else).
    provider = TracerProvider(
        resource=Resource.create({"service.name": "otelstats-proxy"}), sampler=ALWAYS_ON
    )
    if sdk_disabled():  # the proxy then only forwards
        log.warning(SDK_DISABLED_WARNING, "the otelstats proxy")
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=export_interval_ms)
    )
    return provider


class _RequestHandler(WSGIRequestHandler):
    """Logs each request without its query string: some clients put API keys there."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = self.path
        self.path = path.partition("?")[0]
        try:
            super().log_request(code, size)
        finally:
            self.path = path


class ProxyServer:
    """A threaded WSGI server running the proxy in a background thread (used by the CLI and tests).

    Werkzeug's threaded server writes and flushes every chunk a streamed response yields, so a
    stream reaches the client event by event; servers that coalesce small writes would not.
    """

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._app = app
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=_RequestHandler
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @property
    def base_url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/v1"

    def start(self) -> ProxyServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otelstats-proxy", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.end_open_calls()

    def end_open_calls(self) -> None:
        """Record the background responses still going on as they stood (`_parked`): before
        the spans' last flush, so that no call made is lost."""
        parked = self._app.extensions.get(PARKED)
        if isinstance(parked, ParkedResponses):
            parked.close()
