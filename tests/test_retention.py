"""Retention: pruning removes raw calls, keeps every aggregate, and gives space back."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from otelstats.errors import ConfigError
from otelstats.retention import parse_age, prune
from otelstats.store import Store
from tests.factories import record

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def _counts(store: Store) -> dict[str, object]:
    with store.engine.connect() as conn:
        return {
            "calls": conn.scalar(sa.text("SELECT COUNT(*) FROM calls")),
            "rollup_requests": conn.scalar(sa.text("SELECT SUM(requests) FROM rollups")),
            "rollup_tokens": conn.scalar(sa.text("SELECT SUM(output_tokens) FROM rollups")),
            "total_requests": conn.scalar(sa.text("SELECT SUM(requests) FROM metric_totals")),
            "histogram": conn.scalar(sa.text("SELECT SUM(count) FROM metric_histograms")),
            "conversations": conn.scalar(sa.text("SELECT COUNT(*) FROM conversation_buckets")),
        }


def test_prune_keeps_rollups_and_totals(store: Store) -> None:
    old = [record(NOW - timedelta(days=100, minutes=i), conversation_id=f"c{i}") for i in range(7)]
    recent = [record(NOW - timedelta(days=3, minutes=i)) for i in range(5)]
    store.write(old + recent)
    before = _counts(store)

    result = prune(store, parse_age("90d"), now_ns=int(NOW.timestamp() * 1e9))

    after = _counts(store)
    assert result.deleted_calls == 7
    assert after["calls"] == 5
    assert {k: v for k, v in after.items() if k != "calls"} == {
        k: v for k, v in before.items() if k != "calls"
    }
    # Idempotent: nothing left to prune, and re-delivering a pruned span is not double-counted
    # only if its raw row still exists; the rollups of kept calls are untouched either way.
    assert prune(store, parse_age("90d"), now_ns=int(NOW.timestamp() * 1e9)).deleted_calls == 0


def test_prune_reclaims_sqlite_space(sqlite_store: Store) -> None:
    padding = "x" * 120
    sqlite_store.write(
        [
            record(NOW - timedelta(days=400, seconds=i), conversation_id=padding + str(i))
            for i in range(6000)
        ]
    )
    result = prune(sqlite_store, parse_age("30d"), now_ns=int(NOW.timestamp() * 1e9))
    assert result.deleted_calls == 6000
    assert result.reclaimed_bytes is not None
    assert result.reclaimed_bytes > 0


@pytest.mark.parametrize("text", ["", "90", "0d", "-3d", "1y", "ninety days", "9999999d"])
def test_parse_age_rejects_bad_input(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid age"):
        parse_age(text)


def test_parse_age_units() -> None:
    assert parse_age("90d") == 90 * 86400
    assert parse_age(" 12h ") == 12 * 3600
    assert parse_age("2w") == 14 * 86400
