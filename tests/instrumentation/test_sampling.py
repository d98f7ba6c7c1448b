"""Trace sampling never costs the statistics a call: `every_call` with a pipeline of the app's
own (the README's `StatsSpanProcessor(StatsSpanExporter(db))`), real SDK samplers and the real
SQLite exporter."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision, StaticSampler

from otelstats import StatsSpanExporter, StatsSpanProcessor
from otelstats.instrumentation import OpenAIInstrumentor
from tests.pipeline.helpers import count_calls

from .conftest import MESSAGES


def _pipeline(provider: TracerProvider, tmp_path: Path, queue: bool = True) -> dict[str, Path]:
    """Two statistics databases on the app's provider: one behind StatsSpanProcessor, one
    behind a plain BatchSpanProcessor. `queue=False`: StatsSpanProcessor as on an SDK whose
    BatchSpanProcessor keeps its queue elsewhere (it then goes through its `on_end`)."""
    dbs = {"stats": tmp_path / "stats.db", "batch": tmp_path / "batch.db"}
    processor = StatsSpanProcessor(StatsSpanExporter(dbs["stats"]))
    if not queue:
        processor._emit = None
    provider.add_span_processor(processor)
    provider.add_span_processor(BatchSpanProcessor(StatsSpanExporter(dbs["batch"])))
    return dbs


@pytest.mark.parametrize("queue", [True, False], ids=["queue", "on_end"])
def test_calls_the_apps_sampler_drops_are_recorded_not_exported(
    client: openai.OpenAI, tmp_path: Path, queue: bool
) -> None:
    app_spans = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(app_spans))
    dbs = _pipeline(provider, tmp_path, queue)
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        client.chat.completions.create(model="m", messages=MESSAGES)
        for _chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
            pass
        # The app's own span, dropped by its sampler as before.
        with provider.get_tracer("app").start_as_current_span("request") as request:
            assert not request.is_recording()
    finally:
        instrumentor.uninstrument()
    provider.shutdown()
    assert app_spans.get_finished_spans() == ()  # the app's exporters: what its sampler says
    assert count_calls(dbs["stats"]) == 2  # the statistics: every call
    assert not dbs["batch"].exists()  # a plain BatchSpanProcessor never saw them


def test_the_apps_recorded_but_unsampled_spans_stay_out(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    """A sampler that records without sampling (RECORD_ONLY): a GenAI span the app makes
    itself is left out, as a BatchSpanProcessor leaves it out; otelstats' call is recorded."""
    provider = TracerProvider(sampler=StaticSampler(Decision.RECORD_ONLY))
    dbs = _pipeline(provider, tmp_path)
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    own = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "other-sdk"}
    try:
        with provider.get_tracer("app").start_as_current_span("chat x", attributes=own) as span:
            assert span.is_recording()
            client.chat.completions.create(model="m", messages=MESSAGES)
    finally:
        instrumentor.uninstrument()
    provider.shutdown()
    with closing(sqlite3.connect(dbs["stats"])) as conn:
        providers = [row[0] for row in conn.execute("SELECT provider FROM calls")]
    assert providers == ["openai"]
    assert not dbs["batch"].exists()


@pytest.mark.parametrize("disabled", ["true", " TRUE ", "false", ""])
def test_an_sdk_turned_off_by_its_environment_variable_is_said(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, disabled: str
) -> None:
    """`OTEL_SDK_DISABLED=true` makes the SDK's providers hand out no-op tracers, so no call
    reaches any exporter: otelstats says so once, at instrument(), rather than record nothing
    in silence; the proxy too, which then only forwards."""
    from otelstats.receivers.proxy import recording_provider

    monkeypatch.setenv("OTEL_SDK_DISABLED", disabled)
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    with caplog.at_level("WARNING", logger="otelstats"):
        instrumentor.instrument(tracer_provider=provider)
        try:
            client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0)
            with client, pytest.raises(openai.APIConnectionError):  # nothing listens on port 9
                client.chat.completions.create(model="m", messages=MESSAGES)
        finally:
            instrumentor.uninstrument()
        recording_provider(InMemorySpanExporter()).shutdown()
    off = disabled.strip().lower() == "true"
    said = [r.getMessage() for r in caplog.records if "OTEL_SDK_DISABLED" in r.getMessage()]
    assert len(said) == (2 if off else 0)
    assert len(exporter.get_finished_spans()) == (0 if off else 1)
    if off:
        assert "otelstats records no calls" in said[0]
        assert "the otelstats proxy records no calls" in said[1]
