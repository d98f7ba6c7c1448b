"""The OpenAI wire format as the fake server speaks it: pure functions from a request to a reply.

No I/O here, so the HTTP server (`fake_server.py`) and in-process transports (benchmarks) share it.
`Reply` scripts one answer: content, usage dialect (OpenAI, vLLM, llama.cpp, none) and faults.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

UsageMode = Literal["final", "none", "continuous", "on_finish"]
"""final: OpenAI (a usage-only chunk when include_usage); none: never; continuous: vLLM
(cumulative usage on every chunk); on_finish: llama.cpp (usage + timings on the finish chunk)."""
Terminal = Literal[
    "completed", "incomplete", "failed", "error", "cancelled", "queued", "in_progress"
]
"""How a Responses answer ends (`error`: an error event in a stream); a retrieved response may
also still be going on (`queued`, `in_progress`)."""


@dataclass(frozen=True)
class Reply:
    """How the fake server answers one request (defaults: a normal, successful answer)."""

    text: str = "The quick brown fox jumps over the lazy dog."
    status: int = 200
    error_code: str | int | None = None
    error_message: str = "fake error"
    html_error: bool = False
    usage: UsageMode = "final"
    cut_after: int | None = None
    """Streams: stop after this many chunks without a finish reason or [DONE]."""
    cut_mode: Literal["eof", "reset"] = "eof"
    """eof: the body ends cleanly; reset: the connection drops mid-body (a transport error)."""
    stream_error_after: int | None = None
    """Streams: send an `{"error": ...}` event after this many chunks."""
    tool_call: bool = False
    finish_reason: str = "stop"
    terminal: Terminal = "completed"
    prompt_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    server_seconds: int = 0
    """Responses: how long the server says the response took (`completed_at - created_at`)."""
    token_delay: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    raw_body: bytes | None = None
    """Send exactly these bytes (with `status` and `content_type`): another server's wire format."""
    raw_events: tuple[bytes, ...] = ()
    """Stream exactly these SSE frames (already framed) instead of a rendered answer."""
    content_type: str = "application/json"


@dataclass
class Rendered:
    status: int
    content_type: str
    body: bytes = b""
    events: list[bytes] = field(default_factory=list)
    """SSE events (already framed); a non-empty list means a streamed body."""
    cut: Literal["eof", "reset"] | None = None
    headers: dict[str, str] = field(default_factory=dict)


TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = '{"city": "Paris", "unit": "celsius"}'


def tokens(text: str) -> list[str]:
    """The fake tokenizer: words with their leading space (one chunk = one token)."""
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]] if words else []


def _prompt_tokens(body: Mapping[str, Any], reply: Reply) -> int:
    if reply.prompt_tokens is not None:
        return reply.prompt_tokens
    source = body.get("messages") or body.get("input") or body.get("prompt") or ""
    return max(len(json.dumps(source).split()), 1)


def _usage_chat(prompt: int, completion: int, reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
    }


def _error(reply: Reply) -> Rendered:
    if reply.html_error:
        page = (
            f"<html><head><title>{reply.status}</title></head><body><h1>{reply.status} Bad Gateway"
        )
        return Rendered(reply.status, "text/html", (page + "</h1></body></html>").encode())
    error = {
        "message": reply.error_message,
        "type": "invalid_request_error" if reply.status < 500 else "server_error",
        "param": None,
        "code": reply.error_code,
    }
    return Rendered(reply.status, "application/json", json.dumps({"error": error}).encode())


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


DONE = b"data: [DONE]\n\n"


