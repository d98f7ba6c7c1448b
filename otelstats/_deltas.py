"""Pure folding of CallRecords into the additive deltas the store upserts (rollups and totals).

Kept apart from store.py so the arithmetic is testable without a database and the writer's
transaction does nothing but I/O.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import semconv
from .models import BUCKET_SECONDS
from .records import CallRecord

Row = dict[str, Any]


def bucket_of(start_ns: int) -> int:
    """Unix second at which the record's 15-minute rollup bucket starts."""
    seconds = start_ns // 1_000_000_000
    return seconds - seconds % BUCKET_SECONDS


CALL_COLUMNS = (
    "trace_id",
    "span_id",
    "start_ns",
    "end_ns",
    "operation",
    "provider",
    "model",
    "request_model",
    "response_model",
    "server_address",
    "server_port",
    "input_tokens",
    "output_tokens",
    "tokens_source",
    "cached_input_tokens",
    "reasoning_tokens",
    "streaming",
    "duration_s",
    "time_to_first_chunk_s",
    "tokens_per_second",
    "finish_reasons",
    "outcome",
    "error_type",
    "conversation_id",
    "service_name",
    "service_instance_id",
)


CALL_KEY = ("start_ns", "trace_id", "span_id")
"""The unique key of `calls` (migration 0002): a span, indexed in time order."""


def call_key(record: CallRecord) -> tuple[int, str, str]:
    return (record.start_ns, record.trace_id, record.span_id)


def call_values(r: CallRecord) -> tuple[Any, ...]:
    """The `calls` row of a record, in CALL_COLUMNS order (a tuple: the writer's hot path)."""
    return (
        r.trace_id,
        r.span_id,
        r.start_ns,
        r.end_ns,
        r.operation,
        r.provider,
        r.model,
        r.request_model,
        r.response_model,
        r.server_address,
        r.server_port,
        r.input_tokens,
        r.output_tokens,
        r.tokens_source,
        r.cached_input_tokens,
        r.reasoning_tokens,
        r.streaming,
        r.duration_s,
        r.time_to_first_chunk_s,
        r.tokens_per_second,
        ",".join(r.finish_reasons) or None,
        r.outcome,
        r.error_type,
        r.conversation_id,
        r.service_name,
        r.service_instance_id,
    )


def call_row(record: CallRecord) -> Row:
    return dict(zip(CALL_COLUMNS, call_values(record), strict=True))


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
ROLLUP_KEYS = ("bucket_start", "model", "provider", "operation", "outcome")
LABEL_NAMES = ("operation", "provider", "model", "outcome", "error_type")
HISTOGRAM_KEYS = (*LABEL_NAMES, "metric", "le_index")

# One fold per record into (bucket, model, provider, operation, outcome, error_type) with these
# sums; rollups and totals are then regrouped from the few folded rows, not from every record.
_FOLD_SUMS = (*ROLLUP_SUMS, "ttfc_sum_s", "ttfc_count", "input_token_calls", "output_token_calls")
_ROLLUP_IDX = tuple(_FOLD_SUMS.index(name) for name in ROLLUP_SUMS)
_TOTAL_IDX = tuple(_FOLD_SUMS.index(name) for name in TOTAL_SUMS)


@dataclass
class Deltas:
    """Additive rows for every derived table, from one batch of new records."""

    rollups: list[Row] = field(default_factory=list)
    conversations: list[Row] = field(default_factory=list)
    """conversation_buckets rows."""
    first_seen: list[Row] = field(default_factory=list)
    """conversations rows (insert-if-absent)."""
    days: list[Row] = field(default_factory=list)
    """day_generations increments, one per UTC day touched."""
    totals: list[Row] = field(default_factory=list)
    histograms: list[Row] = field(default_factory=list)


