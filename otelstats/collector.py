"""The Prometheus view of the store: a custom collector on a private registry, run at each scrape.

Formats what `queries.totals` returns under the names OpenTelemetry's Prometheus exporter gives the
GenAI metrics (so GenAI Grafana dashboards work unchanged), plus `otelstats_*` families for what has
no semantic-convention name. Never computes a number of its own beyond summing label sets.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Metric
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from . import semconv
from .queries.totals import (
    AllTimeTotals,
    LabelTotals,
    all_time_totals,
    stored_counters,
)
from .records import MAX_LABEL_LENGTH
from .store import Store


class ExporterCounts(Protocol):
    """What /metrics reads of an exporter's stats (`StatsSpanExporter.stats` fits)."""

    @property
    def written(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def dropped(self) -> int: ...


ExporterStatsProvider = Callable[[], "ExporterCounts | None"]
"""Called at each scrape; None when the serving process hosts no exporter (yet)."""

log = logging.getLogger(__name__)

# OTel's error.type fallback when a call failed without saying how.
ERROR_TYPE_OTHER = "_OTHER"

_OP, _PROVIDER, _MODEL = "gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"

# (family name without unit, unit, help, store metric, boundaries, token type)
_HISTOGRAMS: tuple[tuple[str, str, str, str, tuple[float, ...], str | None], ...] = (
    (
        "gen_ai_client_operation_duration",
        "seconds",
        "GenAI operation duration",
        "duration",
        semconv.DURATION_BUCKETS,
        None,
    ),
    (
        "gen_ai_client_token_usage",
        "",  # OTel drops the `{token}` annotation unit: no suffix, no UNIT line
        "Measures number of input and output tokens used",
        "input_tokens",
        semconv.TOKEN_USAGE_BUCKETS,
        semconv.TOKEN_TYPE_INPUT,
    ),
    (
        "gen_ai_client_token_usage",
        "",
        "Measures number of input and output tokens used",
        "output_tokens",
        semconv.TOKEN_USAGE_BUCKETS,
        semconv.TOKEN_TYPE_OUTPUT,
    ),
    (
        "gen_ai_client_operation_time_to_first_chunk",
        "seconds",
        "Time to receive the first chunk in a streaming operation",
        "ttfc",
        semconv.TIME_TO_FIRST_CHUNK_BUCKETS,
        None,
    ),
)


def label_value(value: str) -> str:
    """A label value safe to expose: length-capped, valid UTF-8 (the client escapes it)."""
    capped = value[:MAX_LABEL_LENGTH]
    return capped.encode("utf-8", "replace").decode("utf-8")


def _count_and_sum(t: LabelTotals, metric: str) -> tuple[int, float]:
    if metric == "duration":
        return t.requests, t.duration_sum_s
    if metric == "ttfc":
        return t.ttfc_count, t.ttfc_sum_s
    if metric == "input_tokens":
        return t.input_token_calls, float(t.input_tokens)
    return t.output_token_calls, float(t.output_tokens)


def _genai_labels(t: LabelTotals) -> dict[str, str]:
    labels = {
        _OP: label_value(t.operation),
        _PROVIDER: label_value(t.provider),
        _MODEL: label_value(t.model),
    }
    # As in OTel: error.type is set on failed calls only (and always on them).
    if t.error_type:
        labels = {"error_type": label_value(t.error_type), **labels}
    elif t.outcome == "error":
        labels = {"error_type": ERROR_TYPE_OTHER, **labels}
    return labels


def _histogram_families(totals: AllTimeTotals) -> Iterator[Metric]:
    families: dict[str, Metric] = {}
    # Several stored label sets (outcomes, over-long values cut to the same prefix) can share one
    # exposed label set; duplicates would be rejected by Prometheus, so sum them first.
    merged: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[int, float, list[int]]] = {}
    for index, (_name, _unit, _help, metric, bounds, token_type) in enumerate(_HISTOGRAMS):
        for t in totals.label_sets:
            count, total = _count_and_sum(t, metric)
            if count == 0:
                continue  # OTel exposes no series for a label set never observed
            labels = _genai_labels(t)
            if token_type is not None:
                labels["gen_ai_token_type"] = token_type
            key = (index, tuple(labels.items()))
            per_bucket = t.buckets.get(metric, {})
            buckets = [per_bucket.get(i, 0) for i in range(len(bounds) + 1)]
            old_count, old_sum, old_buckets = merged.get(key, (0, 0.0, [0] * len(buckets)))
            merged[key] = (
                old_count + count,
                old_sum + total,
                [a + b for a, b in zip(old_buckets, buckets, strict=True)],
            )
    for (index, label_items), (count, total, buckets) in merged.items():
        name, unit, help_text, _metric, bounds, _token = _HISTOGRAMS[index]
        family = families.get(name)
        if family is None:
            family = families[name] = Metric(name, help_text, "histogram", unit)
        labels = dict(label_items)
        cumulative = 0
        for bound, in_bucket in zip((*(f"{b}" for b in bounds), "+Inf"), buckets, strict=True):
            cumulative += in_bucket
            family.add_sample(f"{family.name}_bucket", {**labels, "le": bound}, cumulative)
        family.add_sample(f"{family.name}_count", labels, count)
        family.add_sample(f"{family.name}_sum", labels, total)
    # Families in a fixed order, so the exposition is stable scrape to scrape.
    for name in dict.fromkeys(h[0] for h in _HISTOGRAMS):
        if name in families:
            yield families[name]


