"""Wire-format tests: the exact bytes OpenAI, Azure OpenAI, llama.cpp, Ollama and vLLM send (as
their docs and source describe them) replayed through FakeOpenAIServer to the real openai SDK,
bare and instrumented; the user-visible results must be identical and the CallRecord right.

Sources of each sample (read for these tests):
- OpenAI: platform.openai.com API reference, chat streaming (`usage: null` on every chunk when
  `stream_options.include_usage`, then a chunk with empty `choices` and the usage; `obfuscation`);
  error bodies `{"error": {..., "code": "model_not_found" | "rate_limit_exceeded"}}`.
- llama.cpp: ggml-org/llama.cpp tools/server/server-task.cpp `to_json_oaicompat_chat_stream`
  (finish chunk, then the usage chunk when include_usage, `timings` on the last chunk),
  `result_timings::to_json`, `format_error_response` (`{"code": 500, "type": "server_error"}`);
  older examples/server/utils.hpp after PR #6495: usage on the finish chunk, no `[DONE]`.
- Ollama: ollama/ollama openai/openai.go (`ToChunk`, `fp_ollama`, `NewError`: code null,
  `api_error`) and middleware/openai.go (usage chunk only when include_usage).
- vLLM: vllm/entrypoints/openai/serving_chat.py (`continuous_usage_stats` cumulative usage on
  every chunk, `exclude_unset` dumps, streaming error event then `[DONE]`); `ErrorResponse` with an
  integer `code`, both the newer `{"error": {...}}` and the older top-level shape.
- Azure OpenAI: learn.microsoft.com, content filtering (the prompt's filter results in a first
  chunk with no choices, an empty id and model; annotation chunks of the asynchronous filter,
  whose choice has no delta), as its users' bug reports show the chunks.
- nginx: its built-in 502 page (CRLF lines, text/html) in front of any of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from otelstats import semconv
from otelstats.fake_server import FakeOpenAIServer, Reply
from otelstats.records import CallRecord
from otelstats.usage_request import sends_usage_unasked

from .conftest import MESSAGES, Otel, differential, needs_responses

TEXT = ("Foxes", " are", " clever", ".")
PROMPT, COMPLETION = 24, 5  # the servers' own counts: 5 tokens arrive in 4 content chunks
CREATED = 1753000000
GPT, LLAMA, OLLAMA, VLLM = (
    "gpt-4o-mini-2024-07-18",
    "qwen2.5-1.5b-instruct",
    "llama3.2:1b",
    "Qwen/Qwen2.5-1.5B-Instruct",
)
TIMINGS = {
    "cache_n": 0,
    "prompt_n": PROMPT,
    "prompt_ms": 48.1,
    "prompt_per_token_ms": 2.004,
    "prompt_per_second": 498.96,
    "predicted_n": COMPLETION,
    "predicted_ms": 61.2,
    "predicted_per_token_ms": 12.24,
    "predicted_per_second": 81.7,
}
USAGE = {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION, "total_tokens": 29}
OPENAI_USAGE = {
    **USAGE,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
LLAMA_USAGE = {**USAGE, "prompt_tokens_details": {"cached_tokens": 0}}


def frames(*events: Any, done: bool = True, sort_keys: bool = False) -> Reply:
    """Compact JSON per `data:` line, as every one of these servers writes it (llama.cpp's JSON
    library keeps object keys sorted)."""
    dumps = [json.dumps(e, separators=(",", ":"), sort_keys=sort_keys) for e in events]
    out = [f"data: {text}\n\n".encode() for text in dumps]
    return Reply(raw_events=(*out, b"data: [DONE]\n\n") if done else tuple(out))


def body(status: int, payload: Any) -> Reply:
    return Reply(status=status, raw_body=json.dumps(payload).encode())


def head(chunk_id: str, model: str, **more: Any) -> dict[str, Any]:
    base = {"id": chunk_id, "object": "chat.completion.chunk", "created": CREATED, "model": model}
    return base | more


def openai_stream(include_usage: bool) -> Reply:
    base = head("chatcmpl-BvP7sA4Yy2bJ2Qd6", GPT, service_tier="default")
    base["system_fingerprint"] = "fp_62a23a81ef"
    usage = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], **usage, "obfuscation": "Xw9"}

    first = chunk({"role": "assistant", "content": "", "refusal": None})
    events = [first, *(chunk({"content": t}) for t in TEXT), chunk({}, "stop")]
    if include_usage:
        events.append({**base, "choices": [], "usage": OPENAI_USAGE, "obfuscation": "q1"})
    return frames(*events)


def llama_stream(include_usage: bool) -> Reply:
    base = head("chatcmpl-1xWkRZ8wQmT", LLAMA, system_fingerprint="b6097-9515c613")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"finish_reason": finish, "index": 0, "delta": delta}]}

    first = chunk({"role": "assistant", "content": None})
    events = [first, *(chunk({"content": t}) for t in TEXT), chunk({}, "stop")]
    if include_usage:
        events.append({**base, "choices": [], "usage": LLAMA_USAGE})
    events[-1]["timings"] = TIMINGS  # on the last chunk: the usage chunk when there is one
    return frames(*events, sort_keys=True)


def llama_old_stream(include_usage: bool) -> Reply:
    """Before the 2025 rewrite: usage on the finish chunk, whatever was asked; no [DONE]."""
    base = head("chatcmpl-Xq3", LLAMA)

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"finish_reason": finish, "index": 0, "delta": delta}]}

    events = [chunk({"role": "assistant"}), *(chunk({"content": t}) for t in TEXT)]
    events.append({**chunk({}, "stop"), "usage": USAGE})
    return frames(*events, done=False, sort_keys=True)


def ollama_stream(include_usage: bool) -> Reply:
    base = head("chatcmpl-768", OLLAMA, system_fingerprint="fp_ollama")

    def chunk(content: str, finish: str | None = None) -> dict[str, Any]:
        delta = {"role": "assistant", "content": content}
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [*(chunk(t) for t in TEXT), chunk("", "stop")]  # the finish rides a content chunk
    if include_usage:
        events.append({**base, "choices": [], "usage": USAGE})
    return frames(*events)


def vllm_stream(include_usage: bool, continuous: bool = False) -> Reply:
    base = head("chatcmpl-5f8c2f0c9b1e4", VLLM)
    steps: list[tuple[dict[str, Any], int, str | None]] = [
        ({"role": "assistant", "content": ""}, 0, None),
        *(({"content": t}, n, None) for n, t in enumerate(TEXT, 1)),
        ({"content": ""}, COMPLETION, "stop"),  # the EOS token: counted, no text
    ]
    events = []
    for delta, done_tokens, finish in steps:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        event: dict[str, Any] = {**base, "choices": [choice]}
        if finish:
            choice["stop_reason"] = None
        if continuous:  # cumulative: summing it would give 0+1+2+3+4+5+5
            total = PROMPT + done_tokens
            event["usage"] = {"prompt_tokens": PROMPT, "total_tokens": total}
            event["usage"]["completion_tokens"] = done_tokens
        events.append(event)
    if include_usage:
        events.append({**base, "choices": [], "usage": USAGE})
    return frames(*events)


MOONSHOT = "moonshot-v1-8k"
MOONSHOT_USAGE = {**USAGE, "cached_tokens": 16}


def moonshot_stream(include_usage: bool) -> Reply:
    """Moonshot (platform.moonshot.ai docs, streaming; its users' reports, earendil-works/pi#2017):
    the usage rides in the finish chunk's choice, whatever was asked, with its context cache's
    `cached_tokens` beside the counts."""
    base = head("cmpl-1305b94c570f447fbde3180560736287", MOONSHOT)

    def chunk(delta: dict[str, Any], **more: Any) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, **more}]}

    events = [chunk({"role": "assistant", "content": ""}, finish_reason=None)]
    events += [chunk({"content": t}, finish_reason=None) for t in TEXT]
    events.append(chunk({}, finish_reason="stop", usage=MOONSHOT_USAGE))
    return frames(*events)


def empty_choice_usage_stream(include_usage: bool, choice: dict[str, Any]) -> Reply:
    """A usage chunk whose `choices` is not the spec's `[]` but one choice that carries nothing,
    after the finish chunk: LiteLLM's proxy (its synthetic usage chunk, BerriAI/litellm#28735,
    #8450) and MLX servers (ARahim3/mlx-dspark#37)."""
    base = head("chatcmpl-8c1f0b2e", GPT)

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": ""})]
    events += [*(chunk({"content": t}) for t in TEXT), chunk({}, "stop")]
    if include_usage:
        events.append({**base, "choices": [choice], "usage": USAGE})
    return frames(*events)


LITELLM_USAGE_CHOICE = {
    "finish_reason": None,
    "index": 0,
    "delta": {"content": None, "role": None, "function_call": None, "tool_calls": None},
    "logprobs": None,
}


AZURE = "gpt-4o-2024-08-06"
SAFE = {
    kind: {"filtered": False, "severity": "safe"}
    for kind in ("hate", "self_harm", "sexual", "violence")
}


def azure_stream(include_usage: bool) -> Reply:
    """Azure OpenAI: the prompt's filter results first, in a chunk with no choices and an empty
    id and model; filter results on every choice; with the asynchronous filter, annotation
    chunks whose choice carries no delta (learn.microsoft.com, content filtering, streaming)."""
    usage = {"usage": None} if include_usage else {}
    empty = {"id": "", "object": "", "created": 0, "model": "", **usage}
    prompt = {**empty, "choices": [], "prompt_filter_results": [
        {"prompt_index": 0, "content_filter_results": SAFE}]}  # fmt: skip
    base = head("chatcmpl-AzR7x", AZURE, system_fingerprint="fp_b705f0c291", **usage)

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "finish_reason": finish, "delta": delta,
                  "content_filter_results": SAFE if delta.get("content") else {}}  # fmt: skip
        return {**base, "choices": [choice]}

    def annotation(start: int, end: int) -> dict[str, Any]:
        offsets = {"check_offset": 0, "start_offset": start, "end_offset": end}
        choice = {"index": 0, "finish_reason": None, "content_filter_results": SAFE,
                  "content_filter_offsets": offsets}  # fmt: skip
        return {**empty, "choices": [choice]}

    contents = [chunk({"content": t}) for t in TEXT]
    events = [prompt, chunk({"role": "assistant", "content": ""}), *contents[:2], annotation(0, 9)]
    events += [*contents[2:], chunk({}, "stop"), annotation(9, 20)]
    if include_usage:
        events.append({**base, "choices": [], "usage": OPENAI_USAGE})
    return frames(*events)


