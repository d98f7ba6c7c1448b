"""One call forwarded by the recording proxy: sent upstream, relayed back, recorded once.

`ProxiedCall` owns the call's span and its `CallTally`; the proxy's routes (`proxy`) and the
follow-ups of background responses (`_followups`) drive it.
"""

from __future__ import annotations

import http.client
import json
import time
import zlib
from collections.abc import Iterator, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

from flask import Response, request
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import semconv
from .._parked import WAITING, ParkedResponses, server_took
from ..conversation import ResponseChains
from ..records import Outcome
from ._accounting import (
    OPERATIONS,
    CallTally,
    SSESplitter,
    carries_output,
    parse_event,
)
from ._upstream import Upstream, UpstreamFailure, response_headers

if TYPE_CHECKING:
    from .proxy import ProxyOptions


def error_response(status: int, message: str, kind: str) -> Response:
    body = {"error": {"message": message, "type": kind, "code": status}}
    return Response(json.dumps(body), status=status, mimetype="application/json")


class UpstreamCut(ConnectionAbortedError):
    """Raised from a relayed stream the upstream cut short, once the call is recorded: the
    client's connection then ends without the end of its chunked body, as it would have without
    the proxy, so that its SDK raises (and may resume) instead of taking a partial answer for a
    whole one. A `ConnectionError`: werkzeug's server closes the connection quietly."""


