"""Side by side with opentelemetry-instrumentation-openai-v2 on one TracerProvider: both trace
every call, and otelstats' statistics still hold exactly one record per user call."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import openai
import pytest
import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelstats import semconv
from otelstats.exporter import StatsSpanExporter
from otelstats.fake_server import FakeOpenAIServer
from otelstats.instrumentation import OpenAIInstrumentor
from otelstats.store import Store

from .conftest import MESSAGES

openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")


def _calls(client: openai.OpenAI) -> int:
    """The same user calls in every order: non-streamed, streamed (left early too), embeddings."""
    client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    for _chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):  # type: ignore[arg-type]
        pass
    with client.chat.completions.create(model="m", messages=MESSAGES, stream=True) as stream:  # type: ignore[arg-type]
        next(iter(stream))
    client.embeddings.create(model="e", input="hello")
    return 4


@pytest.mark.parametrize("first", ["otelstats", "openai-v2"])
def test_both_instrumentors_one_record_per_call(
    first: str, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    spans = InMemorySpanExporter()
    db = tmp_path / "stats.db"
    exporter = StatsSpanExporter(db)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    ours, theirs = OpenAIInstrumentor(), openai_v2.OpenAIInstrumentor()
    # The one instrumented first ends up inside: wrapt wraps the already-wrapped method.
    order = [ours, theirs] if first == "otelstats" else [theirs, ours]
    for instrumentor in order:
        instrumentor.instrument(tracer_provider=provider, meter_provider=meters)
    try:
        with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
            calls = _calls(client)
        gc.collect()
    finally:
        for instrumentor in reversed(order):
            instrumentor.uninstrument()
    exporter.shutdown()

    finished = spans.get_finished_spans()
    scopes = [s.instrumentation_scope.name if s.instrumentation_scope else "" for s in finished]
    # openai-v2 traces chat through opentelemetry-util-genai (its own scope name).
    our_spans = [s for s, scope in zip(finished, scopes, strict=True) if "otelstats" in scope]
    v2_spans = [s for s, scope in zip(finished, scopes, strict=True) if "otelstats" not in scope]
    assert len(our_spans) == calls
    assert len(v2_spans) == calls  # openai-v2 keeps working and exporting its own spans
    our_ids = {format(s.context.span_id, "016x") for s in our_spans}
    assert {s.attributes[semconv.OTELSTATS_DUPLICATE_OF] for s in v2_spans} <= our_ids
    assert not any(semconv.OTELSTATS_DUPLICATE_OF in (s.attributes or {}) for s in our_spans)

    store = Store.open(db)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT span_id FROM calls")).scalars().all()
    finally:
        store.dispose()
    assert sorted(rows) == sorted(our_ids)


def test_uninstrumented_otelstats_no_longer_marks(server: FakeOpenAIServer) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    ours, theirs = OpenAIInstrumentor(), openai_v2.OpenAIInstrumentor()
    theirs.instrument(tracer_provider=provider)
    ours.instrument(tracer_provider=provider)
    ours.uninstrument()
    try:
        with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
            client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    finally:
        theirs.uninstrument()
    (only,) = spans.get_finished_spans()
    assert semconv.OTELSTATS_DUPLICATE_OF not in (only.attributes or {})


class _OursBrokenProvider(TracerProvider):
    """Only otelstats' spans cannot start (an internal failure of otelstats)."""

    def get_tracer(self, name: str, *args: Any, **kwargs: Any) -> Any:
        tracer = super().get_tracer(name, *args, **kwargs)
        if "otelstats" in name:

            def start_span(*a: Any, **k: Any) -> Any:
                raise RuntimeError("injected failure")

            tracer.start_span = start_span  # type: ignore[method-assign]
        return tracer


def test_failing_to_mark_never_breaks_the_other_tool(
    server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Ours outside: our span is started inside openai-v2's `start_span` to mark theirs. When that
    fails, their span, their export and the user's call go on."""
    spans = InMemorySpanExporter()
    provider = _OursBrokenProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    ours, theirs = OpenAIInstrumentor(), openai_v2.OpenAIInstrumentor()
    theirs.instrument(tracer_provider=provider)  # instrumented first: inside
    ours.instrument(tracer_provider=provider)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="otelstats.instrumentation"),
            openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client,
        ):
            reply = client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    finally:
        ours.uninstrument()
        theirs.uninstrument()
    assert reply.choices[0].message.content
    (only,) = spans.get_finished_spans()  # theirs; ours could not start
    assert "otelstats" not in (
        only.instrumentation_scope.name if only.instrumentation_scope else ""
    )
    assert "otelstats: could not mark a duplicate span" in [r.message for r in caplog.records]