@dataclass(frozen=True)
class StreamCase:
    wire: Callable[[bool], Reply]
    model: str
    options: dict[str, Any] | None = None
    """The user's own `stream_options`."""
    tokens: tuple[int | None, int, str] = (PROMPT, COMPLETION, "reported")
    timings: bool = False
    """llama.cpp: `timings` kept on the span (and moved by the server when usage is asked)."""
    injects: bool = True
    """Whether otelstats adds include_usage to this request."""


STREAMS = {
    "openai": StreamCase(openai_stream, GPT),
    "azure": StreamCase(azure_stream, AZURE),
    "llama.cpp": StreamCase(llama_stream, LLAMA, timings=True),
    "llama.cpp-old": StreamCase(llama_old_stream, LLAMA),
    "ollama": StreamCase(ollama_stream, OLLAMA),
    "ollama-ignores-option": StreamCase(
        lambda _: ollama_stream(False), OLLAMA, tokens=(None, 4, "counted")
    ),
    "vllm": StreamCase(vllm_stream, VLLM),
    "moonshot": StreamCase(moonshot_stream, MOONSHOT),
    "litellm-proxy": StreamCase(
        lambda usage: empty_choice_usage_stream(usage, LITELLM_USAGE_CHOICE), GPT
    ),
    "mlx": StreamCase(
        lambda usage: empty_choice_usage_stream(usage, {"index": 0, "delta": {}}), GPT
    ),
    "vllm-continuous": StreamCase(
        lambda usage: vllm_stream(usage, continuous=True),
        VLLM,
        options={"include_usage": True, "continuous_usage_stats": True},
    ),
    # Continuous usage asked without include_usage: vLLM sends none. Adding include_usage would
    # put usage on every chunk the user sees, so otelstats leaves the request alone and counts.
    "vllm-continuous-only": StreamCase(
        lambda usage: vllm_stream(usage, continuous=usage),
        VLLM,
        options={"continuous_usage_stats": True},
        tokens=(None, len(TEXT), "counted"),
        injects=False,
    ),
}

