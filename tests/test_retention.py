"""Retention: pruning removes raw calls, keeps every aggregate, and gives space back."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from otelstats.config import Settings
from otelstats.errors import ConfigError
from otelstats.retention import VACUUM_PAGES, enforce, parse_age, prune, run_periodically
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
    path = Path(sqlite_store.engine.url.database or "")
    before = path.stat().st_size
    statements: list[str] = []
    sqlite_store.engine.dispose()  # new connections, each tracing what it runs

    @sa.event.listens_for(sqlite_store.engine, "connect")
    def _trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(statements.append)

    result = prune(sqlite_store, parse_age("30d"), now_ns=int(NOW.timestamp() * 1e9))
    assert result.deleted_calls == 6000
    assert result.reclaimed_bytes is not None
    assert result.reclaimed_bytes > 0
    # Every free page went back (not one page per step), so the file shrank by most of the rows.
    with sqlite_store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA freelist_count").scalar() == 0
    assert path.stat().st_size < before / 2
    # ... in steps of VACUUM_PAGES pages, not one step (one write transaction) per page.
    pages = result.reclaimed_bytes // 4096
    steps = sum("incremental_vacuum" in statement for statement in statements)
    assert 1 <= steps <= pages // VACUUM_PAGES + 2


@pytest.mark.parametrize("text", ["", "90", "0d", "-3d", "1y", "ninety days", "9999999d"])
def test_parse_age_rejects_bad_input(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid age"):
        parse_age(text)


def test_parse_age_units() -> None:
    assert parse_age("90d") == 90 * 86400
    assert parse_age(" 12h ") == 12 * 3600
    assert parse_age("2w") == 14 * 86400


def test_automatic_retention_removes_old_calls_and_keeps_totals(store: Store) -> None:
    store.write([record(NOW - timedelta(days=40, minutes=i)) for i in range(4)])
    store.write([record(NOW - timedelta(days=1))])
    before = _counts(store)

    removed = enforce(store, Settings(retention_s=parse_age("30d")), now_ns=_ns(NOW))

    assert removed == 4
    after = _counts(store)
    assert after["calls"] == 1
    assert after["rollup_requests"] == before["rollup_requests"] == 5


def test_size_cap_removes_the_oldest_calls_until_the_file_fits(sqlite_store: Store) -> None:
    padding = "y" * 100
    old = [
        record(NOW - timedelta(days=300, seconds=i), conversation_id=padding + str(i))
        for i in range(8000)
    ]
    newest = record(NOW - timedelta(minutes=1))
    sqlite_store.write([*old, newest])
    path = sqlite_store.path
    assert path is not None
    size = path.stat().st_size + path.with_name(path.name + "-wal").stat().st_size
    cap_mb = max(1, size // 2**20 // 2)
    assert size > cap_mb * 2**20

    removed = enforce(sqlite_store, Settings(max_db_mb=cap_mb), now_ns=_ns(NOW))

    assert removed > 0
    size = path.stat().st_size + path.with_name(path.name + "-wal").stat().st_size
    assert size <= cap_mb * 2**20
    with sqlite_store.engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT span_id FROM calls")).scalars().all()
        assert conn.scalar(sa.text("SELECT SUM(requests) FROM rollups")) == 8001
    assert newest.span_id in kept  # the oldest go first


def test_retention_loop_runs_until_stopped(sqlite_store: Store) -> None:
    sqlite_store.write([record(datetime.now(timezone.utc) - timedelta(days=10))])
    stop = threading.Event()
    worker = threading.Thread(
        target=run_periodically,
        args=(sqlite_store, Settings(retention_s=parse_age("1d")), stop, 0.05),
    )
    worker.start()
    deadline = time.monotonic() + 30
    while _counts(sqlite_store)["calls"] != 0:
        assert time.monotonic() < deadline, "retention never ran"
        time.sleep(0.05)
    stop.set()
    worker.join(timeout=10)
    assert not worker.is_alive()


def test_retention_settings_come_from_the_environment() -> None:
    settings = Settings.from_env({"OTELSTATS_RETENTION": "90d", "OTELSTATS_MAX_DB_MB": "512"})
    assert settings.retention_s == 90 * 86400
    assert settings.max_db_mb == 512
    with pytest.raises(ConfigError, match="OTELSTATS_RETENTION='forever' is invalid"):
        Settings.from_env({"OTELSTATS_RETENTION": "forever"})


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)
