"""Pure folding of CallRecords into the additive deltas the store upserts (rollups and totals).

Kept apart from store.py so the arithmetic is testable without a database and the writer's
transaction does nothing but I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

from . import semconv
from .models import BUCKET_SECONDS
from .records import CallRecord

HISTOGRAMS: dict[str, tuple[float, ...]] = {
    "duration": semconv.DURATION_BUCKETS,
    "ttfc": semconv.TIME_TO_FIRST_CHUNK_BUCKETS,
    "input_tokens": semconv.TOKEN_USAGE_BUCKETS,
    "output_tokens": semconv.TOKEN_USAGE_BUCKETS,
}

Row = dict[str, Any]


def bucket_of(start_ns: int) -> int:
    """Unix second at which the record's 15-minute rollup bucket starts."""
    seconds = start_ns // 1_000_000_000
    return seconds - seconds % BUCKET_SECONDS


def le_index(boundaries: Sequence[float], value: float) -> int:
    """Index of the first boundary >= value (Prometheus `le` semantics); len() means +Inf."""
    return bisect.bisect_left(boundaries, value)


def call_row(record: CallRecord) -> Row:
    return {
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "start_ns": record.start_ns,
        "end_ns": record.end_ns,
        "operation": record.operation,
        "provider": record.provider,
        "model": record.model,
        "request_model": record.request_model,
        "response_model": record.response_model,
        "server_address": record.server_address,
        "server_port": record.server_port,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "tokens_source": record.tokens_source,
        "cached_input_tokens": record.cached_input_tokens,
        "reasoning_tokens": record.reasoning_tokens,
        "streaming": record.streaming,
        "duration_s": record.duration_s,
        "time_to_first_chunk_s": record.time_to_first_chunk_s,
        "tokens_per_second": record.tokens_per_second,
        "finish_reasons": ",".join(record.finish_reasons) or None,
        "outcome": record.outcome,
        "error_type": record.error_type,
        "conversation_id": record.conversation_id,
        "service_name": record.service_name,
        "service_instance_id": record.service_instance_id,
    }


ROLLUP_SUMS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "counted_calls",
    "unreported_calls",
    "duration_sum_s",
    "latency_sum_s",
    "latency_count",
    "tps_sum",
    "tps_count",
)
TOTAL_SUMS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "duration_sum_s",
    "ttfc_sum_s",
    "ttfc_count",
    "input_token_calls",
    "output_token_calls",
)


def _add(target: Row, values: Row) -> None:
    for key, value in values.items():
        target[key] = target.get(key, 0) + value


def rollup_rows(records: Iterable[CallRecord]) -> list[Row]:
    """One additive row per (bucket, model, provider, operation, outcome)."""
    folded: dict[tuple[Any, ...], Row] = {}
    for r in records:
        key = (bucket_of(r.start_ns), r.model, r.provider, r.operation, r.outcome)
        row = folded.setdefault(
            key,
            dict(zip(("bucket_start", "model", "provider", "operation", "outcome"), key))
            | dict.fromkeys(ROLLUP_SUMS, 0),
        )
        latency, tps = r.latency_s, r.tokens_per_second
        _add(
            row,
            {
                "requests": 1,
                "input_tokens": r.input_tokens or 0,
                "output_tokens": r.output_tokens or 0,
                "cached_input_tokens": r.cached_input_tokens or 0,
                "reasoning_tokens": r.reasoning_tokens or 0,
                "counted_calls": int(r.tokens_source == "counted"),
                "unreported_calls": int(r.tokens_source == "none"),
                "duration_sum_s": r.duration_s,
                "latency_sum_s": latency or 0.0,
                "latency_count": int(latency is not None),
                "tps_sum": tps or 0.0,
                "tps_count": int(tps is not None),
            },
        )
    return list(folded.values())


def conversation_rows(records: Iterable[CallRecord]) -> list[Row]:
    seen = {
        (bucket_of(r.start_ns), r.conversation_id) for r in records if r.conversation_id
    }
    return [{"bucket_start": b, "conversation_id": c} for b, c in sorted(seen)]


def _label_key(r: CallRecord) -> tuple[str, str, str, str, str]:
    return (r.operation, r.provider, r.model, r.outcome, r.error_type or "")


LABEL_NAMES = ("operation", "provider", "model", "outcome", "error_type")


def total_rows(records: Iterable[CallRecord]) -> tuple[list[Row], list[Row]]:
    """All-time deltas per label set: (metric_totals rows, metric_histograms rows)."""
    totals: dict[tuple[str, ...], Row] = {}
    hist: dict[tuple[Any, ...], int] = {}
    for r in records:
        key = _label_key(r)
        row = totals.setdefault(key, dict(zip(LABEL_NAMES, key)) | dict.fromkeys(TOTAL_SUMS, 0))
        ttfc = r.time_to_first_chunk_s if r.streaming else None
        _add(
            row,
            {
                "requests": 1,
                "input_tokens": r.input_tokens or 0,
                "output_tokens": r.output_tokens or 0,
                "duration_sum_s": r.duration_s,
                "ttfc_sum_s": ttfc or 0.0,
                "ttfc_count": int(ttfc is not None),
                "input_token_calls": int(r.input_tokens is not None),
                "output_token_calls": int(r.output_tokens is not None),
            },
        )
        observed: dict[str, float | None] = {
            "duration": r.duration_s,
            "ttfc": ttfc,
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
        }
        for metric, value in observed.items():
            if value is not None:
                index = le_index(HISTOGRAMS[metric], value)
                hist[(*key, metric, index)] = hist.get((*key, metric, index), 0) + 1
    hist_rows = [
        dict(zip((*LABEL_NAMES, "metric", "le_index"), key)) | {"count": count}
        for key, count in hist.items()
    ]
    return list(totals.values()), hist_rows