View = tuple[list[Any], tuple[Any, ...] | None]


def user_view(base_url: str, kwargs: dict[str, Any], aio: bool, via: str | None = None) -> View:
    """What the user's code sees: every chunk (or the object) and the exception, as plain data.
    `via`: an HTTP proxy to send the request through (to reach `base_url`'s host here)."""
    seen: list[Any] = []

    def sync() -> None:
        http = openai.DefaultHttpxClient(proxy=via) if via else None
        with openai.OpenAI(base_url=base_url, api_key="k", max_retries=0, http_client=http) as sdk:
            result = sdk.chat.completions.create(**kwargs)
            if not kwargs["stream"]:
                seen.append(result.to_dict())
                return
            for chunk in result:
                seen.append(chunk.to_dict())

    async def run_async() -> None:
        http = openai.DefaultAsyncHttpxClient(proxy=via) if via else None
        async with openai.AsyncOpenAI(
            base_url=base_url, api_key="k", max_retries=0, http_client=http
        ) as sdk:
            result = await sdk.chat.completions.create(**kwargs)
            if not kwargs["stream"]:
                seen.append(result.to_dict())
                return
            async for chunk in result:
                seen.append(chunk.to_dict())

    try:
        asyncio.run(run_async()) if aio else sync()
    except openai.APIError as exc:
        status = getattr(exc, "status_code", None)
        return seen, (type(exc).__name__, str(exc), status, exc.body, exc.code, exc.type)
    return seen, None


def replay(
    server: FakeOpenAIServer, bare: Reply, instrumented: Reply, aio: bool, **kwargs: Any
) -> tuple[View, View, CallRecord, Otel]:
    """The same call twice: uninstrumented, then instrumented (each answered as that server
    answers the request it gets)."""
    kwargs = {"messages": MESSAGES, "stream": False, **kwargs}
    replies = iter((bare, instrumented))

    def call() -> View:
        server.push(next(replies))
        return user_view(server.base_url, kwargs, aio)

    plain, seen, otel = differential(call)
    assert len(server.requests) == 2  # no retry, no extra request
    return plain, seen, otel.record(), otel


