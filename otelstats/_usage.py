"""What a response says it used: token counts (`usage_attributes`) and llama.cpp's server-measured
`timings`, read from the SDK's models or from the server's JSON as it came (`JSONObject`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import semconv


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count(details: Any, name: str) -> int | None:
    """A count of a usage breakdown: an SDK model, or, for a field newer than the SDK, the
    server's JSON as the SDK keeps it (a dict in `__pydantic_extra__`)."""
    if type(details) is dict:
        return _int(details.get(name))
    return _int(getattr(details, name, None))


class JSONObject:
    """A JSON object read as the SDK's models are: a member by attribute (a missing one is
    None, a nested object another JSONObject), the whole of it as `__pydantic_extra__` (the
    fields beyond the SDK's). For what the SDK did not parse: Moonshot's usage in a stream's
    finish choice, the events of a WebSocket the SDK did not open (`_websocket`)."""

    __slots__ = ("_data",)

    def __init__(self, data: Any) -> None:
        self._data: dict[str, Any] = data if isinstance(data, dict) else {}

    @property
    def __pydantic_extra__(self) -> dict[str, Any]:
        return self._data

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        value = self._data.get(name)
        return JSONObject(value) if isinstance(value, dict) else value

    def to_dict(self) -> dict[str, Any]:
        return self._data


def usage_attributes(usage: Any) -> dict[str, Any]:
    """Token counts of a usage object (chat/completions/embeddings or Responses names), or of
    the JSON object of one.

    One object uses one naming, so the other naming is read only when the first is absent: a
    missing attribute on a pydantic model raises inside getattr, which costs microseconds.
    """
    attrs: dict[str, Any] = {}
    if usage is None:
        return attrs
    if type(usage) is dict:
        usage = JSONObject(usage)
    inp = _int(getattr(usage, "prompt_tokens", None))
    out = _int(getattr(usage, "completion_tokens", None))
    if inp is None and out is None:  # Responses API names
        inp = _int(getattr(usage, "input_tokens", None))
        out = _int(getattr(usage, "output_tokens", None))
        prefix = ("input_tokens_details", "output_tokens_details")
    else:
        prefix = ("prompt_tokens_details", "completion_tokens_details")
    if inp is not None:
        attrs[semconv.USAGE_INPUT_TOKENS] = inp
    details = getattr(usage, prefix[0], None)
    cached = None if details is None else _count(details, "cached_tokens")
    if cached is None:  # named beside the counts (Moonshot, DeepSeek), in the server's JSON
        extra = getattr(usage, "__pydantic_extra__", None)
        if extra:
            cached = _int(semconv.cached_elsewhere(extra))
    if cached is not None:
        attrs[semconv.USAGE_CACHE_READ_INPUT_TOKENS] = cached
    details = getattr(usage, prefix[1], None)
    reasoning = None if details is None else _count(details, "reasoning_tokens")
    if reasoning != 0 and inp is not None and out is not None:  # left out of the output?
        total = getattr(usage, "total_tokens", None)
        out, reasoning = semconv.with_hidden_output(inp, out, reasoning, total)
    if out is not None:
        attrs[semconv.USAGE_OUTPUT_TOKENS] = out
    if reasoning is not None:
        attrs[semconv.USAGE_REASONING_OUTPUT_TOKENS] = reasoning
    # Reported is what `span_to_record` assumes of counts without an `otelstats.usage.source`:
    # only counted tokens and calls without any are marked (one attribute less per call).
    return attrs


def timings_attributes(timings: Any) -> dict[str, Any]:
    """llama.cpp's server-measured `timings` (prompt/generation speed), kept as span attributes."""
    if not isinstance(timings, Mapping):
        return {}
    return {
        f"llama_cpp.timings.{key}": value
        for key, value in timings.items()
        if isinstance(key, str) and isinstance(value, (int, float)) and not isinstance(value, bool)
    }
