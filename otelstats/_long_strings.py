"""Long strings inside request data (a picture sent as a data URL, a pasted document): replaced
before otelstats dumps that data on the caller's thread, so the cost of a call's own work does not
grow with the megabytes it sends."""

from __future__ import annotations

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