def _without_timings(view: View) -> View:
    return [{k: v for k, v in c.items() if k != "timings"} for c in view[0]], view[1]


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("name", list(STREAMS))
def test_stream(server: FakeOpenAIServer, name: str, aio: bool) -> None:
    case = STREAMS[name]
    user_usage = bool((case.options or {}).get("include_usage"))
    kwargs: dict[str, Any] = {"model": case.model, "stream": True}
    if case.options is not None:
        kwargs["stream_options"] = case.options
    plain, seen, record, otel = replay(
        server, case.wire(user_usage), case.wire(case.injects or user_usage), aio, **kwargs
    )

    # The server got what the samples assume: the user's options bare, include_usage instrumented.
    bare_req, instr_req = (r.body for r in server.requests)
    assert bare_req.get("stream_options") == case.options
    assert instr_req.get("stream_options", {}).get("include_usage", False) is case.injects
    if case.timings:
        # Known: asked for usage, llama.cpp moves `timings` from the finish chunk to the usage
        # chunk that otelstats hides (the record keeps them, below).
        assert "timings" in plain[0][-1]
        plain, seen = _without_timings(plain), _without_timings(seen)
    assert seen == plain
    assert plain[1] is None

    assert (record.input_tokens, record.output_tokens, record.tokens_source) == case.tokens
    assert (record.outcome, record.error_type, record.streaming) == ("ok", None, True)
    assert record.finish_reasons == ("stop",)
    assert record.response_model == case.model
    assert (record.time_to_first_chunk_s or 0) > 0
    attrs = otel.finished()[0].attributes or {}
    assert attrs[semconv.RESPONSE_ID] == next(c["id"] for c in plain[0] if c["id"])
    if case.timings:
        assert attrs["llama_cpp.timings.predicted_per_second"] == TIMINGS["predicted_per_second"]
        assert attrs["llama_cpp.timings.prompt_n"] == PROMPT
    else:
        assert not any(k.startswith("llama_cpp.") for k in attrs)


OPENROUTER = "openai/gpt-4o-mini"


