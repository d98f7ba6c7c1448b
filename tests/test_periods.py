"""Local days in any timezone: half-hour and 45-minute offsets, DST days of 23 and 25 hours,
calls one second either side of local midnight, and what `today`, `7d`, `30d` and `all` cover."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from otelstats.errors import QueryError
from otelstats.queries import stats
from otelstats.queries.periods import day_start, offset_segments
from otelstats.store import Store
from tests.factories import record


def local(tz: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz), fold=fold)  # type: ignore[arg-type,misc]


def daily(store: Store, period: str, tz: str, now: datetime) -> dict[str, int]:
    result = stats(store.engine, period, tz, now=now)
    return {d["date"]: d["requests"] for d in result["daily"]}


@pytest.mark.parametrize("tz", ["Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "UTC"])
def test_one_second_either_side_of_local_midnight(store: Store, tz: str) -> None:
    midnight = local(tz, 2026, 5, 13)
    store.write(
        [
            record(midnight - timedelta(seconds=1), duration_s=0.5),
            record(midnight, duration_s=0.5),
            record(midnight + timedelta(seconds=1), duration_s=0.5),
            record(midnight + timedelta(days=1) - timedelta(seconds=1), duration_s=0.5),
        ]
    )
    now = local(tz, 2026, 5, 13, 23, 59, 59)
    assert daily(store, "7d", tz, now)["2026-05-12"] == 1
    assert daily(store, "7d", tz, now)["2026-05-13"] == 3
    today = stats(store.engine, "today", tz, now=now)
    assert today["overview"]["requests"] == 3
    assert today["start"] == midnight.isoformat()


def test_half_hour_zone_differs_from_utc_grouping(store: Store) -> None:
    # 20:00 UTC is 01:30 the next day in Kolkata (+05:30): the call belongs to May 14 there.
    store.write([record(datetime(2026, 5, 13, 20, 0, tzinfo=timezone.utc))])
    now = datetime(2026, 5, 14, 6, 0, tzinfo=timezone.utc)
    assert daily(store, "7d", "Asia/Kolkata", now)["2026-05-14"] == 1
    assert daily(store, "7d", "UTC", now)["2026-05-13"] == 1
    # 18:14:59 UTC is 23:59:59 in Kathmandu (+05:45); 18:15:00 is the next local day.
    store.write(
        [
            record(datetime(2026, 5, 13, 18, 14, 59, tzinfo=timezone.utc)),
            record(datetime(2026, 5, 13, 18, 15, 0, tzinfo=timezone.utc)),
        ]
    )
    kathmandu = daily(store, "7d", "Asia/Kathmandu", now)
    assert (kathmandu["2026-05-13"], kathmandu["2026-05-14"]) == (1, 2)


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [
        ("Europe/Berlin", date(2026, 3, 29), 23),
        ("Europe/Berlin", date(2026, 10, 25), 25),
        ("America/New_York", date(2026, 3, 8), 23),
        ("America/New_York", date(2026, 11, 1), 25),
        ("Australia/Lord_Howe", date(2026, 4, 5), 24.5),  # a 30-minute DST shift
    ],
)
def test_dst_days(store: Store, tz: str, day: date, hours: float) -> None:
    zone = ZoneInfo(tz)
    first = day_start(day, zone)
    following = day_start(day + timedelta(days=1), zone)
    assert following - first == hours * 3600
    # One call at every quarter hour of the DST day, plus one second either side of it.
    quarter_hours = range(first, following, 900)
    store.write(
        [record(datetime.fromtimestamp(t, timezone.utc), duration_s=0.1) for t in quarter_hours]
        + [
            record(datetime.fromtimestamp(first - 1, timezone.utc), duration_s=0.1),
            record(datetime.fromtimestamp(following, timezone.utc), duration_s=0.1),
        ]
    )
    now = datetime.fromtimestamp(following + 3600, timezone.utc)
    counts = daily(store, "7d", tz, now)
    assert counts[day.isoformat()] == hours * 4
    assert counts[(day - timedelta(days=1)).isoformat()] == 1
    assert counts[(day + timedelta(days=1)).isoformat()] == 1
    assert stats(store.engine, "7d", tz, now=now)["overview"]["requests"] == hours * 4 + 2


def test_repeated_hour_of_a_fall_back_day_is_one_day(store: Store) -> None:
    tz = "Europe/Berlin"
    store.write(
        [
            record(local(tz, 2026, 10, 25, 2, 30, fold=0)),
            record(local(tz, 2026, 10, 25, 2, 30, fold=1)),
        ]
    )
    now = local(tz, 2026, 10, 25, 12)
    assert stats(store.engine, "today", tz, now=now)["overview"]["requests"] == 2


def test_dst_inside_a_30_day_period(store: Store) -> None:
    # 30 days in New York spanning the November change: every day boundary must hold.
    tz = "America/New_York"
    zone = ZoneInfo(tz)
    days = [date(2026, 10, 20) + timedelta(days=n) for n in range(30)]
    store.write([record(datetime.fromtimestamp(day_start(d, zone), timezone.utc)) for d in days])
    store.write(
        [record(datetime.fromtimestamp(day_start(d, zone) - 1, timezone.utc)) for d in days]
    )
    now = local(tz, 2026, 11, 18, 23, 0)
    counts = daily(store, "30d", tz, now)
    assert list(counts) == [d.isoformat() for d in days]
    # Each day holds its own midnight and the second before the next day's midnight (the
    # last day has no "next midnight" call).
    assert list(counts.values()) == [2] * 29 + [1]
    stats_all = stats(store.engine, "all", tz, now=now)
    assert stats_all["daily"][0]["date"] == "2026-10-19"
    assert stats_all["overview"]["requests"] == 60


def test_today_starts_at_local_midnight(store: Store) -> None:
    tz = "Asia/Tokyo"
    # 20:00 UTC on May 13 is 05:00 on May 14 in Tokyo: today there is May 14.
    now = datetime(2026, 5, 13, 20, 0, tzinfo=timezone.utc)
    store.write(
        [
            record(local(tz, 2026, 5, 13, 23, 59, 59)),
            record(local(tz, 2026, 5, 14, 0, 0, 0)),
        ]
    )
    result = stats(store.engine, "today", tz, now=now)
    assert result["start"] == "2026-05-14T00:00:00+09:00"
    assert result["end"] == "2026-05-14T05:00:00+09:00"
    assert [d["date"] for d in result["daily"]] == ["2026-05-14"]
    assert result["overview"]["requests"] == 1


@pytest.mark.parametrize(("period", "days"), [("7d", 7), ("30d", 30)])
def test_7d_and_30d_include_today(store: Store, period: str, days: int) -> None:
    tz = "Asia/Kolkata"
    now = local(tz, 2026, 5, 13, 0, 10)
    first = date(2026, 5, 13) - timedelta(days=days - 1)
    store.write(
        [
            record(local(tz, 2026, 5, 13, 0, 5)),  # today, a few minutes old
            record(local(tz, first.year, first.month, first.day, 0, 0)),  # first day
            record(local(tz, first.year, first.month, first.day) - timedelta(seconds=1)),
        ]
    )
    result = stats(store.engine, period, tz, now=now)
    assert result["start"] == local(tz, first.year, first.month, first.day).isoformat()
    assert result["daily"][0]["date"] == first.isoformat()
    assert result["daily"][-1]["date"] == "2026-05-13"
    assert len(result["daily"]) == days
    assert result["overview"]["requests"] == 2


@pytest.mark.parametrize("period", ["", "7", "7D", "week", "today ", "x" * 10_000])
def test_bad_period_raises_query_error(sqlite_store: Store, period: str) -> None:
    with pytest.raises(QueryError, match="period"):
        stats(sqlite_store.engine, period, "UTC")


@pytest.mark.parametrize(
    "tz",
    ["", "Mars/Olympus_Mons", "Europe/Berlin ", "../../etc/passwd", "/etc/localtime", "America",
     "Europe/" + "x" * 100, "x" * 100_000, "+05:30", "UTC\x00"],
)  # fmt: skip
def test_bad_timezone_raises_query_error(sqlite_store: Store, tz: str) -> None:
    with pytest.raises(QueryError, match="timezone") as caught:
        stats(sqlite_store.engine, "7d", tz)
    assert len(str(caught.value)) < 300  # an absurd string is not echoed back whole


def test_naive_now_is_refused(sqlite_store: Store) -> None:
    with pytest.raises(QueryError, match="aware"):
        stats(sqlite_store.engine, "7d", "UTC", now=datetime(2026, 5, 13))


def test_offset_segments_follow_transitions() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    lo = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp())
    hi = int(datetime(2027, 1, 1, tzinfo=timezone.utc).timestamp())
    assert offset_segments(berlin, lo, hi) == [
        (lo, 3600),
        (int(datetime(2026, 3, 29, 1, tzinfo=timezone.utc).timestamp()), 7200),
        (int(datetime(2026, 10, 25, 1, tzinfo=timezone.utc).timestamp()), 3600),
    ]
    assert offset_segments(ZoneInfo("Asia/Kolkata"), lo, hi) == [(lo, 19800)]
