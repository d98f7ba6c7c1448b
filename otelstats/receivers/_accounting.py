"""What the proxy learns about one call from the OpenAI wire format, as GenAI span attributes.

Reads request bodies, JSON responses and SSE events of chat completions, Responses, legacy
completions and embeddings. Everything read is untrusted: wrong shapes are ignored, never raised.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import semconv
from .._parked import WAITING
from ..records import Outcome

OPERATIONS: Mapping[str, str] = {
    "chat/completions": semconv.OPERATION_CHAT,
    "responses": semconv.OPERATION_CHAT,
    "responses/compact": semconv.OPERATION_CHAT,  # a model pass over a conversation, with usage
    "completions": semconv.OPERATION_TEXT_COMPLETION,
    "embeddings": semconv.OPERATION_EMBEDDINGS,
}
MAX_EVENT_BYTES = 4 * 1024 * 1024
"""An SSE event longer than this is forwarded but no longer parsed (a broken upstream)."""


_STARTING_EVENTS = frozenset({"response.created", "response.queued", "response.in_progress"})


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _generated(choice: Mapping[str, Any]) -> bool:
    """A stream choice (JSON) brings generated output: text, or any output field of its delta."""
    delta = _dict(choice.get("delta"))
    return bool(choice.get("text")) or any(delta.get(key) for key in semconv.DELTA_OUTPUT)


def carries_output(choice: Any) -> bool:
    """A stream choice (JSON) brings output or the end of the answer (a finish reason)."""
    choice = _dict(choice)
    return bool(choice.get("finish_reason")) or _generated(choice)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass
class CallTally:
    """The facts of one proxied call, filled in as the response arrives."""

    endpoint: str
    start_ns: int
    request_model: str | None = None
    streaming: bool = False
    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    first_chunk_ns: int | None = None
    chunks: int = 0
    finish_reasons: list[str] = field(default_factory=list)
    finished: bool = False
    """The stream reached its natural end ([DONE] or a terminal Responses event)."""
    error_type: str | None = None
    outcome: Outcome | None = None
    response_id: str | None = None
    """Responses API: the response's id (the next turn's `previous_response_id`)."""
    status: str | None = None
    """Responses API: the response's status as last seen (`queued` ... `completed`)."""
    background: bool = False
    """Responses API: a background response, which goes on at the server whatever becomes of
    this request (`_followups`)."""

    @classmethod
    def for_request(cls, endpoint: str, body: Mapping[str, Any], start_ns: int) -> CallTally:
        model = body.get("model")
        return cls(
            endpoint=endpoint,
            start_ns=start_ns,
            request_model=model if isinstance(model, str) and model else None,
            streaming=body.get("stream") is True,
        )

    def observe_body(self, payload: Any) -> None:
        """A complete (non-streaming) JSON response."""
        body = _dict(payload)
        # A failure reported in a 200 answer (OpenRouter), or a failed Response's own error.
        self.error_type = self.error_type or semconv.answered_error(body.get("error"))
        if self.endpoint == "responses":
            self._observe_response_object(body)
            return
        self._observe_model(body)
        self._observe_usage(_dict(body.get("usage")))
        for choice in body.get("choices") or ():
            self._observe_finish(_dict(choice).get("finish_reason"))

    def observe_event(self, payload: Any, now_ns: int) -> None:
        """One parsed SSE `data:` payload of a stream."""
        event = _dict(payload)
        if "error" in event and event.get("error"):
            self.error_type = self.error_type or "stream_error"
        if self.endpoint == "responses":
            kind = event.get("type")
            if not isinstance(kind, str):
                return
            if kind.endswith(".delta"):
                self._content_chunk(now_ns)
            elif kind in semconv.RESPONSE_TERMINAL_EVENTS:
                self.finished = True
                self._observe_response_object(_dict(event.get("response")))
            elif kind in _STARTING_EVENTS:  # its id, status, and whether it is a background one
                self._observe_response_object(_dict(event.get("response")))
            elif kind == "error":  # named by its code, as for an instrumented call
                self.error_type = self.error_type or semconv.answered_error(event) or "error"
            return
        self._observe_model(event)
        self._observe_usage(_dict(event.get("usage")))
        top_usage = bool(event.get("usage"))
        for raw in event.get("choices") or ():
            choice = _dict(raw)
            self._observe_finish(choice.get("finish_reason"))
            if not top_usage and "usage" in choice:  # Moonshot: in the stream's finish choice
                self._observe_usage(_dict(choice["usage"]))
            if _generated(choice):
                self._content_chunk(now_ns)

    def _content_chunk(self, now_ns: int) -> None:
        if self.first_chunk_ns is None:
            self.first_chunk_ns = now_ns
        self.chunks += 1

    def _observe_model(self, body: Mapping[str, Any]) -> None:
        model = body.get("model")
        if isinstance(model, str) and model:
            self.response_model = model

    def _observe_finish(self, reason: Any) -> None:
        if isinstance(reason, str) and reason:
            self.finish_reasons.append(reason)

    def _observe_usage(self, usage: Mapping[str, Any]) -> None:
        if not usage:
            return
        prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
        details_in = _dict(usage.get("prompt_tokens_details") or usage.get("input_tokens_details"))
        details_out = _dict(
            usage.get("completion_tokens_details") or usage.get("output_tokens_details")
        )
        reasoning = _int(details_out.get("reasoning_tokens"))
        if prompt is not None and completion is not None:
            total = usage.get("total_tokens")
            completion, reasoning = semconv.with_hidden_output(prompt, completion, reasoning, total)
        if prompt is not None:
            self.input_tokens = prompt
        if completion is not None:
            self.output_tokens = completion
        cached = _int(details_in.get("cached_tokens"))
        if cached is None:  # named beside the counts (Moonshot, DeepSeek)
            cached = _int(semconv.cached_elsewhere(usage))
        self.cached_tokens = cached or self.cached_tokens
        self.reasoning_tokens = reasoning or self.reasoning_tokens

    def _observe_response_object(self, response: Mapping[str, Any]) -> None:
        self._observe_model(response)
        response_id = response.get("id")
        if isinstance(response_id, str) and response_id:
            self.response_id = response_id
        self._observe_usage(_dict(response.get("usage")))
        if response.get("background") is True:
            self.background = True
        status = response.get("status")
        if not isinstance(status, str):
            return
        self.status = status
        # Read as for an instrumented call (`_responses_state.response_outcome`): a failed
        # response is an error named by its code; an incomplete one stopped short of its end by
        # a limit the request set (like chat's finish reason `length`) and names why; any
        # other status is its finish reason.
        if status == "failed":
            failed = semconv.answered_error(response.get("error")) or "response.failed"
            self.error_type = self.error_type or failed
        elif status == "incomplete":
            reason = _dict(response.get("incomplete_details")).get("reason")
            self._observe_finish(reason or "incomplete")
        elif status not in WAITING:
            self._observe_finish(status)
            if status == "cancelled":
                self.outcome = "cancelled"

    def attributes(self, *, provider: str, server: tuple[str, int]) -> dict[str, Any]:
        """The span attributes (GenAI semantic conventions + otelstats' own)."""
        attrs: dict[str, Any] = {
            semconv.OPERATION_NAME: OPERATIONS.get(self.endpoint, semconv.OPERATION_CHAT),
            semconv.PROVIDER_NAME: provider,
            semconv.REQUEST_STREAM: self.streaming,
            semconv.SERVER_ADDRESS: server[0],
            semconv.SERVER_PORT: server[1],
        }
        optional = {
            semconv.REQUEST_MODEL: self.request_model,
            semconv.RESPONSE_MODEL: self.response_model,
            semconv.RESPONSE_ID: self.response_id,
            semconv.USAGE_INPUT_TOKENS: self.input_tokens,
            semconv.USAGE_OUTPUT_TOKENS: self.output_tokens,
            semconv.USAGE_CACHE_READ_INPUT_TOKENS: self.cached_tokens,
            semconv.USAGE_REASONING_OUTPUT_TOKENS: self.reasoning_tokens,
            semconv.ERROR_TYPE: self.error_type,
        }
        attrs.update({k: v for k, v in optional.items() if v is not None})
        reasons = self.finish_reasons
        if not reasons and not self.streaming and self.status in WAITING:
            reasons = [self.status]  # a background response as it stood: `queued`
        if reasons:
            attrs[semconv.RESPONSE_FINISH_REASONS] = tuple(dict.fromkeys(reasons))
        if self.streaming:
            if self.first_chunk_ns is not None:
                ttfc = (self.first_chunk_ns - self.start_ns) / 1e9
                attrs[semconv.RESPONSE_TIME_TO_FIRST_CHUNK] = ttfc
            if self.output_tokens is None and self.chunks:
                # No usage in the stream: one token per content chunk, flagged as counted.
                attrs[semconv.USAGE_OUTPUT_TOKENS] = self.chunks
                attrs[semconv.OTELSTATS_TOKENS_SOURCE] = "counted"
        attrs[semconv.OTELSTATS_OUTCOME] = self.final_outcome()
        return attrs

    def final_outcome(self) -> Outcome:
        if self.outcome is not None:
            return self.outcome
        if self.error_type is not None:
            return "error"
        if self.streaming and not self.finished:
            return "incomplete"
        return "ok"


class SSESplitter:
    """Cuts a byte stream into whole SSE events (ending with a blank line) as they complete."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._buffer += data
        while True:
            end = _event_end(self._buffer)
            if end < 0:
                return
            event = bytes(self._buffer[:end])
            del self._buffer[:end]
            yield event

    def rest(self) -> bytes:
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest


def _event_end(buffer: bytearray) -> int:
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n", b"\r\r") if (i := buffer.find(sep)) >= 0]
    return min(ends) if ends else -1


def event_data(event: bytes) -> str | None:
    """The joined `data:` lines of one SSE event, or None when it has none."""
    if len(event) > MAX_EVENT_BYTES:
        return None
    lines = [
        line[5:].removeprefix(" ")
        for line in event.decode("utf-8", "replace").splitlines()
        if line.startswith("data:")
    ]
    return "\n".join(lines) if lines else None


def parse_event(event: bytes) -> tuple[str | None, Any]:
    """(data, parsed JSON or None) of one SSE event; `[DONE]` and junk parse to None."""
    data = event_data(event)
    if data is None or data.strip() == "[DONE]":
        return data, None
    try:
        return data, json.loads(data)
    except ValueError:
        return data, None