def openrouter_stream() -> Reply:
    """OpenRouter's stream (openrouter.ai/docs, streaming; its users' reports of the usage chunk,
    Effect-TS/effect#6116, 2026-03): a keep-alive comment, the chunks, then a usage-only chunk
    with the call's `cost`, whether or not usage was asked for (its `include_usage` "has no
    effect")."""
    base = head("gen-1753000000-aBcDeF", OPENROUTER, provider="OpenAI")

    def chunk(content: str, finish: str | None = None) -> dict[str, Any]:
        delta = {"role": "assistant", "content": content}
        choice = {"index": 0, "delta": delta, "finish_reason": finish,
                  "native_finish_reason": finish, "logprobs": None}  # fmt: skip
        return {**base, "choices": [choice]}

    usage = {**USAGE, "cost": 0.000093, "is_byok": False,
             "prompt_tokens_details": {"cached_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0}}  # fmt: skip
    events = [chunk(""), *(chunk(t) for t in TEXT), chunk("", "stop")]
    reply = frames(*events, {**base, "choices": [], "usage": usage})
    return dataclasses.replace(
        reply, raw_events=(b": OPENROUTER PROCESSING\n\n", *reply.raw_events)
    )


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
def test_a_server_that_sends_usage_unasked_is_not_asked(
    server: FakeOpenAIServer, aio: bool
) -> None:
    """OpenRouter ends every stream with its usage and cost. Asking for usage there would make
    otelstats hide that chunk from a user who always gets it: it is not asked, the chunk goes
    through, and the record reads it. The SDK reaches `openrouter.ai` through an HTTP proxy,
    which is the fake server."""
    kwargs = {"messages": MESSAGES, "stream": True, "model": OPENROUTER}

    def call() -> View:
        server.push(openrouter_stream())
        via = f"http://127.0.0.1:{server.port}"
        return user_view("http://openrouter.ai/api/v1", kwargs, aio, via=via)

    plain, seen, otel = differential(call)
    assert [r.path for r in server.requests] == ["http://openrouter.ai/api/v1/chat/completions"] * 2
    assert "stream_options" not in server.requests[1].body
    assert seen == plain
    assert plain[0][-1]["usage"]["cost"] == 0.000093  # the user keeps the chunk they always get
    record = otel.record()
    assert (record.input_tokens, record.output_tokens, record.tokens_source) == (
        PROMPT,
        COMPLETION,
        "reported",
    )
    assert (record.server_address, record.outcome, record.finish_reasons) == (
        "openrouter.ai",
        "ok",
        ("stop",),
    )


@pytest.mark.parametrize(
    ("host", "unasked"),
    [("openrouter.ai", True), ("OpenRouter.AI.", True), ("eu.openrouter.ai", True),
     ("notopenrouter.ai", False), ("openrouter.ai.example.com", False),
     ("api.openai.com", False), (None, False)],
)  # fmt: skip
def test_which_servers_send_usage_unasked(host: str | None, unasked: bool) -> None:
    assert sends_usage_unasked(host) is unasked


ANSWER = {"role": "assistant", "content": "".join(TEXT)}
NON_STREAMS = {
    "openai": (GPT, {
        "id": "chatcmpl-BvP7t", "object": "chat.completion", "created": CREATED, "model": GPT,
        "choices": [{"index": 0, "message": {**ANSWER, "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": OPENAI_USAGE, "service_tier": "default", "system_fingerprint": "fp_62a23a81ef",
    }),
    "llama.cpp": (LLAMA, {
        "choices": [{"finish_reason": "stop", "index": 0, "message": ANSWER}],
        "created": CREATED, "model": LLAMA, "system_fingerprint": "b6097-9515c613",
        "object": "chat.completion", "usage": LLAMA_USAGE, "id": "chatcmpl-1xW", "timings": TIMINGS,
    }),
    "ollama": (OLLAMA, {
        "id": "chatcmpl-123", "object": "chat.completion", "created": CREATED, "model": OLLAMA,
        "system_fingerprint": "fp_ollama", "usage": USAGE,
        "choices": [{"index": 0, "message": ANSWER, "finish_reason": "stop"}],
    }),
    "vllm": (VLLM, {
        "id": "chatcmpl-5f8c", "object": "chat.completion", "created": CREATED, "model": VLLM,
        "choices": [{"index": 0, "message": {**ANSWER, "reasoning_content": None, "tool_calls": []},
                     "logprobs": None, "finish_reason": "stop", "stop_reason": None}],
        "usage": {**USAGE, "prompt_tokens_details": None}, "prompt_logprobs": None,
        "kv_transfer_params": None,
    }),
}  # fmt: skip


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("name", list(NON_STREAMS))
def test_non_stream(server: FakeOpenAIServer, name: str, aio: bool) -> None:
    model, payload = NON_STREAMS[name]
    plain, seen, record, otel = replay(
        server, body(200, payload), body(200, payload), aio, model=model
    )
    assert seen == plain
    assert plain[1] is None
    assert (record.input_tokens, record.output_tokens, record.tokens_source) == (
        PROMPT,
        COMPLETION,
        "reported",
    )
    assert (record.outcome, record.streaming, record.time_to_first_chunk_s) == ("ok", False, None)
    assert record.response_model == model
    assert record.finish_reasons == ("stop",)
    attrs = otel.finished()[0].attributes or {}
    assert ("llama_cpp.timings.predicted_n" in attrs) is (name == "llama.cpp")


# DeepSeek (api-docs.deepseek.com, context caching): the cache hits beside the counts, in
# answers without OpenAI's `prompt_tokens_details`.
DEEPSEEK_USAGE = {**USAGE, "prompt_cache_hit_tokens": 16, "prompt_cache_miss_tokens": 8}


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("server_name", ["deepseek", "moonshot"])
def test_cached_tokens_named_beside_the_counts_are_kept(
    server: FakeOpenAIServer, server_name: str, aio: bool
) -> None:
    """Cached prompt tokens that a server names in the usage itself (DeepSeek's
    `prompt_cache_hit_tokens`, Moonshot's `cached_tokens`) are kept as the cached breakdown."""
    if server_name == "deepseek":
        answer = {**NON_STREAMS["ollama"][1], "model": "deepseek-chat", "usage": DEEPSEEK_USAGE}
        reply, kwargs = body(200, answer), {"model": "deepseek-chat"}
    else:
        reply, kwargs = moonshot_stream(True), {"model": MOONSHOT, "stream": True}
    plain, seen, record, _ = replay(server, reply, reply, aio, **kwargs)
    assert seen == plain
    assert (record.input_tokens, record.output_tokens, record.cached_input_tokens) == (
        PROMPT,
        COMPLETION,
        16,
    )
    assert record.tokens_source == "reported"


GROK, GEMINI = "grok-3-mini", "gemini-3-flash-preview"
XAI_USAGE = {
    # xAI (docs.x.ai, consumption and rate limits, and its chat reference's example): the
    # reasoning is counted beside the completion tokens; the total holds both.
    "prompt_tokens": 32, "completion_tokens": 9, "total_tokens": 135,
    "prompt_tokens_details": {"text_tokens": 32, "audio_tokens": 0, "image_tokens": 0,
                              "cached_tokens": 6},
    "completion_tokens_details": {"reasoning_tokens": 94, "audio_tokens": 0,
                                  "accepted_prediction_tokens": 0,
                                  "rejected_prediction_tokens": 0},
    "num_sources_used": 0,
}  # fmt: skip
REASONED = {"prompt_tokens_details": {"cached_tokens": 6},
            "completion_tokens_details": {"reasoning_tokens": 94}}  # fmt: skip


@dataclass(frozen=True)
class UsageCase:
    usage: dict[str, Any]
    expected: tuple[int, int, int | None, int | None]
    """(input, output, reasoning, cached) tokens of the record."""
    model: str = GROK
    every_chunk: bool = False
    """Usage on every chunk of a stream (Gemini's), not in a last usage-only chunk."""


REASONING_USAGES = {
    "xai-beside": UsageCase(XAI_USAGE, (32, 103, 94, 6)),
    # OpenAI's reasoning models: inside the completion tokens already (total = prompt + output).
    "openai-inside": UsageCase(
        {"prompt_tokens": 32, "completion_tokens": 103, "total_tokens": 135, **REASONED},
        (32, 103, 94, 6),
    ),
    # Gemini's OpenAI-compatible endpoint (discuss.ai.google.dev, "…/v1beta/openai/chat/
    # completions is not compliant with API specs", 2026-02): no reasoning count, the thoughts
    # in the total only, and cumulative usage on every chunk of a stream.
    "gemini-unreported": UsageCase(
        {"completion_tokens": 5, "prompt_tokens": 24, "total_tokens": 122},
        (24, 98, 93, None),
        GEMINI,
        every_chunk=True,
    ),
    # A total that tells neither: taken as it came.
    "other-total": UsageCase(
        {"prompt_tokens": 32, "completion_tokens": 9, "total_tokens": 140, **REASONED},
        (32, 9, 94, 6),
    ),
    "zero-reasoning-other-total": UsageCase(
        {
            "prompt_tokens": 32,
            "completion_tokens": 9,
            "total_tokens": 140,
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        (32, 9, 0, None),
    ),
    "no-total": UsageCase(
        {"prompt_tokens": 32, "completion_tokens": 9, **REASONED}, (32, 9, 94, 6)
    ),
}


def reasoning_reply(case: UsageCase, stream: bool) -> Reply:
    base = head("0b8fd5a2-6c1e-4f77-9d0e-3c5a8e1f2b7d", case.model)
    if not stream:
        choice = {"index": 0, "message": ANSWER, "finish_reason": "stop"}
        answer = {**base, "object": "chat.completion", "choices": [choice], "usage": case.usage}
        return body(200, answer)
    if case.every_chunk:  # counts so far on each chunk, the last one's being the call's
        done = case.usage["completion_tokens"]
        events = [
            {**base, "choices": [{"delta": {"content": t, "role": "assistant"}, "index": 0}],
             "usage": {**case.usage, "completion_tokens": n,
                       "total_tokens": case.usage["total_tokens"] - done + n}}
            for n, t in enumerate(TEXT, 1)
        ]  # fmt: skip
        finish = {"delta": {"role": "assistant"}, "finish_reason": "stop", "index": 0}
        return frames(*events, {**base, "choices": [finish], "usage": case.usage})

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "reasoning_content": "Foxes, then."})]
    events += [*(chunk({"content": t}) for t in TEXT), chunk({}, "stop")]
    return frames(*events, {**base, "choices": [], "usage": case.usage})


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("stream", [False, True], ids=["object", "stream"])
@pytest.mark.parametrize("name", list(REASONING_USAGES))
def test_reasoning_left_out_of_the_output_is_output(
    server: FakeOpenAIServer, name: str, stream: bool, aio: bool
) -> None:
    """DESIGN §4: output tokens hold the reasoning, once. A server that leaves it out of its
    output count (xAI beside it, Gemini unreported) says so by its total, and the record adds it;
    the user's objects keep the server's usage as it came."""
    case = REASONING_USAGES[name]
    options = {"stream_options": {"include_usage": True}} if stream else {}
    reply = reasoning_reply(case, stream)
    plain, seen, record, _ = replay(
        server, reply, reply, aio, model=case.model, stream=stream, **options
    )
    assert seen == plain
    assert plain[1] is None
    assert plain[0][-1]["usage"] == case.usage
    counts = record.input_tokens, record.output_tokens
    assert (*counts, record.reasoning_tokens, record.cached_input_tokens) == case.expected
    assert record.tokens_source == "reported"


NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0 (Ubuntu)</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
ERRORS: dict[str, tuple[Reply, bool, str]] = {
    "openai-model-not-found": (body(404, {"error": {
        "message": "The model `gpt-9` does not exist or you do not have access to it.",
        "type": "invalid_request_error", "param": None, "code": "model_not_found"}}),
        False, "NotFoundError"),
    "openai-rate-limit": (body(429, {"error": {
        "message": "Rate limit reached for gpt-4o-mini in organization org-x on tokens per min "
        "(TPM): Limit 200000, Used 199000, Requested 1800. Please try again in 240ms.",
        "type": "tokens", "param": None, "code": "rate_limit_exceeded"}}), True, "RateLimitError"),
    "llama.cpp-500": (body(500, {"error": {
        "code": 500, "message": "Failed to parse tool call", "type": "server_error"}}),
        False, "InternalServerError"),
    "llama.cpp-loading": (body(503, {"error": {
        "code": 503, "message": "Loading model", "type": "unavailable_error"}}),
        True, "InternalServerError"),
    "ollama-not-found": (body(404, {"error": {
        "message": 'model "llama9" not found, try pulling it first', "type": "not_found_error",
        "param": None, "code": None}}), True, "NotFoundError"),
    "ollama-500": (body(500, {"error": {
        "message": "llama runner process has terminated: exit status 2", "type": "api_error",
        "param": None, "code": None}}), False, "InternalServerError"),
    "vllm-not-found": (body(404, {"error": {
        "message": "The model `Qwen/Qwen3` does not exist.", "type": "NotFoundError",
        "param": "model", "code": 404}}), False, "NotFoundError"),
    "vllm-old-top-level": (body(400, {
        "object": "error", "message": "This model's maximum context length is 2048 tokens. "
        "However, you requested 4113 tokens.", "type": "BadRequestError", "param": None,
        "code": 400}), True, "BadRequestError"),
    "nginx-502-html": (Reply(status=502, raw_body=NGINX_502, content_type="text/html"),
                       True, "InternalServerError"),
}  # fmt: skip


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("name", list(ERRORS))
def test_error_body(server: FakeOpenAIServer, name: str, aio: bool) -> None:
    reply, stream, error = ERRORS[name]
    plain, seen, record, _ = replay(server, reply, reply, aio, model="m", stream=stream)
    assert seen == plain
    assert plain[1] is not None
    assert plain[1][0] == error
    assert (record.outcome, record.error_type, record.streaming) == ("error", error, stream)
    assert (record.input_tokens, record.output_tokens, record.tokens_source) == (None, None, "none")
    assert record.time_to_first_chunk_s is None


ANSWERED_ERRORS: dict[str, tuple[Any, str | None]] = {
    # OpenRouter: "an error met while the model was producing the output" comes in the body of a
    # 200 answer (its docs, Errors: `{"error": {"code": number, "message": ..., "metadata"?}}`).
    "openrouter": ({"error": {"code": 502, "message": "Provider returned error",
                              "metadata": {"provider_name": "Lambda", "raw": "upstream timeout"}}},
                   "502"),
    "string-code": ({"error": {"message": "overloaded", "type": "server_error",
                               "code": "model_overloaded"}}, "model_overloaded"),
    "type-only": ({"error": {"message": "overloaded", "type": "server_error"}}, "server_error"),
    "message-only": ({"error": "Internal error"}, "error"),
    # An answer that merely carries an empty error member is a success.
    "null-error": (NON_STREAMS["openai"][1] | {"error": None}, None),
    "empty-error": (NON_STREAMS["openai"][1] | {"error": {}}, None),
}  # fmt: skip


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("name", list(ANSWERED_ERRORS))
def test_an_error_reported_in_a_200_answer_is_a_failure(
    server: FakeOpenAIServer, name: str, aio: bool
) -> None:
    """The SDK raises nothing for a 200 answer, so the user gets an object without choices and
    the record must still say the call failed (the success rate would count it otherwise)."""
    payload, error = ANSWERED_ERRORS[name]
    reply = body(200, payload)
    plain, seen, record, otel = replay(server, reply, reply, aio, model="openai/gpt-4o")
    assert seen == plain
    assert plain[1] is None  # nothing raised, with or without otelstats
    if error is None:
        assert (record.outcome, record.error_type, record.input_tokens) == ("ok", None, PROMPT)
        return
    assert (record.outcome, record.error_type) == ("error", error)
    assert (record.input_tokens, record.output_tokens, record.tokens_source) == (None, None, "none")
    span = otel.finished()[0]
    assert span.status.status_code.name == "ERROR"


def llama_stream_error(_: bool) -> Reply:
    events = llama_stream(False).raw_events[:3]  # role, two words, then the server fails
    error = {"error": {"code": 500, "message": "slot unavailable", "type": "server_error"}}
    return Reply(raw_events=(*events, *frames(error).raw_events))


def vllm_stream_error(_: bool) -> Reply:
    events = vllm_stream(False).raw_events[:3]
    error = {"object": "error", "message": "Invalid token id", "type": "BadRequestError"}
    return Reply(
        raw_events=(*events, *frames({"error": error | {"param": None, "code": 400}}).raw_events)
    )


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("wire", [llama_stream_error, vllm_stream_error], ids=["llama.cpp", "vllm"])
def test_error_event_mid_stream(
    server: FakeOpenAIServer, wire: Callable[[bool], Reply], aio: bool
) -> None:
    plain, seen, record, _ = replay(server, wire(False), wire(True), aio, model="m", stream=True)
    assert seen == plain
    assert len(plain[0]) == 3
    assert plain[1] is not None
    assert plain[1][0] == "APIError"
    assert (record.outcome, record.error_type) == ("error", "APIError")
    # Two words arrived and no usage: counted, never reported.
    assert (record.output_tokens, record.tokens_source) == (2, "counted")
    assert record.time_to_first_chunk_s is not None


THINKING = ("Okay", ",", " the", " user")
DELAY = 0.05
"""Seconds between a stream's events: the answer starts 5 of them after the first thought."""


def reasoning_stream(field: str) -> Reply:
    """A reasoning model on a local server that sends no usage: the reasoning streams before the
    answer in a delta field of its own (`reasoning_content`: llama.cpp, vLLM; `reasoning`:
    Ollama, whose OpenAI layer also sends an empty `content` meanwhile)."""
    base = head("chatcmpl-r1", "deepseek-r1:7b", system_fingerprint="fp_ollama")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"role": "assistant", "content": "", field: t}) for t in THINKING]
    events += [*(chunk({"content": t}) for t in TEXT), chunk({}, "stop")]
    return dataclasses.replace(frames(*events), token_delay=DELAY)


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_streamed_before_the_answer_is_output(
    server: FakeOpenAIServer, field: str, aio: bool
) -> None:
    """Reasoning chunks are generated output: the first token arrives with the first thought,
    not with the answer, and with no usage from the server they are counted with the answer."""
    wire = reasoning_stream(field)
    plain, seen, record, _ = replay(server, wire, wire, aio, model="deepseek-r1:7b", stream=True)
    assert seen == plain
    assert [c["choices"][0]["delta"].get(field) for c in plain[0]][1:5] == list(THINKING)
    assert (record.output_tokens, record.tokens_source) == (len(THINKING) + len(TEXT), "counted")
    assert record.outcome == "ok"
    assert record.time_to_first_chunk_s is not None
    assert record.time_to_first_chunk_s < 3 * DELAY  # the answer starts at 5 * DELAY
    assert record.duration_s > (len(THINKING) + len(TEXT)) * DELAY


