"""Periods and timezones: which local days a period covers, and where they start in UTC.

A local day is an exact union of 15-minute rollup buckets in every zone (offsets are multiples of
15 minutes), so the queries group buckets by local day in SQL with the zone's UTC offset, split
into segments of constant offset around DST transitions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import QueryError

PERIODS = ("today", "7d", "30d", "all")
PERIOD_DAYS = {"today": 1, "7d": 7, "30d": 30}
TREND_DAYS = 7
MAX_TZ_LENGTH = 64
"""Longer than any IANA name (the longest is ~32 characters); longer input is refused unread."""
EPOCH = date(1970, 1, 1)
DAY = 86_400


def resolve_zone(tz: str) -> ZoneInfo:
    """An IANA zone by name, or QueryError saying what is accepted."""
    if not isinstance(tz, str) or not tz or len(tz) > MAX_TZ_LENGTH:
        shown = tz[:MAX_TZ_LENGTH] + "…" if isinstance(tz, str) else repr(tz)
        raise QueryError(f"unknown timezone {shown!r}: use an IANA name such as Europe/Berlin")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: malformed keys (absolute paths, ".."); OSError: directories such as "America".
        raise QueryError(
            f"unknown timezone {tz!r}: use an IANA name such as Europe/Berlin or UTC"
        ) from None


def check_period(period: str) -> str:
    if period not in PERIODS:
        shown = period[:32] if isinstance(period, str) else repr(period)
        raise QueryError(f"unknown period {shown!r}: use one of {', '.join(PERIODS)}")
    return period


@functools.lru_cache(maxsize=16384)
def day_start(day: date, zone: ZoneInfo) -> int:
    """Unix second of the first instant of local `day` (a skipped midnight starts at the jump)."""
    return int(datetime.combine(day, time(0), tzinfo=zone).timestamp())


def day_number(day: date) -> int:
    """Days since 1970-01-01: what `(bucket_start + offset) / 86400` yields in SQL."""
    return (day - EPOCH).days


def _offset(zone: ZoneInfo, second: int) -> int:
    offset = datetime.fromtimestamp(second, zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


@functools.lru_cache(maxsize=512)
def _transitions_in_year(zone: ZoneInfo, year: int) -> tuple[tuple[int, int], ...]:
    """(first second of the new offset, new offset) for each offset change in a UTC year.

    Sampled daily then bisected to the second: no zone changes offset twice within a day.
    Cached because it depends only on the tz database (ZoneInfo objects are themselves cached).
    """
    lo = int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp())
    hi = int(datetime(year + 1, 1, 1, tzinfo=timezone.utc).timestamp())
    found: list[tuple[int, int]] = []
    previous = _offset(zone, lo)
    t = lo
    while t < hi:
        nxt = min(t + DAY, hi)
        if _offset(zone, nxt) != previous:
            a, b = t, nxt  # offset(a) == previous != offset(b)
            while b - a > 1:
                mid = (a + b) // 2
                if _offset(zone, mid) == previous:
                    a = mid
                else:
                    b = mid
            found.append((b, _offset(zone, b)))
            previous = _offset(zone, b)
        t = nxt
    return tuple(found)


def offset_segments(zone: ZoneInfo, lo: int, hi: int) -> list[tuple[int, int]]:
    """[(from_second, utc_offset_seconds), ...] covering [lo, hi): the first starts at lo."""
    segments = [(lo, _offset(zone, lo))]
    if hi <= lo:
        return segments
    first_year = datetime.fromtimestamp(lo, timezone.utc).year
    last_year = datetime.fromtimestamp(hi - 1, timezone.utc).year
    for year in range(first_year, last_year + 1):
        for at, offset in _transitions_in_year(zone, year):
            if lo < at < hi and offset != segments[-1][1]:
                segments.append((at, offset))
    return segments


@dataclass(frozen=True)
class Window:
    """What one stats() call covers.

    `days` are the period's local days, oldest first (today last); `lo`/`hi` bound them in Unix
    seconds ([lo, hi), hi = the start of local tomorrow). `trend_days` are the last 7 local days.
    `scan_lo` is where the per-day query starts: the earlier of the period and the trend.
    """

    period: str
    zone: ZoneInfo
    now: datetime
    start: datetime | None
    days: tuple[date, ...]
    trend_days: tuple[date, ...]
    lo: int
    hi: int
    scan_lo: int

    @property
    def tz(self) -> str:
        return self.zone.key


def _days(first: date, last: date) -> tuple[date, ...]:
    return tuple(first + timedelta(days=n) for n in range((last - first).days + 1))


def first_local_day(first_bucket: int | None, zone: ZoneInfo) -> date | None:
    if first_bucket is None:
        return None
    return datetime.fromtimestamp(first_bucket, zone).date()


def make_window(
    period: str, zone: ZoneInfo, now: datetime, first_day: date | None = None
) -> Window:
    """The window of `period` at `now` in `zone`; `first_day` is the first recorded local day
    (used by `all`: without data, `all` covers today only)."""
    check_period(period)
    if now.tzinfo is None or now.utcoffset() is None:
        raise QueryError("`now` must be a timezone-aware datetime")
    local_now = now.astimezone(zone)
    today = local_now.date()
    if period == "all":
        first = min(first_day, today) if first_day is not None else today
        start = None
    else:
        first = today - timedelta(days=PERIOD_DAYS[period] - 1)
    days = _days(first, today)
    trend_days = _days(today - timedelta(days=TREND_DAYS - 1), today)
    lo = day_start(first, zone)
    if period != "all":
        start = datetime.fromtimestamp(lo, zone)
    return Window(
        period=period,
        zone=zone,
        now=local_now,
        start=start,
        days=days,
        trend_days=trend_days,
        lo=lo,
        hi=day_start(today + timedelta(days=1), zone),
        scan_lo=min(lo, day_start(trend_days[0], zone)),
    )
