"""The first schema: calls, rollups, conversation_buckets, conversations, day_generations,
counters, metric_totals, metric_histograms.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LABEL = 256
CLUSTERED = {"sqlite_with_rowid": False}  # aggregate tables: rows stored in primary-key order


def _label(name: str, *, primary_key: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(LABEL), nullable=False, primary_key=primary_key)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16), nullable=False),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("end_ns", sa.BigInteger, nullable=False),
        _label("operation"),
        _label("provider"),
        _label("model"),
        sa.Column("request_model", sa.String(LABEL), nullable=True),
        sa.Column("response_model", sa.String(LABEL), nullable=True),
        sa.Column("server_address", sa.String(LABEL), nullable=True),
        sa.Column("server_port", sa.Integer, nullable=True),
        sa.Column("input_tokens", sa.BigInteger, nullable=True),
        sa.Column("output_tokens", sa.BigInteger, nullable=True),
        sa.Column("tokens_source", sa.String(16), nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger, nullable=True),
        sa.Column("reasoning_tokens", sa.BigInteger, nullable=True),
        sa.Column("streaming", sa.Boolean, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("time_to_first_chunk_s", sa.Float, nullable=True),
        sa.Column("tokens_per_second", sa.Float, nullable=True),
        sa.Column("finish_reasons", sa.String(1024), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error_type", sa.String(LABEL), nullable=True),
        sa.Column("conversation_id", sa.String(128), nullable=True),
        sa.Column("service_name", sa.String(LABEL), nullable=True),
        sa.Column("service_instance_id", sa.String(128), nullable=True),
        sa.UniqueConstraint("trace_id", "span_id", name="uq_calls_span"),
    )
    op.create_index("ix_calls_start_ns", "calls", ["start_ns"])

    counters = [
        sa.Column(name, sa.BigInteger, nullable=False)
        for name in (
            "requests",
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "reasoning_tokens",
            "counted_calls",
            "unreported_calls",
        )
    ]
    op.create_table(
        "rollups",
        sa.Column("bucket_start", sa.BigInteger, primary_key=True),
        _label("model", primary_key=True),
        _label("provider", primary_key=True),
        _label("operation", primary_key=True),
        sa.Column("outcome", sa.String(16), primary_key=True),
        *counters,
        sa.Column("duration_sum_s", sa.Float, nullable=False),
        sa.Column("latency_sum_s", sa.Float, nullable=False),
        sa.Column("latency_count", sa.BigInteger, nullable=False),
        sa.Column("tps_sum", sa.Float, nullable=False),
        sa.Column("tps_count", sa.BigInteger, nullable=False),
        **CLUSTERED,
    )

    op.create_table(
        "conversation_buckets",
        sa.Column("bucket_start", sa.BigInteger, primary_key=True),
        sa.Column("conversation_id", sa.String(128), primary_key=True),
        **CLUSTERED,
    )

    op.create_table(
        "conversations",
        sa.Column("conversation_id", sa.String(128), primary_key=True),
        sa.Column("first_bucket", sa.BigInteger, nullable=False),
        **CLUSTERED,
    )
    op.create_table(
        "day_generations",
        sa.Column("utc_day", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        **CLUSTERED,
    )

    op.create_table(
        "counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
        **CLUSTERED,
    )

    label_set = ("operation", "provider", "model")
    op.create_table(
        "metric_totals",
        *(_label(name, primary_key=True) for name in label_set),
        sa.Column("outcome", sa.String(16), primary_key=True),
        _label("error_type", primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("duration_sum_s", sa.Float, nullable=False),
        sa.Column("ttfc_sum_s", sa.Float, nullable=False),
        sa.Column("ttfc_count", sa.BigInteger, nullable=False),
        sa.Column("input_token_calls", sa.BigInteger, nullable=False),
        sa.Column("output_token_calls", sa.BigInteger, nullable=False),
        **CLUSTERED,
    )
    op.create_table(
        "metric_histograms",
        *(_label(name, primary_key=True) for name in label_set),
        sa.Column("outcome", sa.String(16), primary_key=True),
        _label("error_type", primary_key=True),
        sa.Column("metric", sa.String(32), primary_key=True),
        sa.Column("le_index", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        **CLUSTERED,
    )


def downgrade() -> None:
    op.drop_table("metric_histograms")
    op.drop_table("metric_totals")
    op.drop_table("counters")
    op.drop_table("day_generations")
    op.drop_table("conversations")
    op.drop_table("conversation_buckets")
    op.drop_table("rollups")
    op.drop_index("ix_calls_start_ns", table_name="calls")
    op.drop_table("calls")