WEB_UI_PAGE = (
    b'<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8" /><title>Open WebUI</title>'
    b'</head>\n<body><div id="app"></div><script type="module" src="/_app/start.js"></script>'
    b"</body>\n</html>\n"
)
NOT_THE_API: dict[str, tuple[Reply, type]] = {
    # `base_url` set to a web UI's port (Open WebUI, LM Studio's, a router's login page) rather
    # than its API: every path answers 200 with the app's page, and the SDK hands it back as text.
    "web-ui-page": (Reply(status=200, raw_body=WEB_UI_PAGE, content_type="text/html"), str),
    "empty-text": (Reply(status=200, raw_body=b"", content_type="text/plain"), str),
    # JSON that is not an object: the SDK returns it as it is (a list, a string, None).
    "json-list": (body(200, []), list),
    "json-string": (body(200, "ok"), str),
    "json-null": (body(200, None), type(None)),
}


ANSWERED = NON_STREAMS["openai"][1]
"""A whole answer, as a server that does not stream sends it to a streaming request."""


def _create(sdk: Any, api: str, stream: bool) -> Any:
    if api == "responses":
        return sdk.responses.create(model="m", input="Hello", stream=stream)
    if api == "completions":
        return sdk.completions.create(model="m", prompt="Hello", stream=stream)
    return sdk.chat.completions.create(model="m", messages=MESSAGES, stream=stream)