def render(method: str, path: str, body: Mapping[str, Any], reply: Reply, seq: int) -> Rendered:
    """The reply to one request; `seq` makes ids unique."""
    if reply.raw_events:
        events = list(reply.raw_events)
        return Rendered(
            reply.status, "text/event-stream", events=events, headers=dict(reply.headers)
        )
    if reply.raw_body is not None:
        return Rendered(
            reply.status, reply.content_type, reply.raw_body, headers=dict(reply.headers)
        )
    if reply.status >= 400:
        return _error(reply)
    route, _, query = path.partition("?")
    route = route.rstrip("/")
    stored = _STORED.search(route)
    if stored is not None:  # a stored (background) response, retrieved or cancelled
        return _stored(method, stored[1], stored[2], query, body, reply, seq)
    if method == "GET" and route.endswith("/models"):
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in MODELS]
        return Rendered(
            200, "application/json", json.dumps({"object": "list", "data": data}).encode()
        )
    builders = {
        "/chat/completions": _chat,
        "/completions": _completion,
        "/embeddings": _embeddings,
        "/responses": _responses,
        "/responses/compact": _compaction,
        "/responses/input_tokens": _input_tokens,
    }
    for suffix, builder in builders.items():
        if route.endswith(suffix):
            rendered = builder(body, reply, seq)
            rendered.headers.update(reply.headers)
            return rendered
    return Rendered(404, "application/json", b'{"error": {"message": "no such route"}}')


MODELS = ("fake-gpt-4o-mini", "fake-llama-3-8b", "fake-embed")


def _cut(events: list[bytes], reply: Reply) -> Rendered:
    if reply.cut_after is not None:
        return Rendered(
            200, "text/event-stream", events=events[: reply.cut_after], cut=reply.cut_mode
        )
    if reply.stream_error_after is not None:
        err = {"error": {"message": reply.error_message, "type": "server_error", "code": None}}
        cut = [*events[: reply.stream_error_after], _sse(err)]
        return Rendered(200, "text/event-stream", events=cut)
    return Rendered(200, "text/event-stream", events=events)


def _chat(body: Mapping[str, Any], reply: Reply, seq: int) -> Rendered:
    model = str(body.get("model", "fake"))
    n = int(body.get("n") or 1)
    prompt = _prompt_tokens(body, reply)
    pieces = [] if reply.tool_call else tokens(reply.text)
    finish = "tool_calls" if reply.tool_call else reply.finish_reason
    completion = n * (len(tokens(TOOL_ARGUMENTS)) if reply.tool_call else len(pieces))
    base = {"id": f"chatcmpl-fake{seq}", "created": 1700000000, "model": model}
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
        if reply.tool_call:
            function = {"name": TOOL_NAME, "arguments": TOOL_ARGUMENTS}
            message["content"] = None
            message["tool_calls"] = [{"id": "call_0", "type": "function", "function": function}]
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
            for i in range(n)
        ]
        payload = {
            **base,
            "object": "chat.completion",
            "choices": choices,
            "usage": None if reply.usage == "none" else _usage_chat(prompt, completion, reply),
            "system_fingerprint": "fp_fake",
        }
        return Rendered(200, "application/json", json.dumps(payload).encode())
    options = body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage")) and reply.usage != "none"
    continuous = reply.usage == "continuous"
    base = {**base, "object": "chat.completion.chunk", "system_fingerprint": "fp_fake"}
    events: list[bytes] = []
    emitted = 0

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        data: dict[str, Any] = {**base, "choices": choices}
        if include_usage:
            data["usage"] = None
        if continuous:
            data["usage"] = _usage_chat(prompt, emitted, reply)
        data.update(extra)
        return _sse(data)

    for i in range(n):
        events.append(chunk([_delta(i, {"role": "assistant", "content": ""})]))
    if reply.tool_call:
        for i in range(n):
            call = {"index": 0, "id": "call_0", "type": "function"}
            call["function"] = {"name": TOOL_NAME, "arguments": ""}
            events.append(chunk([_delta(i, {"tool_calls": [call]})]))
        for piece in tokens(TOOL_ARGUMENTS):
            for i in range(n):
                emitted += 1
                frag = {"index": 0, "function": {"arguments": piece}}
                events.append(chunk([_delta(i, {"tool_calls": [frag]})]))
    for piece in pieces:
        for i in range(n):
            emitted += 1
            events.append(chunk([_delta(i, {"content": piece})]))
    for i in range(n):
        extra: dict[str, Any] = {}
        if reply.usage == "on_finish" and i == n - 1:
            extra["usage"] = _usage_chat(prompt, completion, reply)
            extra["timings"] = {
                "prompt_n": prompt,
                "prompt_ms": 12.5,
                "prompt_per_second": prompt / 0.0125,
                "predicted_n": completion,
                "predicted_ms": 40.0,
                "predicted_per_second": completion / 0.04,
            }
        events.append(chunk([_delta(i, {}, finish)], **extra))
    if include_usage:
        usage_chunk = {**base, "choices": [], "usage": _usage_chat(prompt, completion, reply)}
        events.append(_sse(usage_chunk))
    events.append(DONE)
    return _cut(events, reply)