def _regroup(
    folded: dict[tuple[Any, ...], list[float]],
    key_of: Callable[[tuple[Any, ...]], tuple[Any, ...]],
    indices: tuple[int, ...],
    key_names: tuple[str, ...],
    sum_names: tuple[str, ...],
) -> list[Row]:
    grouped: dict[tuple[Any, ...], list[float]] = {}
    for key, sums in folded.items():
        target = grouped.setdefault(key_of(key), [0] * len(indices))
        for slot, index in enumerate(indices):
            target[slot] += sums[index]
    return [
        dict(zip(key_names, key, strict=True)) | dict(zip(sum_names, sums, strict=True))
        for key, sums in grouped.items()
    ]


def fold(records: Iterable[CallRecord]) -> Deltas:
    """Fold new records into the additive deltas of rollups, conversations and totals."""
    # Per record only what differs between records is built (the sums' values, a histogram key
    # per observation); sums are added column-wise per group at the end (C, not a Python loop).
    groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    histograms: defaultdict[tuple[Any, ...], int] = defaultdict(int)
    conversations: set[tuple[int, str]] = set()
    duration_bounds, token_bounds = semconv.DURATION_BUCKETS, semconv.TOKEN_USAGE_BUCKETS
    for r in records:
        bucket, duration, latency = bucket_of(r.start_ns), r.duration_s, r.latency_s
        ttfc = r.time_to_first_chunk_s if r.streaming else None
        tps = r.tokens_per_second
        input_tokens, output_tokens, source = r.input_tokens, r.output_tokens, r.tokens_source
        key = (bucket, r.model, r.provider, r.operation, r.outcome, r.error_type or "")
        values = (
            1,
            input_tokens or 0,
            output_tokens or 0,
            r.cached_input_tokens or 0,
            r.reasoning_tokens or 0,
            1 if source == "counted" else 0,
            1 if source == "none" else 0,
            duration,
            latency or 0.0,
            0 if latency is None else 1,
            tps or 0.0,
            0 if tps is None else 1,
            ttfc or 0.0,
            0 if ttfc is None else 1,
            0 if input_tokens is None else 1,
            0 if output_tokens is None else 1,
        )
        group = groups.get(key)
        if group is None:
            groups[key] = [values]
        else:
            group.append(values)
        histograms[key, "duration", bisect_left(duration_bounds, duration)] += 1
        if ttfc is not None:
            histograms[key, "ttfc", bisect_left(duration_bounds, ttfc)] += 1
        if input_tokens is not None:
            histograms[key, "input_tokens", bisect_left(token_bounds, input_tokens)] += 1
        if output_tokens is not None:
            histograms[key, "output_tokens", bisect_left(token_bounds, output_tokens)] += 1
        if r.conversation_id:
            conversations.add((bucket, r.conversation_id))
    folded = {
        key: list(rows[0]) if len(rows) == 1 else [sum(c) for c in zip(*rows, strict=True)]
        for key, rows in groups.items()
    }
    by_labels: defaultdict[tuple[Any, ...], int] = defaultdict(int)
    for (key, metric, index), count in histograms.items():
        # labels: operation, provider, model, outcome, error_type (the bucket is not a label)
        by_labels[key[3], key[2], key[1], key[4], key[5], metric, index] += count
    first_seen: dict[str, int] = {}
    for b, c in sorted(conversations):
        first_seen.setdefault(c, b)
    return Deltas(
        rollups=_regroup(folded, lambda k: k[:5], _ROLLUP_IDX, ROLLUP_KEYS, ROLLUP_SUMS),
        conversations=[{"bucket_start": b, "conversation_id": c} for b, c in sorted(conversations)],
        first_seen=[{"conversation_id": c, "first_bucket": b} for c, b in first_seen.items()],
        days=[
            {"utc_day": day, "generation": 1}
            for day in sorted({key[0] // 86_400 for key in folded})
        ],
        totals=_regroup(
            folded, lambda k: (k[3], k[2], k[1], k[4], k[5]), _TOTAL_IDX, LABEL_NAMES, TOTAL_SUMS
        ),
        histograms=[
            dict(zip(HISTOGRAM_KEYS, key, strict=True)) | {"count": count}
            for key, count in by_labels.items()
        ],
    )
