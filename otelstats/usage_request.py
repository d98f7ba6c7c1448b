"""Asking a streaming request for usage: the one rule the SDK instrumentation and the proxy share.

A chat client usually streams without asking for usage, and then the server sends none. otelstats
asks for it (`stream_options.include_usage`) and hides the extra usage-only chunk, so the caller
sees exactly what it would have seen. The caller's own choice always goes as it is. A server that
sends that chunk unasked is not asked: hiding it would take from the caller what it always gets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

SENDS_USAGE_UNASKED = ("openrouter.ai",)
"""Hosts (and their subdomains) whose streams end with a usage-only chunk whether or not it was
asked for: OpenRouter's, since 2026 (its `include_usage` "has no effect")."""


def sends_usage_unasked(host: str | None) -> bool:
    """Whether a stream from `host` brings its usage unasked (`SENDS_USAGE_UNASKED`)."""
    if not host:
        return False
    host = host.lower().rstrip(".")
    return any(host == known or host.endswith("." + known) for known in SENDS_USAGE_UNASKED)


def with_usage(requested: Any) -> dict[str, Any] | None:
    """The `stream_options` to send instead of the caller's `requested`, asking for usage; None
    when the caller's must go as it is: it says `include_usage` either way, or it asks vLLM's
    `continuous_usage_stats` (with usage asked for, vLLM puts usage on every chunk the caller
    sees, where only the final, hidden chunk may carry it: the output is counted instead)."""
    if not requested:  # absent, None, {}, or the SDK's falsy `omit` / `NOT_GIVEN`
        return {"include_usage": True}
    if not (type(requested) is dict or isinstance(requested, Mapping)):
        return None
    if "include_usage" in requested or requested.get("continuous_usage_stats"):
        return None
    return {**requested, "include_usage": True}


def may_refuse_usage(error_body: str | bytes) -> bool:
    """Whether a 400/422 answer to a request that otelstats asked for usage may be refusing that
    option: its error names `stream_options`, or it is no JSON error at all (a proxy's own page
    names nothing). A JSON error about something else (a prompt over the context length), in
    OpenAI's shape, as a string (llama.cpp, Ollama) or as a list of error objects (Gemini's
    OpenAI-compatible endpoint), is the caller's own: sending the request again would only make
    the server refuse it twice."""
    text = error_body.decode("utf-8", "replace") if isinstance(error_body, bytes) else error_body
    if "stream_options" in text:
        return True
    try:
        error = json.loads(text)
    except ValueError:
        return True
    if type(error) is list and error:
        error = error[0]
    return not isinstance(error, dict)
