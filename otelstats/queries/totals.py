"""All-time totals for /metrics: metric_totals, metric_histograms, and the stored conversations.

`all_time_totals` reads only the never-pruned per-label-set tables (cost grows with label sets, not
with calls) and folds models past the top N into `other`; `stored_counters` reads the
counters the writer keeps (conversations, dropped records). Knows nothing of Prometheus' formats.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .._deltas import TOTAL_SUMS
from ..models import Counter, MetricHistogram, MetricTotal

OTHER_MODEL = "other"
"""The model label every model outside the top N shares."""

HISTOGRAM_METRICS = ("duration", "ttfc", "input_tokens", "output_tokens")

LabelKey = tuple[str, str, str, str, str]
"""(operation, provider, model, outcome, error_type); error_type '' = did not fail."""


@dataclass
class LabelTotals:
    """All-time sums of one label set (after the model cap) and its histogram bucket counts.

    `buckets[metric][i]` is the NON-cumulative count of observations in bucket i of the spec's
    boundaries for `metric` (index len(boundaries) is +Inf).
    """

    operation: str
    provider: str
    model: str
    outcome: str
    error_type: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    duration_sum_s: float = 0.0
    ttfc_sum_s: float = 0.0
    ttfc_count: int = 0
    input_token_calls: int = 0
    output_token_calls: int = 0
    buckets: dict[str, dict[int, int]] = field(default_factory=dict)

    @property
    def key(self) -> LabelKey:
        return (self.operation, self.provider, self.model, self.outcome, self.error_type)


@dataclass(frozen=True)
class AllTimeTotals:
    """What /metrics shows of the calls: one LabelTotals per label set."""

    label_sets: list[LabelTotals]
    models_folded: int
    """How many distinct models were folded into `other` by the cap."""


_SUMS = TOTAL_SUMS
"""The sums of metric_totals: the columns the writer adds to, read back here."""


def kept_models(requests_by_model: dict[str, int], limit: int) -> set[str]:
    """The top `limit` models by requests (ties broken by name, so the choice is stable)."""
    ranked = sorted(requests_by_model.items(), key=lambda item: (-item[1], item[0]))
    return {model for model, _ in ranked[:limit]}


def _fold(
    rows: Iterable[sa.Row[tuple[object, ...]]], kept: set[str]
) -> dict[LabelKey, LabelTotals]:
    folded: dict[LabelKey, LabelTotals] = {}
    for row in rows:
        model = row.model if row.model in kept else OTHER_MODEL
        key: LabelKey = (row.operation, row.provider, model, row.outcome, row.error_type)
        target = folded.get(key)
        if target is None:
            target = folded[key] = LabelTotals(*key)
        for name in _SUMS:
            setattr(target, name, getattr(target, name) + (getattr(row, name) or 0))
    return folded


def all_time_totals(engine: Engine, *, model_limit: int) -> AllTimeTotals:
    """Every all-time total per label set, models past the top `model_limit` folded into `other`."""
    if model_limit < 1:
        raise ValueError(f"model_limit must be at least 1, got {model_limit}")
    totals = MetricTotal.__table__
    hist = MetricHistogram.__table__
    # One read transaction: totals and buckets come from the same snapshot, so a histogram's
    # +Inf bucket always equals its _count even while the writer is busy.
    with engine.connect() as conn, conn.begin():
        total_rows = conn.execute(sa.select(totals)).all()
        hist_rows = conn.execute(
            sa.select(
                hist.c.operation,
                hist.c.provider,
                hist.c.model,
                hist.c.outcome,
                hist.c.error_type,
                hist.c.metric,
                hist.c.le_index,
                hist.c["count"].label("n"),
            )
        ).all()

    requests_by_model: dict[str, int] = {}
    for row in total_rows:
        requests_by_model[row.model] = requests_by_model.get(row.model, 0) + row.requests
    kept = kept_models(requests_by_model, model_limit)
    folded = _fold(total_rows, kept)

    for row in hist_rows:
        if row.metric not in HISTOGRAM_METRICS:
            continue  # a metric a newer writer knows of; this reader cannot format it
        model = row.model if row.model in kept else OTHER_MODEL
        key: LabelKey = (row.operation, row.provider, model, row.outcome, row.error_type)
        target = folded.get(key)
        if target is None:  # a histogram row without its totals row: still count it
            target = folded[key] = LabelTotals(*key)
        per_metric = target.buckets.setdefault(row.metric, {})
        per_metric[row.le_index] = per_metric.get(row.le_index, 0) + row.n

    return AllTimeTotals(
        label_sets=sorted(folded.values(), key=lambda t: t.key),
        models_folded=len(requests_by_model) - len(kept),
    )


def stored_counters(engine: Engine) -> dict[str, int]:
    """The writers' all-time counters: `conversations` (distinct ids ever seen, what /api/stats
    says for `all`) and `dropped_records` (records exporters could not keep). One small read,
    so a scrape never scans the conversations."""
    counters: sa.Table = Counter.__table__  # type: ignore[assignment]
    with engine.connect() as conn:
        return {str(row.name): int(row.value) for row in conn.execute(sa.select(counters))}
