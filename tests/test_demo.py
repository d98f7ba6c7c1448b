"""`otelstats demo`: deterministic history written once, real instrumented traffic, dashboard."""

from __future__ import annotations

import json
import urllib.request
from datetime import date
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from otelstats.config import Settings
from otelstats.demo import DEMO_MODELS, history, start_demo, write_history
from otelstats.store import Store
from tests.servers import running

DAY = date(2024, 3, 15)


def test_history_is_deterministic_and_varied() -> None:
    calls = history(today=DAY, days=21)
    assert calls == history(today=DAY, days=21)
    assert len({(c.trace_id, c.span_id) for c in calls}) == len(calls)
    assert {c.model for c in calls} == {m.name for m in DEMO_MODELS}
    assert {c.outcome for c in calls} >= {"ok", "error"}
    assert {c.streaming for c in calls} == {True, False}
    assert len({c.conversation_id for c in calls}) < len(calls)  # multi-turn conversations
    days = {c.start_ns // 86_400_000_000_000 for c in calls}
    assert len(days) == 21
    # The same day yields the same calls whatever the run's "today".
    later = history(today=date(2024, 3, 16), days=21)
    assert all(call in later for call in calls[len(calls) - 5 :])


def test_history_is_not_written_twice(sqlite_store: Store) -> None:
    first = write_history(sqlite_store, today=DAY, days=10)
    assert first > 0
    assert write_history(sqlite_store, today=DAY, days=10) == 0


def test_demo_serves_history_and_live_traffic(tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "demo.db"), port=0)
    tracer_provider = TracerProvider()
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    demo = start_demo(
        settings,
        trickle_s=None,
        echo=lambda _line: None,
        instrument_options={"tracer_provider": tracer_provider, "meter_provider": meter_provider},
    )
    try:
        with running(demo.httpd):
            assert demo.live_calls == 12
            demo.handle.flush()
            url = demo.url + "api/stats?period=today"
            with urllib.request.urlopen(url, timeout=10) as response:
                today = json.load(response)["overview"]
            assert today["requests"] == demo.live_calls
            assert today["errors"] == 1
            assert today["conversations"] >= 1
    finally:
        demo.close()
        tracer_provider.shutdown()
        meter_provider.shutdown()
    # A second demo run on the same database adds no history.
    store = Store.open(settings.db)
    try:
        assert write_history(store) == 0
    finally:
        store.dispose()
