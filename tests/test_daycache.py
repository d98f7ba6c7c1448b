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
