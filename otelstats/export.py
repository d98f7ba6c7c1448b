"""CSV and JSON formatting of what `queries` returns, shared by the web API and the CLI.

Nothing here computes a number. CSV cells that are strings are neutralised against formula
injection (OWASP): a cell starting with = + - @ tab CR or LF gets a leading `'`;
numbers stay numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

DAILY_COLUMNS: tuple[str, ...] = (
    "date",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "avg_tokens_per_second",
    "avg_latency_ms",
    "success_rate",
)
"""Columns of the daily CSV, in order (DESIGN §3 names)."""

MODEL_DAILY_COLUMNS: tuple[str, ...] = ("date", "model", *DAILY_COLUMNS[1:])
"""Columns of the per-day-per-model CSV (`by=model`)."""

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")


def sanitize_cell(value: Any) -> str | int | float:
    """One CSV cell: numbers unchanged, None empty, formula-like strings neutralised."""
    if value is None:
        return ""
    if isinstance(value, bool):  # a bool is an int to Python, but not a number to a reader
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else ""
    text = str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def to_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] = DAILY_COLUMNS) -> str:
    """A CSV document (header + one line per row, RFC 4180 CRLF line ends)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([sanitize_cell(row.get(column)) for column in columns])
    return buffer.getvalue()


def to_json(stats: Mapping[str, Any]) -> str:
    """The stats document as JSON text (UTF-8 safe, no NaN: averages are null, never NaN)."""
    return json.dumps(stats, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def filename(stats: Mapping[str, Any], extension: str, *, by: str | None = None) -> str:
    """A download name such as `otelstats-7d-2024-05-31.csv` (only safe characters)."""
    end = str(stats.get("end") or "")[:10]
    parts = ["otelstats", str(stats.get("period", "stats"))]
    if by:
        parts.append(f"by-{by}")
    if end:
        parts.append(end)
    name = "-".join(parts)
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_") else "_" for ch in name)
    return f"{safe}.{extension}"