class ProxiedCall:
    """One forwarded request: sends it, relays the answer and ends its span exactly once."""

    def __init__(
        self,
        upstream: Upstream,
        options: ProxyOptions,
        tracer: trace.Tracer,
        tally: CallTally | None,
        conversation_id: str | None,
        chains: ResponseChains | None = None,
        parked: ParkedResponses | None = None,
    ) -> None:
        self.upstream = upstream
        self.parked = parked
        """Where a background response's call waits for its end (`_followups`)."""
        self.options = options
        self.tally = tally
        self.conversation_id = conversation_id
        self.chains = chains
        """Where a Responses call remembers its response id (the next turn's previous one)."""
        self.span = None
        if tally is not None:
            operation = OPERATIONS.get(tally.endpoint, semconv.OPERATION_CHAT)
            name = f"{operation} {tally.request_model}" if tally.request_model else operation
            self.span = tracer.start_span(
                name,
                context=otel_context.Context(),  # a root span: never a child of the proxy's work
                kind=SpanKind.CLIENT,
                start_time=tally.start_ns,
            )
            if conversation_id is not None:
                self.span.set_attribute(semconv.CONVERSATION_ID, conversation_id)

    def send(
        self, method: str, endpoint: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self.upstream.connection(self.options.connect_timeout)
        target = f"{self.upstream.base_path}/{endpoint}"
        if request.query_string:
            target += "?" + request.query_string.decode("latin-1")
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(self.options.timeout)
            conn.request(method, target, body=body, headers=dict(headers))
            return conn, conn.getresponse()
        except TimeoutError:
            conn.close()
            raise UpstreamFailure(
                504, "timeout", f"the upstream {self._where()} did not answer in time"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            reason = getattr(exc, "strerror", None) or exc.__class__.__name__
            raise UpstreamFailure(
                502,
                exc.__class__.__name__,
                f"the upstream {self._where()} is unreachable: {reason}",
            ) from None

    def _where(self) -> str:
        return f"{self.upstream.scheme}://{self.upstream.host}:{self.upstream.port}"

    def finish(self, error_type: str | None = None, end_ns: int | None = None) -> None:
        """Record the call (once); `error_type` marks a failure seen by the proxy itself. A
        background response not yet ended (its create answered, its stream cut or left) is
        parked instead, unless `end_ns` says when the call ends for good."""
        if self.span is None or self.tally is None:
            return
        if end_ns is None and self._parks(error_type):
            return
        span, self.span = self.span, None
        if error_type is not None and self.tally.error_type is None:
            self.tally.error_type = error_type
        attrs = self.tally.attributes(
            provider=self.options.provider or semconv.PROVIDER_OPENAI,
            server=(self.upstream.host, self.upstream.port),
        )
        span.set_attributes(attrs)
        response_id = self.tally.response_id
        if self.chains is not None and response_id and self.conversation_id:
            self.chains.remember(response_id, self.conversation_id)
        if attrs[semconv.OTELSTATS_OUTCOME] == "error":
            span.set_status(Status(StatusCode.ERROR, self.tally.error_type))
        span.end(end_time=time.time_ns() if end_ns is None else end_ns)

    def _parks(self, error_type: str | None) -> bool:
        tally = self.tally
        if not (
            self.parked is not None
            and tally is not None
            and tally.background
            and tally.status in WAITING
            and tally.response_id is not None
            and self.parked.park(tally.response_id, self, tally.final_outcome(), error_type)
        ):
            return False
        # A next turn on it (`previous_response_id`) may come before its end is seen.
        if self.chains is not None and self.conversation_id:
            self.chains.remember(tally.response_id, self.conversation_id)
        return True

    def give_up(
        self, outcome: Outcome, error_type: str | None, message: str | None, ended: float
    ) -> None:
        """Parked and never followed up (`_parked`): recorded as it stood then (its tally
        still holds how), ending when it was parked."""
        self.finish(error_type, end_ns=_wall_ns(ended, time.time_ns()))

    def settle(self, answer: Mapping[str, Any], since: float) -> None:
        """A follow-up answered the parked response finished: record it as that answer says."""
        tally = self.tally
        if tally is None:
            return
        tally.error_type = tally.outcome = None  # what it stood with when it was parked
        tally.finished = True
        tally.observe_body(answer)
        end_ns = time.time_ns()
        took = server_took(answer.get("created_at"), answer.get("completed_at"))
        if took is not None:
            since_ns = _wall_ns(since, end_ns)
            end_ns = min(end_ns, max(since_ns, tally.start_ns + round(took * 1e9)))
        self.finish(end_ns=end_ns)

    def resume(self, replayed: bool = False) -> None:
        """The rest of a parked response's stream is about to be relayed through this call;
        `replayed`: all of it, from the start (no `starting_after`), so its output is counted
        anew (the first chunk's time stays)."""
        if self.tally is not None:
            self.tally.error_type = self.tally.outcome = None
            if replayed:
                self.tally.chunks = 0

    def relay(
        self,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        hide_usage_chunk: bool,
    ) -> Iterator[bytes]:
        """Yield each SSE event the moment it is complete; record the call when the stream ends."""
        tally = self.tally
        splitter = SSESplitter()
        error_type: str | None = None
        try:
            while data := resp.read1(65536):
                for event in splitter.feed(data):
                    if tally is not None:
                        text, parsed = parse_event(event)
                        if text is not None and text.strip() == "[DONE]":
                            tally.finished = True
                        if parsed is not None:
                            answered = bool(tally.finish_reasons)  # before this event
                            tally.observe_event(parsed, time.time_ns())
                            if hide_usage_chunk and asked_usage(parsed, answered):
                                continue
                    yield event
            rest = splitter.rest()
            if rest:
                yield rest
            if tally is not None and tally.finish_reasons and tally.endpoint != "responses":
                tally.finished = True
        except GeneratorExit:
            if tally is not None:
                tally.outcome = "cancelled"  # the client went away
            raise
        except TimeoutError:
            error_type = "timeout"
        except (OSError, http.client.HTTPException) as exc:
            error_type = exc.__class__.__name__
        finally:
            conn.close()
            if error_type is not None and tally is not None:
                if tally.finished:  # the answer was whole: what broke after it is no failure
                    error_type = None
                else:  # cut short mid-stream, as for an instrumented call
                    tally.outcome = "incomplete"
            self.finish(error_type)
        if error_type is not None:
            raise UpstreamCut(f"the upstream cut the stream short ({error_type})")

    def whole(
        self,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        payload: bytes | None = None,
    ) -> Response:
        """Relay a whole (not streamed) answer, read for the record."""
        try:
            if payload is None:
                payload = resp.read()
        except TimeoutError:
            self.finish("timeout")
            return error_response(504, "the upstream did not finish its answer in time", "timeout")
        except (OSError, http.client.HTTPException) as exc:
            self.finish(exc.__class__.__name__)
            return error_response(
                502, "the upstream closed the connection mid-answer", "upstream_error"
            )
        finally:
            conn.close()
        if self.tally is not None:
            if not 200 <= resp.status < 300:
                self.tally.error_type = str(resp.status)
            else:
                observe_answer(self.tally, resp, payload)
        self.finish()
        return Response(payload, status=resp.status, headers=response_headers(resp))


def _wall_ns(moment: float, now_ns: int) -> int:
    """`moment` (`perf_counter`, as `_parked` keeps time) on the wall clock whose now is
    `now_ns`."""
    return now_ns - int((perf_counter() - moment) * 1e9)


def asked_usage(event: Any, answered: bool) -> bool:
    """Whether an event is the usage chunk the proxy asked for: usage with empty `choices`, as
    OpenAI sends it, or (LiteLLM's proxy, MLX servers) with choices that carry nothing, once the
    answer has finished."""
    if not isinstance(event, dict) or not event.get("usage"):
        return False
    choices = event.get("choices")
    if choices == []:
        return True
    return answered and isinstance(choices, list) and not any(map(carries_output, choices))


def observe_answer(tally: CallTally, resp: http.client.HTTPResponse, payload: bytes) -> None:
    """A whole 2xx answer, forwarded untouched: read for the record. One that is no JSON object
    (a web page, an empty body, a JSON list), or that answers a request for a stream, is a
    failure; one compressed in an encoding this cannot read, although identity was asked for,
    is recorded without usage."""
    if resp.getheader("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        readable = inflated(payload)
        if readable is None:
            return
        payload = readable
    try:
        answer = json.loads(payload)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        tally.error_type = semconv.NOT_AN_ANSWER
        return
    tally.observe_body(answer)
    if tally.streaming:  # a stream asked for, a whole answer given: an SSE client finds no event
        tally.error_type = tally.error_type or semconv.NOT_AN_ANSWER


INFLATED_MAX_BYTES = 64 * 1024 * 1024
"""A compressed answer is read for the record up to this size decompressed (the client gets it
whole either way): an answer that inflates beyond it is recorded without usage."""


def inflated(payload: bytes) -> bytes | None:
    """A gzip or deflate body decompressed (None for any other encoding: brotli, zstd, or one
    that inflates beyond INFLATED_MAX_BYTES)."""
    for wbits in (47, -15):  # gzip or zlib-wrapped deflate (auto-detected), raw deflate
        inflater = zlib.decompressobj(wbits)
        try:
            inflated = inflater.decompress(payload, INFLATED_MAX_BYTES)
        except zlib.error:
            continue
        return None if inflater.unconsumed_tail else inflated
    return None
