"""Fixtures for the instrumentation tests: a real FakeOpenAIServer, the real openai SDK, and
in-memory OpenTelemetry providers passed to a freshly instrumented OpenAIInstrumentor."""

from __future__ import annotations

import gc
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelstats.fake_server import FakeOpenAIServer
from otelstats.instrumentation import OpenAIInstrumentor
from otelstats.records import CallRecord, span_to_record


@dataclass
class Otel:
    instrumentor: OpenAIInstrumentor
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    """The provider otelstats traces with (the app's own spans too, where a test makes some)."""

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def records(self) -> list[CallRecord]:
        out = [span_to_record(s) for s in self.finished()]
        return [r for r in out if r is not None]

    def record(self) -> CallRecord:
        gc.collect()
        records = self.records()
        assert len(records) == 1, records
        return records[0]

    def metrics(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


def make_otel(**options: Any) -> Otel:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        conversation_salt=b"test-salt",
        **options,
    )
    return Otel(instrumentor, spans, reader, tracer_provider)


def differential(scenario: Callable[[], Any]) -> tuple[Any, Any, Otel]:
    """`scenario` run bare, then instrumented: (bare result, instrumented result, the Otel)."""
    bare = scenario()
    otel = make_otel()
    try:
        instrumented = scenario()
    finally:
        otel.instrumentor.uninstrument()
    return bare, instrumented, otel


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def otel() -> Iterator[Otel]:
    made = make_otel()
    yield made
    made.instrumentor.uninstrument()


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def new_aclient(server: FakeOpenAIServer) -> Callable[[], openai.AsyncOpenAI]:
    """A factory: each event loop (asyncio.run) needs an async client of its own."""
    return lambda: openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)


HAS_RESPONSES = importlib.util.find_spec("openai.resources.responses") is not None
needs_responses = pytest.mark.skipif(
    not HAS_RESPONSES, reason=f"openai {openai.__version__} has no Responses API (1.66 and later)"
)
"""The suite also runs against the oldest openai otelstats supports (scripts/test): a test of
an API that SDK lacks is skipped there."""


def chat_helpers(client: Any) -> Any:
    """`chat.completions` with the `parse` / `stream` helpers, where the client's SDK has them
    (openai 1.40 to 1.9x: under `beta`); skips the test on an SDK without them."""
    for owner in (client.chat, getattr(getattr(client, "beta", None), "chat", None)):
        completions = getattr(owner, "completions", None)
        if completions is not None and hasattr(completions, "stream"):
            return completions
    pytest.skip(f"openai {openai.__version__} has no chat parse/stream helpers")


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say something about foxes."},
]
