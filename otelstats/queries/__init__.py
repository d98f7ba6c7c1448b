"""Every aggregate otelstats shows: the dashboard, exports, CLI and /metrics only format these.

Knows no web framework and no Prometheus client (DESIGN.md §1): it takes an Engine and returns
plain data.
"""

from __future__ import annotations

from .daycache import DayCache
from .periods import PERIODS, resolve_zone
from .stats import daily_by_model, data_version, stats

__all__ = ["PERIODS", "DayCache", "daily_by_model", "data_version", "resolve_zone", "stats"]
