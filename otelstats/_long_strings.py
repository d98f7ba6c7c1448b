"""Long strings inside request data (a picture sent as a data URL, a pasted document): replaced
before otelstats dumps that data on the caller's thread, so the cost of a call's own work does not
grow with the megabytes it sends."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 32
"""Deeper than any message part: left as it is."""


def replace_long(value: Any, limit: int, replace: Callable[[str], str], depth: int = 0) -> Any:
    """`value` with every string longer than `limit` in its dicts, lists and tuples replaced by
    `replace(string)`; json.dumps gives the same text as for `value` when there is none."""
    if isinstance(value, str):
        return replace(value) if len(value) > limit else value
    if depth >= MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: replace_long(v, limit, replace, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [replace_long(v, limit, replace, depth + 1) for v in value]
    return value


CAPTURED_STRING = 16 * 1024
"""Captured content (opt-in): the longest string kept whole. A longer one (a picture's data URL)
is cut and marked with its length, so the attribute stays valid JSON and dumping it does not cost
the caller milliseconds per megabyte."""


def _marked(text: str) -> str:
    return f"{text[:CAPTURED_STRING]}…[{len(text)} characters]"


def captured(content: Any) -> str:
    """Message content as the JSON of a `gen_ai.*.messages` attribute (long strings cut)."""
    return json.dumps(replace_long(content, CAPTURED_STRING, _marked), default=str)