def sdk_result(base_url: str, aio: bool, stream: bool, api: str = "chat") -> tuple[Any, str | None]:
    """What `create` returns (every chunk, for a stream) and the exception class raised."""

    async def run_async() -> Any:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0) as sdk:
            result = await _create(sdk, api, stream)
            return [chunk async for chunk in result] if stream else result

    def run() -> Any:
        with openai.OpenAI(base_url=base_url, api_key="k", max_retries=0) as sdk:
            result = _create(sdk, api, stream)
            return list(result) if stream else result

    try:
        return (asyncio.run(run_async()) if aio else run()), None
    except openai.APIError as exc:
        return None, type(exc).__name__


def sdk_results(
    server: FakeOpenAIServer, reply: Reply, aio: bool, stream: bool, api: str = "chat"
) -> tuple[Any, Any, Otel]:
    """`sdk_result` of the same answer, bare and then instrumented."""

    def call() -> tuple[Any, str | None]:
        server.push(reply)
        return sdk_result(server.base_url, aio, stream, api)

    return differential(call)


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(
    "api", ["chat", "completions", pytest.param("responses", marks=needs_responses)]
)
@pytest.mark.parametrize("name", list(NOT_THE_API))
def test_a_200_answer_that_is_not_the_apis_object_is_a_failure(
    server: FakeOpenAIServer, name: str, api: str, aio: bool
) -> None:
    """The SDK (not strict, its default) returns whatever came instead of a completion and
    raises nothing; the user's code then fails on it. The record says the call failed, named
    as the SDK's strict mode names this failure, not `ok` without tokens."""
    reply, returned = NOT_THE_API[name]
    plain, seen, otel = sdk_results(server, reply, aio, stream=False, api=api)
    assert seen == plain
    assert type(plain[0]) is returned
    assert plain[1] is None
    record = otel.record()
    assert (record.outcome, record.error_type) == ("error", "APIResponseValidationError")
    assert (record.input_tokens, record.output_tokens, record.tokens_source) == (None, None, "none")
    assert otel.finished()[0].status.status_code.name == "ERROR"


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("name", ["web-ui-page", "json-answer"])
def test_an_answer_that_is_not_a_stream_is_a_failure(
    server: FakeOpenAIServer, name: str, aio: bool
) -> None:
    """A stream answered with a web page, or with one JSON answer by a server that does not
    stream: the SDK finds no event in it and yields nothing. A stream the server cut before its
    first event is cut short, not a failure to answer."""
    reply = NOT_THE_API["web-ui-page"][0] if name == "web-ui-page" else body(200, ANSWERED)
    plain, seen, otel = sdk_results(server, reply, aio, stream=True)
    assert seen == plain == ([], None)
    record = otel.record()
    assert (record.outcome, record.error_type) == ("error", "APIResponseValidationError")
    assert (record.output_tokens, record.time_to_first_chunk_s) == (None, None)


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
def test_a_stream_cut_before_its_first_event_is_cut_short(
    server: FakeOpenAIServer, aio: bool
) -> None:
    reply = Reply(raw_body=b"", content_type="text/event-stream")  # 200, then the body ends
    plain, seen, otel = sdk_results(server, reply, aio, stream=True)
    assert seen == plain == ([], None)
    assert (otel.record().outcome, otel.record().error_type) == ("incomplete", None)
