"""The collector: exact exposition, sample values, hostile labels, the model cap, pruning."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from otelstats.collector import StatsCollector, build_registry
from otelstats.exporter import ExporterStats
from otelstats.records import MAX_LABEL_LENGTH
from otelstats.store import Store
from tests.factories import record

from .conftest import T0, known_records

GOLDEN = Path(__file__).with_name("golden_metrics.txt")
# These two depend on the machine (Python version, file size); everything else is exact.
VARYING = {"otelstats_build_info", "otelstats_database_size_bytes"}

DURATION = "gen_ai_client_operation_duration_seconds"
TOKENS = "gen_ai_client_token_usage"
TTFC = "gen_ai_client_operation_time_to_first_chunk_seconds"


def _labels(model: str = "gpt-test", **extra: str) -> dict[str, str]:
    return {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": model,
        **extra,
    }


def _stable_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.update(s.name for s in family.samples)
    return {n for n in names if not any(n.startswith(v) for v in VARYING)}


def test_golden_exposition(fed_store: Store) -> None:
    registry = build_registry(fed_store, model_limit=10)
    text = generate_latest(registry.restricted_registry(_stable_names(registry))).decode()
    assert text == GOLDEN.read_text()


def test_sample_values(fed_store: Store) -> None:
    registry = build_registry(fed_store, model_limit=10)
    get = registry.get_sample_value
    assert get("otelstats_requests_total", {**_labels(), "outcome": "ok"}) == 3
    assert get("otelstats_requests_total", {**_labels(), "outcome": "cancelled"}) == 1
    assert get("otelstats_requests_total", {**_labels("small-model"), "outcome": "error"}) == 1
    assert get("otelstats_prompt_tokens_total", _labels()) == 12 + 100 + 50 + 7
    assert get("otelstats_completion_tokens_total", _labels()) == 30 + 200 + 500
    assert get("otelstats_conversations_total") == 2
    # Histograms: cumulative buckets, _count == +Inf, error_type only on the failed call.
    assert get(f"{DURATION}_count", _labels()) == 4
    assert get(f"{DURATION}_sum", _labels()) == pytest.approx(0.5 + 2.0 + 3.0 + 1.5)
    assert get(f"{DURATION}_bucket", {**_labels(), "le": "0.64"}) == 1
    assert get(f"{DURATION}_bucket", {**_labels(), "le": "2.56"}) == 3
    assert get(f"{DURATION}_bucket", {**_labels(), "le": "+Inf"}) == 4
    failed = _labels("small-model", error_type="RateLimitError")
    assert get(f"{DURATION}_count", failed) == 1
    assert get(f"{DURATION}_count", _labels("small-model")) == 1
    assert get(f"{TTFC}_count", _labels()) == 3
    assert get(f"{TTFC}_bucket", {**_labels(), "le": "0.08"}) == 1
    assert get(f"{TTFC}_bucket", {**_labels(), "le": "0.32"}) == 3
    assert get(f"{TOKENS}_count", {**_labels(), "gen_ai_token_type": "input"}) == 4
    assert get(f"{TOKENS}_count", {**_labels(), "gen_ai_token_type": "output"}) == 3
    assert get(f"{TOKENS}_sum", {**_labels(), "gen_ai_token_type": "output"}) == 730
    # A failed call without usage has no token series at all (as with OTel).
    assert get(f"{TOKENS}_count", {**failed, "gen_ai_token_type": "input"}) is None
    path = fed_store.path
    assert path is not None
    on_disk = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    assert get("otelstats_database_size_bytes") == on_disk > 0
    build = [s for f in registry.collect() for s in f.samples if s.name == "otelstats_build_info"]
    assert [(s.labels["version"], s.value) for s in build] == [("0.1.0", 1.0)]


def test_registry_is_private(fed_store: Store) -> None:
    build_registry(fed_store)
    assert REGISTRY.get_sample_value("otelstats_conversations_total") is None


def test_counters_survive_pruning_raw_calls(fed_store: Store) -> None:
    registry = build_registry(fed_store)
    before = generate_latest(registry)
    with fed_store.engine.begin() as conn:
        deleted = conn.execute(sa.text("DELETE FROM calls")).rowcount
    assert deleted == 6
    after = generate_latest(registry)

    def strip(text: bytes) -> list[str]:
        return [line for line in text.decode().splitlines() if "database_size" not in line]

    assert strip(after) == strip(before)


def test_model_cap_folds_the_rest_into_other(sqlite_store: Store) -> None:
    calls = {"big": 5, "mid": 3, "tiny-a": 1, "tiny-b": 1}
    sqlite_store.write([record(T0, request_model=m) for m, n in calls.items() for _ in range(n)])
    registry = build_registry(sqlite_store, model_limit=2)
    get = registry.get_sample_value
    assert get("otelstats_requests_total", {**_labels("big"), "outcome": "ok"}) == 5
    assert get("otelstats_requests_total", {**_labels("mid"), "outcome": "ok"}) == 3
    assert get("otelstats_requests_total", {**_labels("other"), "outcome": "ok"}) == 2
    assert get("otelstats_requests_total", {**_labels("tiny-a"), "outcome": "ok"}) is None
    assert get(f"{DURATION}_count", _labels("other")) == 2
    assert get("otelstats_metrics_models_folded") == 2
    models = {
        s.labels["gen_ai_request_model"]
        for f in registry.collect()
        for s in f.samples
        if "gen_ai_request_model" in s.labels
    }
    assert models == {"big", "mid", "other"}


def test_hostile_label_values_stay_valid(sqlite_store: Store) -> None:
    hostile = [
        'quote"inside',
        "back\\slash\\",
        "new\nline\r\n",
        "x" * 10_000,
        "x" * 10_000 + "y",  # same first 256 characters as the previous one: must merge
        "ünïcødé 模型 \U0001f916",
        "}{=,\t",
    ]
    sqlite_store.write(
        [record(T0, request_model=m, outcome="error", error_type=m, provider=m) for m in hostile]
    )
    registry = build_registry(sqlite_store, model_limit=100)
    text = generate_latest(registry).decode()
    families = {f.name: f for f in parse_text(text)}
    models = {s.labels["gen_ai_request_model"] for s in families["otelstats_requests"].samples}
    assert models == {m[:MAX_LABEL_LENGTH].encode("utf-8", "replace").decode() for m in hostile}
    merged = next(
        s
        for s in families["otelstats_requests"].samples
        if s.labels["gen_ai_request_model"] == "x" * MAX_LABEL_LENGTH
    )
    assert merged.value == 2
    values = [v for f in families.values() for s in f.samples for v in s.labels.values()]
    assert max(len(v) for v in values) == MAX_LABEL_LENGTH
    om_names = {f.name for f in parse_om(generate_openmetrics(registry).decode())}
    assert {DURATION, "otelstats_requests", "otelstats_build"} <= om_names


def test_exporter_stats_provider(fed_store: Store) -> None:
    stats = ExporterStats(written=7, duplicates=1, pending=2, dropped=3, last_error=None)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(fed_store, exporter_stats=lambda: stats))
    assert registry.get_sample_value("otelstats_exporter_records_written_total") == 7
    assert registry.get_sample_value("otelstats_exporter_records_pending") == 2
    assert registry.get_sample_value("otelstats_exporter_records_dropped_total") == 3
    # Without an exporter in the serving process the families are absent, not zero.
    assert build_registry(fed_store).get_sample_value("otelstats_exporter_records_pending") is None


def test_model_limit_must_be_positive(fed_store: Store) -> None:
    with pytest.raises(ValueError, match="model_limit"):
        StatsCollector(fed_store, model_limit=0)


@pytest.mark.postgres
def test_same_totals_on_postgresql(pg_store: Store) -> None:
    pg_store.write(known_records())
    registry = build_registry(pg_store, model_limit=1)
    get = registry.get_sample_value
    assert get("otelstats_requests_total", {**_labels(), "outcome": "ok"}) == 3
    assert get("otelstats_requests_total", {**_labels("other"), "outcome": "error"}) == 1
    assert get(f"{DURATION}_bucket", {**_labels(), "le": "2.56"}) == 3
    assert get("otelstats_conversations_total") == 2
    assert get("otelstats_database_size_bytes") is None


def test_conversations_count_every_id_once_and_survive_pruning(sqlite_store: Store) -> None:
    sqlite_store.write([record(T0, conversation_id="first")])
    registry = build_registry(sqlite_store)
    assert registry.get_sample_value("otelstats_conversations_total") == 1
    sqlite_store.write([record(T0, conversation_id="second"), record(T0, conversation_id="first")])
    assert registry.get_sample_value("otelstats_conversations_total") == 2
    with sqlite_store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM calls")
    assert registry.get_sample_value("otelstats_conversations_total") == 2