def _counter_families(totals: AllTimeTotals) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "otelstats_requests",
        "Inference calls recorded, by outcome (ok, error, cancelled, incomplete).",
        labels=[_OP, _PROVIDER, _MODEL, "outcome"],
    )
    prompt = CounterMetricFamily(
        "otelstats_prompt_tokens",
        "Prompt (input) tokens the servers reported.",
        labels=[_OP, _PROVIDER, _MODEL],
    )
    completion = CounterMetricFamily(
        "otelstats_completion_tokens",
        "Completion (output) tokens the servers reported, or counted from stream chunks.",
        labels=[_OP, _PROVIDER, _MODEL],
    )
    by_outcome: dict[tuple[str, ...], int] = {}
    tokens: dict[tuple[str, ...], tuple[int, int]] = {}
    for t in totals.label_sets:
        base: tuple[str, ...] = (
            label_value(t.operation),
            label_value(t.provider),
            label_value(t.model),
        )
        key: tuple[str, ...] = (*base, label_value(t.outcome))
        by_outcome[key] = by_outcome.get(key, 0) + t.requests
        old_in, old_out = tokens.get(base, (0, 0))
        tokens[base] = (old_in + t.input_tokens, old_out + t.output_tokens)
    for key, value in by_outcome.items():
        requests.add_metric(list(key), value)
    for base, (input_tokens, output_tokens) in tokens.items():
        prompt.add_metric(list(base), input_tokens)
        completion.add_metric(list(base), output_tokens)
    yield requests
    yield prompt
    yield completion


def _database_size(path: Path | None) -> int | None:
    """Bytes the SQLite database takes on disk, its write-ahead log included."""
    if path is None:
        return None
    size = 0
    for part in (path, path.with_name(path.name + "-wal")):
        try:
            size += part.stat().st_size
        except OSError:
            continue
    return size


def _version() -> str:
    try:
        return metadata.version("otelstats")
    except metadata.PackageNotFoundError:
        return "unknown"


class StatsCollector(Collector):
    """Reads the store's all-time totals at each scrape and yields them as metric families."""

    def __init__(
        self,
        store: Store,
        *,
        model_limit: int = 50,
        exporter_stats: ExporterStatsProvider | None = None,
    ) -> None:
        if model_limit < 1:
            raise ValueError(f"model_limit must be at least 1, got {model_limit}")
        self._store = store
        self._model_limit = model_limit
        self._exporter_stats = exporter_stats
        self._build = {"version": _version(), "python_version": platform.python_version()}

    def describe(self) -> Iterator[Metric]:
        """The families this collector yields, without reading the database (for the registry)."""
        for name, unit, help_text, *_rest in _HISTOGRAMS[:2] + _HISTOGRAMS[3:]:
            yield Metric(name, help_text, "histogram", unit)
        for name in (
            "otelstats_requests",
            "otelstats_prompt_tokens",
            "otelstats_completion_tokens",
            "otelstats_conversations",
            "otelstats_records_dropped",
        ):
            yield CounterMetricFamily(name, "")
        yield GaugeMetricFamily("otelstats_metrics_models_folded", "")
        if self._store.path is not None:
            yield GaugeMetricFamily("otelstats_database_size_bytes", "")
        if self._exporter_stats is not None:
            yield CounterMetricFamily("otelstats_exporter_records_written", "")
            yield GaugeMetricFamily("otelstats_exporter_records_pending", "")
            yield CounterMetricFamily("otelstats_exporter_records_dropped", "")
        yield InfoMetricFamily("otelstats_build", "")

    def collect(self) -> Iterator[Metric]:
        totals = all_time_totals(self._store.engine, model_limit=self._model_limit)
        yield from _histogram_families(totals)
        yield from _counter_families(totals)
        counters = stored_counters(self._store.engine)
        yield CounterMetricFamily(
            "otelstats_conversations",
            "Distinct conversation ids ever seen (kept when old history is pruned).",
            value=counters.get("conversations", 0),
        )
        yield CounterMetricFamily(
            "otelstats_records_dropped",
            "Call records instrumented processes had to drop (spool full), reported to the "
            "database once it was writable again.",
            value=counters.get("dropped_records", 0),
        )
        yield GaugeMetricFamily(
            "otelstats_metrics_models_folded",
            "Models whose label was folded into model `other` by the cardinality cap.",
            value=totals.models_folded,
        )
        size = _database_size(self._store.path)
        if size is not None:
            yield GaugeMetricFamily(
                "otelstats_database_size_bytes",
                "Size of the SQLite database file and its write-ahead log.",
                value=size,
            )
        yield from self._exporter_families()
        info = InfoMetricFamily("otelstats_build", "otelstats build information.")
        info.add_metric([], self._build)
        yield info

    def _exporter_families(self) -> Iterator[Metric]:
        stats = self._exporter_stats() if self._exporter_stats is not None else None
        if stats is None:
            return
        yield CounterMetricFamily(
            "otelstats_exporter_records_written",
            "Call records this process's exporter stored for the first time.",
            value=stats.written,
        )
        yield GaugeMetricFamily(
            "otelstats_exporter_records_pending",
            "Call records waiting in this process's exporter to be written.",
            value=stats.pending,
        )
        yield CounterMetricFamily(
            "otelstats_exporter_records_dropped",
            "Call records this process's exporter lost (spool full or journal unreadable).",
            value=stats.dropped,
        )


def build_registry(
    store: Store,
    *,
    model_limit: int = 50,
    exporter_stats: ExporterStatsProvider | None = None,
) -> CollectorRegistry:
    """A private registry holding only the otelstats collector (never the global REGISTRY)."""
    registry = CollectorRegistry(auto_describe=False)
    collector = StatsCollector(
        store,
        model_limit=model_limit,
        exporter_stats=exporter_stats,
    )
    registry.register(collector)
    return registry