def _delta(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def _completion(body: Mapping[str, Any], reply: Reply, seq: int) -> Rendered:
    model = str(body.get("model", "fake"))
    prompt = _prompt_tokens(body, reply)
    pieces = tokens(reply.text)
    usage = {"prompt_tokens": prompt, "completion_tokens": len(pieces)}
    usage["total_tokens"] = prompt + len(pieces)
    base = {"id": f"cmpl-fake{seq}", "object": "text_completion", "created": 1700000000}
    base["model"] = model
    if not body.get("stream"):
        choice = {"index": 0, "text": reply.text, "logprobs": None, "finish_reason": "stop"}
        payload = {**base, "choices": [choice], "usage": None if reply.usage == "none" else usage}
        return Rendered(200, "application/json", json.dumps(payload).encode())
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events = [
        _sse(
            {**base, "choices": [{"index": 0, "text": p, "logprobs": None, "finish_reason": None}]}
        )
        for p in pieces
    ]
    end = {"index": 0, "text": "", "logprobs": None, "finish_reason": reply.finish_reason}
    events.append(_sse({**base, "choices": [end]}))
    if include_usage and reply.usage != "none":
        events.append(_sse({**base, "choices": [], "usage": usage}))
    events.append(DONE)
    return _cut(events, reply)


def _embeddings(body: Mapping[str, Any], reply: Reply, seq: int) -> Rendered:
    raw = body.get("input", "")
    inputs = [raw] if isinstance(raw, str) else list(raw)
    data = []
    for i, _ in enumerate(inputs):
        vector = [round(0.1 * (i + 1) + 0.01 * k, 4) for k in range(8)]
        embedding: Any = vector
        if body.get("encoding_format") == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    prompt = _prompt_tokens({"input": inputs}, reply)
    payload = {
        "object": "list",
        "data": data,
        "model": str(body.get("model", "fake-embed")),
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
    return Rendered(200, "application/json", json.dumps(payload).encode())


_STORED = re.compile(r"/responses/(?!compact$|input_tokens$)([^/]+)(/cancel)?$")


def _stored(
    method: str,
    response_id: str,
    cancel: str | None,
    query: str,
    body: Mapping[str, Any],
    reply: Reply,
    seq: int,
) -> Rendered:
    """`GET /responses/{id}` (the response as it stands, by `reply.terminal`; with `stream=true`,
    its events after `starting_after`, as a background response's stream resumes) and `POST
    /responses/{id}/cancel` (the response, cancelled); `DELETE /responses/{id}` deletes it."""
    params = urllib.parse.parse_qs(query)
    if method == "POST" and cancel:
        payload = _response_object({}, reply, seq, "cancelled", response_id)
        return Rendered(200, "application/json", json.dumps(payload).encode())
    if method == "DELETE" and not cancel:
        payload = {"id": response_id, "object": "response", "deleted": True}
        return Rendered(200, "application/json", json.dumps(payload).encode())
    if method != "GET" or cancel:
        return Rendered(405, "application/json", b'{"error": {"message": "method not allowed"}}')
    if params.get("stream") == ["true"]:
        after = int(params.get("starting_after", ["-1"])[0])
        events = list(_response_events({"background": True}, reply, seq, response_id))
        return _cut(events[after + 1 :], reply)
    payload = _response_object({"background": True}, reply, seq, reply.terminal, response_id)
    return Rendered(200, "application/json", json.dumps(payload).encode())


def _response_object(
    body: Mapping[str, Any], reply: Reply, seq: int, status: str, response_id: str | None = None
) -> dict[str, Any]:
    going_on = status in ("queued", "in_progress")
    text = reply.text if not going_on else ""
    output_tokens = len(tokens(reply.text))
    prompt = _prompt_tokens(body, reply)
    message = {
        "type": "message",
        "id": f"msg_fake{seq}",
        "status": "completed" if status == "completed" else "in_progress",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    done = status in ("completed", "incomplete")
    return {
        "id": response_id or f"resp_fake{seq}",
        "object": "response",
        "created_at": 1700000000,
        "completed_at": 1700000000 + reply.server_seconds if status == "completed" else None,
        "status": status,
        "background": bool(body.get("background")),
        "model": str(body.get("model", "fake")),
        "output": [message] if not going_on else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": {"code": "server_error", "message": reply.error_message}
        if status == "failed"
        else None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": reply.cached_tokens},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
            "total_tokens": prompt + output_tokens,
        }
        if done and reply.usage != "none"
        else None,
    }


def _input_tokens(body: Mapping[str, Any], reply: Reply, seq: int) -> Rendered:
    """`POST /responses/input_tokens`: what the request's input would count (no model pass)."""
    payload = {"object": "response.input_tokens", "input_tokens": _prompt_tokens(body, reply)}
    return Rendered(200, "application/json", json.dumps(payload).encode())


def _compaction(body: Mapping[str, Any], reply: Reply, seq: int) -> Rendered:
    """`POST /responses/compact`: the conversation's user messages, then one compaction item."""
    usage = _response_object(body, reply, seq, "completed")["usage"]
    payload = {
        "id": f"cmp_fake{seq}",
        "object": "response.compaction",
        "created_at": 1700000000,
        "output": [{"type": "compaction", "id": f"cmp_item{seq}", "encrypted_content": "x"}],
        "usage": usage,
    }
    return Rendered(200, "application/json", json.dumps(payload).encode())


def _responses(body: Mapping[str, Any], reply: Reply, seq: int) -> Rendered:
    if not body.get("stream"):
        # A background create answers at once, the response still to come.
        status = "queued" if body.get("background") else reply.terminal
        payload = _response_object(body, reply, seq, status)
        return Rendered(200, "application/json", json.dumps(payload).encode())
    events = list(_response_events(body, reply, seq))
    return _cut(events, reply)


def _response_events(
    body: Mapping[str, Any], reply: Reply, seq: int, response_id: str | None = None
) -> Iterator[bytes]:
    counter = iter(range(10_000))

    def event(kind: str, **data: Any) -> bytes:
        return _sse({"type": kind, "sequence_number": next(counter), **data}, event=kind)

    def response(status: str) -> dict[str, Any]:
        return _response_object(body, reply, seq, status, response_id)

    yield event("response.created", response=response("in_progress"))
    item = {"type": "message", "id": f"msg_fake{seq}", "status": "in_progress", "role": "assistant"}
    yield event("response.output_item.added", output_index=0, item={**item, "content": []})
    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    yield event("response.content_part.added", **where, part=part)
    for piece in tokens(reply.text):
        yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
    yield event("response.output_text.done", **where, text=reply.text, logprobs=[])
    if reply.terminal == "error":
        yield event("error", code="server_error", message=reply.error_message, param=None)
        return
    yield event(f"response.{reply.terminal}", response=response(reply.terminal))
