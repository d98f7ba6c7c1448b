"""SQLAlchemy 2.0 tables: raw calls, time-bucketed rollups, conversations seen, all-time totals.

Queries read `rollups` (cost grows with the time span, not with the number of calls); /metrics
reads `metric_totals` and `metric_histograms` (cost grows with label sets only, and pruning raw
calls never touches them, so Prometheus counters never go backwards). Schema changes go through
migrations/.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Float, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BUCKET_SECONDS = 900
"""Rollup bucket width. Every timezone offset is a multiple of 15 minutes, so local days of any
zone (half-hour and 45-minute zones included) are exact unions of buckets."""

LABEL = 256
"""Width of label columns (model, provider, operation, error type)."""


CLUSTERED = {"sqlite_with_rowid": False}
"""Aggregate tables are WITHOUT ROWID on SQLite: rows are stored in primary-key order, so a
bucket range is one sequential read instead of an index walk plus a lookup per row."""


class Base(DeclarativeBase):
    pass


class Call(Base):
    """One inference call, as mapped by `records.span_to_record`."""

    __tablename__ = "calls"
    __table_args__ = (
        # Time-ordered: new rows land at the index's right edge (see migration 0002); it also
        # serves every start_ns range.
        Index("uq_calls_start_span", "start_ns", "trace_id", "span_id", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(String(32))
    span_id: Mapped[str] = mapped_column(String(16))
    start_ns: Mapped[int] = mapped_column(BigInteger)
    end_ns: Mapped[int] = mapped_column(BigInteger)
    operation: Mapped[str] = mapped_column(String(LABEL))
    provider: Mapped[str] = mapped_column(String(LABEL))
    model: Mapped[str] = mapped_column(String(LABEL))
    request_model: Mapped[str | None] = mapped_column(String(LABEL))
    response_model: Mapped[str | None] = mapped_column(String(LABEL))
    server_address: Mapped[str | None] = mapped_column(String(LABEL))
    server_port: Mapped[int | None] = mapped_column(Integer)
    input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    tokens_source: Mapped[str] = mapped_column(String(16))
    cached_input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int | None] = mapped_column(BigInteger)
    streaming: Mapped[bool] = mapped_column(Boolean)
    duration_s: Mapped[float] = mapped_column(Float)
    time_to_first_chunk_s: Mapped[float | None] = mapped_column(Float)
    tokens_per_second: Mapped[float | None] = mapped_column(Float)
    finish_reasons: Mapped[str | None] = mapped_column(String(1024))
    outcome: Mapped[str] = mapped_column(String(16))
    error_type: Mapped[str | None] = mapped_column(String(LABEL))
    conversation_id: Mapped[str | None] = mapped_column(String(128))
    service_name: Mapped[str | None] = mapped_column(String(LABEL))
    service_instance_id: Mapped[str | None] = mapped_column(String(128))


class Rollup(Base):
    """Sums per 15-minute bucket × model × provider × operation × outcome."""

    __tablename__ = "rollups"
    __table_args__ = CLUSTERED

    bucket_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    model: Mapped[str] = mapped_column(String(LABEL), primary_key=True)
    provider: Mapped[str] = mapped_column(String(LABEL), primary_key=True)
    operation: Mapped[str] = mapped_column(String(LABEL), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    counted_calls: Mapped[int] = mapped_column(BigInteger, default=0)
    unreported_calls: Mapped[int] = mapped_column(BigInteger, default=0)
    duration_sum_s: Mapped[float] = mapped_column(Float, default=0.0)
    latency_sum_s: Mapped[float] = mapped_column(Float, default=0.0)
    latency_count: Mapped[int] = mapped_column(BigInteger, default=0)
    tps_sum: Mapped[float] = mapped_column(Float, default=0.0)
    tps_count: Mapped[int] = mapped_column(BigInteger, default=0)


class ConversationBucket(Base):
    """A conversation seen in a bucket: distinct ids per period are counted exactly from here."""

    __tablename__ = "conversation_buckets"
    __table_args__ = CLUSTERED

    bucket_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(128), primary_key=True)


class Conversation(Base):
    """Every conversation ever seen, once: the All Time count without a DISTINCT over buckets."""

    __tablename__ = "conversations"
    __table_args__ = CLUSTERED

    conversation_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    first_bucket: Mapped[int] = mapped_column(BigInteger)


class DayGeneration(Base):
    """A counter per UTC day, bumped by every write that touches one of its buckets.

    Caches of aggregated past days compare generations to know whether a day changed (late or
    imported data) without re-reading its rollups.
    """

    __tablename__ = "day_generations"
    __table_args__ = CLUSTERED

    utc_day: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    """Unix seconds // 86400."""
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


class Counter(Base):
    """Named all-time counters the writer keeps, for numbers a COUNT would have to scan for.

    `conversations`: how many rows `conversations` has (distinct conversation ids ever seen).
    """

    __tablename__ = "counters"
    __table_args__ = CLUSTERED

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class MetricTotal(Base):
    """All-time sums per Prometheus label set; never pruned."""

    __tablename__ = "metric_totals"
    __table_args__ = CLUSTERED

    operation: Mapped[str] = mapped_column(String(LABEL), primary_key=True)
    provider: Mapped[str] = mapped_column(String(LABEL), primary_key=True)
    model: Mapped[str] = mapped_column(String(LABEL), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    error_type: Mapped[str] = mapped_column(String(LABEL), primary_key=True)
    """'' when the call did not fail."""
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    duration_sum_s: Mapped[float] = mapped_column(Float, default=0.0)
    ttfc_sum_s: Mapped[float] = mapped_column(Float, default=0.0)
    ttfc_count: Mapped[int] = mapped_column(BigInteger, default=0)
    input_token_calls: Mapped[int] = mapped_column(BigInteger, default=0)
    output_token_calls: Mapped[int] = mapped_column(BigInteger, default=0)


class MetricHistogram(Base):
    """All-time (non-cumulative) histogram bucket counts per label set, metric and bucket index.

    `metric` is one of duration | ttfc | input_tokens | output_tokens; `le_index` indexes the
    spec's boundaries in semconv (len(boundaries) means +Inf).
    """

    __tablename__ = "metric_histograms"
    __table_args__ = CLUSTERED

    operation: Mapped[str] = mapped_column(String(LABEL), primary_key=True)
    provider: Mapped[str] = mapped_column(String(LABEL), primary_key=True)
    model: Mapped[str] = mapped_column(String(LABEL), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    error_type: Mapped[str] = mapped_column(String(LABEL), primary_key=True)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    le_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
