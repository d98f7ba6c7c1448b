"""The statistics of DESIGN.md §3-§4: overview, daily and per-model numbers for a period.

Everything is read from `rollups` (and `conversation_buckets` for exact distinct conversations),
grouped in SQL, so the cost grows with the number of buckets and models in the period, never with
the number of calls. The overview is the sum of the period's days, so the two always agree.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StorageError
from ..models import Call, ConversationBucket, Counter, Rollup
from ..records import OUTCOMES
from . import periods
from .daycache import CacheView, DayCache
from .periods import Window

ROLLUPS: sa.Table = Rollup.__table__  # type: ignore[assignment]
CONVERSATIONS: sa.Table = ConversationBucket.__table__  # type: ignore[assignment]
CALLS: sa.Table = Call.__table__  # type: ignore[assignment]
COUNTERS: sa.Table = Counter.__table__  # type: ignore[assignment]
DIGITS = 2
"""Every rate and average is rounded to this many decimals."""

INT_SUMS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "counted_calls",
    "unreported_calls",
    "latency_count",
    "tps_count",
)
FLOAT_SUMS = ("latency_sum_s", "tps_sum")
KEYS = (*INT_SUMS, *OUTCOMES, *FLOAT_SUMS)
_I = {name: index for index, name in enumerate(KEYS)}
Sums = list[float]
"""Numbers in KEYS order: a list, because All Time folds thousands of (day, model) cells and
adding lists element-wise runs at C speed where dicts would not."""


def _int(value: int) -> sa.ColumnElement[int]:
    # Inline integer literals (computed here, never user input): PostgreSQL only accepts the
    # day expression in both SELECT and GROUP BY if the two are textually identical, which
    # separately numbered bind parameters would not be.
    return sa.literal_column(str(int(value)), sa.BigInteger())


def local_day(bucket: sa.ColumnElement[int], segments: Sequence[tuple[int, int]]) -> Any:
    """SQL for the local day number (days since 1970-01-01) of a bucket start.

    Integer division on both backends (bigint / bigint); bucket starts are after 1970, so
    truncation equals floor.
    """
    if len(segments) == 1:
        offset: Any = _int(segments[0][1])
    else:
        whens = [
            (bucket < _int(segments[i + 1][0]), _int(segments[i][1]))
            for i in range(len(segments) - 1)
        ]
        offset = sa.case(*whens, else_=_int(segments[-1][1]))
    return (bucket + offset) // _int(periods.DAY)


def _aggregates() -> list[Any]:
    c = ROLLUPS.c
    columns: list[Any] = [sa.func.sum(c[name]).label(name) for name in (*INT_SUMS, *FLOAT_SUMS)]
    columns += [
        sa.func.sum(sa.case((c.outcome == outcome, c.requests), else_=0)).label(outcome)
        for outcome in OUTCOMES
    ]
    return columns


def _sums(row: Mapping[Any, Any] | None) -> Sums:
    """A result row → plain numbers (PostgreSQL returns Decimal for SUM(bigint))."""
    if row is None:
        return [0] * len(INT_SUMS + OUTCOMES) + [0.0] * len(FLOAT_SUMS)
    ints: Sums = [int(row[name] or 0) for name in (*INT_SUMS, *OUTCOMES)]
    return ints + [float(row[name] or 0.0) for name in FLOAT_SUMS]


def _add(into: Sums, other: Sums) -> None:
    into[:] = map(operator.add, into, other)


def _get(sums: Sums, name: str) -> float:
    return sums[_I[name]]


def _ratio(numerator: float, denominator: float, scale: float = 1.0) -> float | None:
    if not denominator:
        return None
    return round(numerator * scale / denominator, DIGITS)


def entry(sums: Sums) -> dict[str, Any]:
    """The numbers every overview/daily/model entry shares (§4), plus a few extras."""
    requests = int(_get(sums, "requests"))
    prompt, completion = int(_get(sums, "input_tokens")), int(_get(sums, "output_tokens"))
    return {
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "avg_tokens_per_second": _ratio(_get(sums, "tps_sum"), _get(sums, "tps_count")),
        "avg_latency_ms": _ratio(_get(sums, "latency_sum_s"), _get(sums, "latency_count"), 1000.0),
        "success_rate": _ratio(_get(sums, "ok"), requests, 100.0),
        "errors": int(_get(sums, "error")),
        "counted_calls": int(_get(sums, "counted_calls")),
        "unreported_calls": int(_get(sums, "unreported_calls")),
    }


def _empty() -> Sums:
    return _sums(None)


def _first_bucket(conn: Connection) -> int | None:
    value = conn.scalar(sa.select(sa.func.min(ROLLUPS.c.bucket_start)))
    return int(value) if value is not None else None


Cells = dict[tuple[date, str], Sums]


def _read_cells(conn: Connection, zone: ZoneInfo, lo: int, hi: int) -> Cells:
    """Sums per (local day, model) of the buckets in [lo, hi): one index range scan.

    SQL returns at most days x models rows, folded by the caller into days, models or both, so
    one scan serves every view (two GROUP BYs would read the buckets twice).
    """
    segments = periods.offset_segments(zone, lo, hi)
    day = local_day(ROLLUPS.c.bucket_start, segments).label("day")
    stmt = (
        sa.select(day, ROLLUPS.c.model, *_aggregates())
        .where(ROLLUPS.c.bucket_start >= lo, ROLLUPS.c.bucket_start < hi)
        .group_by(day, ROLLUPS.c.model)
    )
    return {
        (periods.EPOCH + timedelta(days=int(row.day)), str(row.model)): _sums(row._mapping)
        for row in conn.execute(stmt)
    }


def _cells(conn: Connection, window: Window, view: CacheView | None) -> Cells:
    """Sums per (local day, model) over the period and trend days; days up to today come from
    the cache `view` while they are unchanged."""
    zone = window.zone
    if view is None:
        return _read_cells(conn, zone, window.scan_lo, window.hi)
    return view.cells(_scanned_days(window), lambda lo, hi: _read_cells(conn, zone, lo, hi))


def _scanned_days(window: Window) -> list[date]:
    return sorted(set(window.days) | set(window.trend_days))


def _view(conn: Connection, window: Window, cache: DayCache | None) -> CacheView | None:
    if cache is None:
        return None
    zone = window.zone
    return cache.view(
        conn,
        window.tz,
        _scanned_days(window),
        window.days[-1],
        lambda day: periods.day_start(day, zone),
    )


def _fold(cells: Cells, window: Window) -> tuple[dict[date, Sums], dict[str, Sums]]:
    """Per local day (period and trend days), and per model (period days only)."""
    in_period = set(window.days)
    days: dict[date, Sums] = {}
    models: dict[str, Sums] = {}
    for (local, model), sums in cells.items():
        _add(days.setdefault(local, _empty()), sums)
        if local in in_period:
            _add(models.setdefault(model, _empty()), sums)
    return days, models


def _conversations(conn: Connection, window: Window, view: CacheView | None) -> int:
    """Distinct conversation ids among the period's calls.

    All Time reads the writer's count of ids ever seen rather than a DISTINCT over every
    bucket; a period reads the buckets it covers (from the cache `view` while unchanged).
    """
    c = CONVERSATIONS.c
    if window.period == "all":
        # Kept by the writer: a COUNT over millions of ids would cost more than all else here.
        stmt = sa.select(COUNTERS.c.value).where(COUNTERS.c.name == "conversations")
        return int(conn.scalar(stmt) or 0)
    if view is None:
        stmt = sa.select(sa.func.count(sa.distinct(c.conversation_id))).where(
            c.bucket_start >= window.lo, c.bucket_start < window.hi
        )
        return int(conn.scalar(stmt) or 0)

    def read_ids(lo: int, hi: int) -> list[str]:
        query = sa.select(c.conversation_id).where(c.bucket_start >= lo, c.bucket_start < hi)
        return list(conn.scalars(query.distinct()))

    return view.conversations(window.days, read_ids)


def _overview(days: Mapping[date, Sums], window: Window, conversations: int) -> dict[str, Any]:
    total = _empty()
    for day in window.days:
        _add(total, days.get(day, _empty()))
    overview = entry(total)
    overview["conversations"] = conversations
    overview["cached_input_tokens"] = int(_get(total, "cached_input_tokens"))
    overview["reasoning_tokens"] = int(_get(total, "reasoning_tokens"))
    overview["outcomes"] = {outcome: int(_get(total, outcome)) for outcome in OUTCOMES}
    trend = [days.get(day, _empty()) for day in window.trend_days]
    overview["trend"] = {
        "requests": [int(_get(s, "requests")) for s in trend],
        "total_tokens": [int(_get(s, "input_tokens") + _get(s, "output_tokens")) for s in trend],
    }
    return overview


def _models(by_model: Mapping[str, Sums]) -> list[dict[str, Any]]:
    models = [{"model": model} | entry(sums) for model, sums in by_model.items()]
    models.sort(key=lambda m: (-m["requests"], -m["total_tokens"], m["model"]))
    return models


def _window(conn: Connection, period: str, zone: ZoneInfo, now: datetime | None) -> Window:
    first_day = None
    if period == "all":
        first_day = periods.first_local_day(_first_bucket(conn), zone)
    return periods.make_window(period, zone, now or datetime.now(timezone.utc), first_day)


def _reader(engine: Engine) -> Connection:
    conn = engine.connect()
    if conn.dialect.name == "postgresql":
        # One snapshot for the several statements, so overview, daily and models agree.
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
    return conn


def stats(
    engine: Engine,
    period: str = "7d",
    tz: str = "UTC",
    *,
    now: datetime | None = None,
    cache: DayCache | None = None,
) -> dict[str, Any]:
    """The JSON of DESIGN.md §3 for `period` in the IANA zone `tz` (QueryError if invalid).

    `daily` lists every local day of the period, oldest first, zero days included; for `all` it
    starts at the first recorded local day, and on an empty database it is today alone.
    Calls stamped after today (a skewed clock) are left out until their day comes.
    A long-lived caller passes a `DayCache` so days that did not change are not read again.
    """
    periods.check_period(period)
    zone = periods.resolve_zone(tz)
    try:
        with _reader(engine) as conn, conn.begin():
            window = _window(conn, period, zone, now)
            view = _view(conn, window, cache)
            days, models = _fold(_cells(conn, window, view), window)
            conversations = _conversations(conn, window, view)
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read the statistics: {exc.__class__.__name__}: {exc}") from exc
    daily = [{"date": day.isoformat()} | entry(days.get(day, _empty())) for day in window.days]
    return {
        "period": period,
        "timezone": window.tz,
        "start": window.start.isoformat() if window.start is not None else None,
        "end": window.now.isoformat(timespec="seconds"),
        "overview": _overview(days, window, conversations),
        "daily": daily,
        "models": _models(models),
    }


def daily_by_model(
    engine: Engine,
    period: str = "7d",
    tz: str = "UTC",
    *,
    now: datetime | None = None,
    cache: DayCache | None = None,
) -> list[dict[str, Any]]:
    """One row per local day and model that had calls in the period (the `by=model` CSV).

    Rows carry `date`, `model` and the numbers of a `daily` entry; ordered by date, then by
    requests (most first), then model. Days without calls have no rows here (unlike `daily`).
    """
    periods.check_period(period)
    zone = periods.resolve_zone(tz)
    try:
        with _reader(engine) as conn, conn.begin():
            window = _window(conn, period, zone, now)
            cells = _cells(conn, window, _view(conn, window, cache))
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read the statistics: {exc.__class__.__name__}: {exc}") from exc
    in_period = set(window.days)
    rows = [
        {"date": day.isoformat(), "model": model} | entry(sums)
        for (day, model), sums in cells.items()
        if day in in_period
    ]
    rows.sort(key=lambda r: (r["date"], -r["requests"], r["model"]))
    return rows


def data_version(engine: Engine) -> str:
    """A token that changes whenever calls are stored; two index lookups, whatever the size.

    The highest call id changes on every insert; the latest rollup bucket is added so a database
    whose raw calls were pruned and refilled to the same id still yields a new token.
    """
    stmt = sa.select(
        sa.select(sa.func.max(CALLS.c.id)).scalar_subquery(),
        sa.select(sa.func.max(ROLLUPS.c.bucket_start)).scalar_subquery(),
    )
    try:
        with engine.connect() as conn:
            row = conn.execute(stmt).one()
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read the database: {exc.__class__.__name__}: {exc}") from exc
    return f"{row[0] or 0}-{row[1] or 0}"
