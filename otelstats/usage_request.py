"""Asking a streaming request for usage: the one rule the SDK instrumentation and the proxy share.

A chat client usually streams without asking for usage, and then the server sends none. otelstats
asks for it (`stream_options.include_usage`) and hides the extra usage-only chunk, so the caller
sees exactly what it would have seen. The caller's own choice always goes as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
