"""Import the history of Simon Willison's `llm` CLI from its `logs.db`.

Reads both the legacy `responses` table and the `turns` table that llm 0.36+ writes, read-only.
Each row becomes a GenAI span and goes through `records.span_to_record` like any live call; its
trace/span id is derived from llm's own row id, so importing twice stores nothing twice.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind

from .. import semconv
from ..errors import ConfigError
from ..records import CallRecord, span_to_record
from ..store import Store

BATCH = 500
_RESOURCE = Resource({"service.name": "llm"})
# (table, its conversation column), in the order llm introduced them.
_TABLES = (("responses", "conversation_id"), ("turns", "thread_id"))
_PROVIDERS = (
    (("gpt-", "chatgpt", "o1", "o3", "o4", "text-", "davinci", "babbage"), "openai"),
    (("claude",), "anthropic"),
    (("gemini",), "gcp.gemini"),
    (("mistral", "codestral"), "mistral_ai"),
)


def default_logs_path() -> Path:
    """llm's own location: $LLM_USER_PATH/logs.db, else logs.db in click's app dir for llm."""
    user = os.environ.get("LLM_USER_PATH")
    return Path(user or click.get_app_dir("io.datasette.llm")) / "logs.db"


@dataclass(frozen=True)
class LlmRow:
    id: str
    model: str | None
    resolved_model: str | None
    input_tokens: int | None
    output_tokens: int | None
    duration_ms: int | None
    datetime_utc: str | None
    conversation_id: str | None


@dataclass(frozen=True)
class ImportResult:
    rows: int
    """Rows read from logs.db."""
    imported: int
    """Calls stored for the first time (0 on a second run)."""
    skipped: int
    """Rows without a readable time (nothing to place them on)."""


def _connect(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise ConfigError(f"no llm logs database at {str(path)!r} (run `llm logs path` to find it)")
    conn = None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        raise ConfigError(f"{str(path)!r} is not a readable SQLite database: {exc}") from None
    conn.row_factory = sqlite3.Row
    return conn


def _queries(conn: sqlite3.Connection) -> list[str]:
    queries = []
    for table, conversation in _TABLES:
        columns = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not {"id", "model", "datetime_utc"} <= columns:
            continue
        pick = [
            f"{name} AS {alias}" if name in columns else f"NULL AS {alias}"
            for name, alias in (
                ("resolved_model", "resolved_model"),
                ("input_tokens", "input_tokens"),
                ("output_tokens", "output_tokens"),
                ("duration_ms", "duration_ms"),
                (conversation, "conversation_id"),
            )
        ]
        queries.append(f"SELECT id, model, datetime_utc, {', '.join(pick)} FROM {table}")  # noqa: S608 (fixed names)
    if not queries:
        raise ConfigError("this database has no llm `responses` or `turns` table")
    return queries


def count_rows(path: Path) -> int:
    conn = _connect(path)
    try:
        counts = (f"SELECT count(*) FROM ({q})" for q in _queries(conn))  # noqa: S608 (fixed names)
        return sum(conn.execute(query).fetchone()[0] for query in counts)
    finally:
        conn.close()


def read_rows(path: Path) -> Iterator[LlmRow]:
    conn = _connect(path)
    try:
        for query in _queries(conn):
            for row in conn.execute(query):
                yield LlmRow(**{key: row[key] for key in row.keys()})  # noqa: SIM118
    finally:
        conn.close()


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # Older llm versions wrote naive utcnow() strings.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _provider(model: str) -> str:
    lowered = model.lower()
    for prefixes, provider in _PROVIDERS:
        if lowered.startswith(prefixes):
            return provider
    return "llm"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def row_to_span(row: LlmRow) -> ReadableSpan | None:
    """The GenAI span an llm log row stands for; None without a usable time."""
    start = _time(row.datetime_utc)
    if start is None:
        return None
    duration = timedelta(milliseconds=_int(row.duration_ms) or 0)
    digest = hashlib.sha256(f"llm-logs:{row.id}".encode()).digest()
    model = row.model if isinstance(row.model, str) and row.model else None
    attributes: dict[str, Any] = {
        semconv.OPERATION_NAME: semconv.OPERATION_CHAT,
        semconv.PROVIDER_NAME: _provider(model or ""),
    }
    optional = {
        semconv.REQUEST_MODEL: model,
        semconv.RESPONSE_MODEL: row.resolved_model or None,
        semconv.USAGE_INPUT_TOKENS: _int(row.input_tokens),
        semconv.USAGE_OUTPUT_TOKENS: _int(row.output_tokens),
        semconv.CONVERSATION_ID: row.conversation_id or None,
    }
    attributes.update({k: v for k, v in optional.items() if v is not None})
    start_ns = int(start.timestamp() * 1e9)
    return ReadableSpan(
        name=f"chat {model or ''}".strip(),
        context=SpanContext(
            int.from_bytes(digest[:16], "big") or 1,
            int.from_bytes(digest[16:24], "big") or 1,
            is_remote=False,
        ),
        attributes=attributes,
        resource=_RESOURCE,
        kind=SpanKind.CLIENT,
        start_time=start_ns,
        end_time=start_ns + int(duration.total_seconds() * 1e9),
    )


def import_llm_logs(
    path: Path, store: Store, *, on_progress: Callable[[int], None] | None = None
) -> ImportResult:
    """Import every llm log row into `store` in batches; `on_progress(n)` after each batch."""
    rows = imported = skipped = reported = 0
    batch: list[CallRecord] = []

    def flush() -> None:
        nonlocal imported, reported
        imported += store.write(batch)
        if on_progress is not None:
            on_progress(rows - reported)
        reported = rows
        batch.clear()

    for row in read_rows(path):
        rows += 1
        span = row_to_span(row)
        record = span_to_record(span) if span is not None else None
        if record is None:
            skipped += 1
            continue
        batch.append(record)
        if len(batch) >= BATCH:
            flush()
    flush()
    return ImportResult(rows=rows, imported=imported, skipped=skipped)
