"""The cache of finished days: always the same answer as no cache, and read only when needed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

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


def test_warm_cache_reads_only_today(store: Store) -> None:
    _seed(store)
    cache = queries.DayCache()
    queries.stats(store.engine, "all", "UTC", now=NOW, cache=cache)
    misses = cache.misses
    queries.stats(store.engine, "all", "UTC", now=NOW, cache=cache)
    assert cache.misses == misses  # every finished day came from the cache


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
