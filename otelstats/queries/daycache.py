"""A cache of local days, so All Time does not re-read two years of rollups per request.

A day's sums change only when calls land in it; the writer bumps a counter per UTC day it
touches (`day_generations`) in the same transaction, and an entry is used only while the
counters of the UTC days it overlaps are unchanged. Today is cached the same way: every call
stored today invalidates today's entry alone, and a refresh with nothing new reads no rollups.
The cache is an object the caller owns (the web app keeps one), never module state.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..models import DayGeneration
from . import periods

Sums = list[float]
DayCells = dict[str, Sums]
"""model → sums for one local day."""

GENERATIONS: sa.Table = DayGeneration.__table__  # type: ignore[assignment]


class DayCache:
    """Sums per (zone, local day, model) of finished days; thread-safe, bounded (LRU)."""

    def __init__(self, max_days: int = 20_000) -> None:
        self._max_days = max_days
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, date], tuple[tuple[int, ...], DayCells]] = (
            OrderedDict()
        )
        self.hits = 0
        self.misses = 0
        # Distinct conversation ids of the finished days of a period: a DISTINCT over a month of
        # buckets is most of a warm 30-day query, and the set only changes with those days.
        self._conversations: OrderedDict[
            tuple[str, date, date], tuple[tuple[int, ...], frozenset[str]]
        ] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, key: tuple[str, date], signature: tuple[int, ...]) -> DayCells | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != signature:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def _put(self, key: tuple[str, date], signature: tuple[int, ...], cells: DayCells) -> None:
        with self._lock:
            self._entries[key] = (signature, cells)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_days:
                self._entries.popitem(last=False)

    def view(
        self,
        conn: Connection,
        zone_key: str,
        days: Sequence[date],
        today: date,
        day_start: Callable[[date], int],
    ) -> CacheView:
        """This cache as one request sees it: the generations of its days (a window's, which
        end at `today`) are read once here, and both its cells and its conversation count are
        checked against them."""
        return CacheView(self, zone_key, today, day_start, _signatures(conn, days, day_start))


@dataclass(frozen=True)
class CacheView:
    """One request's view of a DayCache (see `DayCache.view`)."""

    cache: DayCache
    zone_key: str
    today: date
    day_start: Callable[[date], int]
    signatures: Mapping[date, tuple[int, ...]]
    """Generations of the UTC days each local day of the view overlaps."""

    def cells(
        self, days: Sequence[date], read: Callable[[int, int], Mapping[tuple[date, str], Sums]]
    ) -> dict[tuple[date, str], Sums]:
        """Sums per (day, model) for `days` (the view's): from the cache where still valid, the
        rest through `read(lo, hi)`, which returns them for [lo, hi)."""
        cache, day_start = self.cache, self.day_start
        out: dict[tuple[date, str], Sums] = {}
        stale: list[date] = []
        for day in days:
            cached = cache._get((self.zone_key, day), self.signatures[day])
            if cached is None:
                stale.append(day)
            else:
                out.update({(day, model): sums for model, sums in cached.items()})
        fresh: dict[date, DayCells] = {day: {} for day in stale}
        for lo_day, hi_day in _runs(stale):
            for (day, model), sums in read(day_start(lo_day), day_start(hi_day)).items():
                if day in fresh:
                    fresh[day][model] = sums
        for day, cells in fresh.items():
            cache._put((self.zone_key, day), self.signatures[day], cells)
            out.update({(day, model): sums for model, sums in cells.items()})
        return out

    def conversations(
        self, days: Sequence[date], read_ids: Callable[[int, int], Iterable[str]]
    ) -> int:
        """Distinct conversation ids over `days` (oldest first): the finished days' ids and
        today's, each from the cache while unchanged (a write today re-reads today's alone),
        today's counted where not already seen."""
        today, day_start = self.today, self.day_start
        finished = [d for d in days if d < today]
        today_ids: frozenset[str] = frozenset()
        if today in days:
            tomorrow = day_start(today + timedelta(days=1))
            today_ids = self._ids([today], lambda: read_ids(day_start(today), tomorrow))
        if not finished:
            return len(today_ids)
        ids = self._ids(finished, lambda: read_ids(day_start(finished[0]), day_start(today)))
        return len(ids) + sum(1 for c in today_ids if c not in ids)

    def _ids(self, days: list[date], read: Callable[[], Iterable[str]]) -> frozenset[str]:
        """The ids of consecutive `days`, cached against their generations."""
        cache = self.cache
        signature = tuple(g for day in days for g in self.signatures[day])
        key = (self.zone_key, days[0], days[-1])
        with cache._lock:
            entry = cache._conversations.get(key)
        if entry is not None and entry[0] == signature:
            return entry[1]
        ids = frozenset(read())
        with cache._lock:
            cache._conversations[key] = (signature, ids)
            while len(cache._conversations) > 16:  # a few zones x (periods + today)
                cache._conversations.popitem(last=False)
        return ids


def _signatures(
    conn: Connection, days: Sequence[date], day_start: Callable[[date], int]
) -> dict[date, tuple[int, ...]]:
    """For each local day, the generations of the UTC days it overlaps."""
    if not days:
        return {}
    spans = {
        day: range(
            day_start(day) // periods.DAY,
            (day_start(day + timedelta(days=1)) - 1) // periods.DAY + 1,
        )
        for day in days
    }
    lo = min(span.start for span in spans.values())
    hi = max(span.stop for span in spans.values())
    c = GENERATIONS.c
    rows = conn.execute(
        sa.select(c.utc_day, c.generation).where(c.utc_day >= lo, c.utc_day < hi)
    ).all()
    generation: dict[int, int] = {int(row[0]): int(row[1]) for row in rows}
    return {day: tuple(generation.get(u, 0) for u in span) for day, span in spans.items()}


def _runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days as [first, last + 1) runs, so stale days are read in few range scans."""
    runs: list[tuple[date, date]] = []
    for day in sorted(days):
        if runs and runs[-1][1] == day:
            runs[-1] = (runs[-1][0], day + timedelta(days=1))
        else:
            runs.append((day, day + timedelta(days=1)))
    return runs


__all__ = ["CacheView", "DayCache"]
