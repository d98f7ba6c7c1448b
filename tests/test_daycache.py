"""The day cache: always the same answer as no cache, and read only when needed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from otelstats import queries
from otelstats.store import Store
from tests.factories import record

NOW = datetime(2026, 11, 28, 15, 0, tzinfo=timezone.utc)


def _seed(store: Store) -> None:
    store.write(
        [
            record(
                NOW - timedelta(days=d, hours=h), request_model=f"m{d % 3}", conversation_id=f"c{d}"
            )
            for d in range(0, 45)
            for h in (1, 9, 20)
        ]
    )


def _both(store: Store, cache: queries.DayCache, period: str, tz: str) -> tuple[Any, Any]:
    cached = queries.stats(store.engine, period, tz, now=NOW, cache=cache)
    plain = queries.stats(store.engine, period, tz, now=NOW)
    return cached, plain


@pytest.mark.parametrize("tz", ["UTC", "Asia/Kathmandu", "America/New_York"])
def test_cached_answers_equal_uncached(store: Store, tz: str) -> None:
    _seed(store)
    cache = queries.DayCache()
    for period in queries.PERIODS:
        for _ in range(2):  # cold, then warm
            cached, plain = _both(store, cache, period, tz)
            assert cached == plain
    assert cache.hits > 0


def test_warm_cache_reads_no_day_when_nothing_changed(store: Store) -> None:
    _seed(store)
    cache = queries.DayCache()
    for period in queries.PERIODS:
        queries.stats(store.engine, period, "UTC", now=NOW, cache=cache)
    statements: list[str] = []

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    misses = cache.misses
    for period in queries.PERIODS:
        queries.stats(store.engine, period, "UTC", now=NOW, cache=cache)
    assert cache.misses == misses  # every day, today included, came from the cache
    assert statements
    # (All Time still looks up its first bucket: one index probe, no sums, no ids.)
    reads = [s for s in statements if "sum(" in s or "conversation_buckets" in s]
    assert not reads


def test_a_call_today_rereads_today_alone(store: Store) -> None:
    _seed(store)
    cache = queries.DayCache()
    before = queries.stats(store.engine, "30d", "UTC", now=NOW, cache=cache)
    misses = cache.misses
    store.write([record(NOW - timedelta(minutes=5), conversation_id="new-today")])
    cached, plain = _both(store, cache, "30d", "UTC")
    assert cache.misses == misses + 1  # today's entry, not the 30 finished days
    assert cached == plain
    assert cached["overview"]["requests"] == before["overview"]["requests"] + 1
    assert cached["overview"]["conversations"] == before["overview"]["conversations"] + 1


def test_late_call_in_a_finished_day_is_seen(store: Store) -> None:
    _seed(store)
    cache = queries.DayCache()
    before = queries.stats(store.engine, "30d", "Europe/Berlin", now=NOW, cache=cache)

    store.write([record(NOW - timedelta(days=10), output_tokens=1000, request_model="late")])

    cached, plain = _both(store, cache, "30d", "Europe/Berlin")
    assert cached == plain
    assert cached["overview"]["requests"] == before["overview"]["requests"] + 1
    assert any(m["model"] == "late" for m in cached["models"])


def test_new_call_today_is_seen(store: Store) -> None:
    _seed(store)
    cache = queries.DayCache()
    before = queries.stats(store.engine, "today", "UTC", now=NOW, cache=cache)
    store.write([record(NOW - timedelta(minutes=5))])
    after = queries.stats(store.engine, "today", "UTC", now=NOW, cache=cache)
    assert after["overview"]["requests"] == before["overview"]["requests"] + 1


def test_cache_is_bounded() -> None:
    cache = queries.DayCache(max_days=3)
    for day in range(10):
        cache._put(("UTC", datetime(2026, 1, 1 + day).date()), (0,), {})
    assert len(cache) == 3


def test_conversations_across_finished_days_and_today_count_once(store: Store) -> None:
    store.write(
        [
            record(NOW - timedelta(days=2), conversation_id="spans-days"),
            record(NOW - timedelta(minutes=30), conversation_id="spans-days"),
            record(NOW - timedelta(minutes=20), conversation_id="today-only"),
            record(NOW - timedelta(days=3), conversation_id="old"),
        ]
    )
    cache = queries.DayCache()
    for _ in range(2):
        cached, plain = _both(store, cache, "7d", "UTC")
        assert cached["overview"]["conversations"] == plain["overview"]["conversations"] == 3

    store.write([record(NOW - timedelta(days=4), conversation_id="late")])  # a finished day
    cached, plain = _both(store, cache, "7d", "UTC")
    assert cached["overview"]["conversations"] == plain["overview"]["conversations"] == 4


def test_serve_warm_up_fills_the_apps_cache(sqlite_store: Store) -> None:
    from otelstats.web import DAY_CACHE_KEY, create_app, warm_day_cache

    _seed(sqlite_store)
    app = create_app({"TESTING": True}, store=sqlite_store)
    cache = app.extensions[DAY_CACHE_KEY]
    warm_day_cache(app, "UTC")
    assert len(cache) > 30
    misses = cache.misses
    assert app.test_client().get("/api/stats?period=all&tz=UTC").status_code == 200
    assert cache.misses == misses
