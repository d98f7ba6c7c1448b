"""`span_to_record` on real OpenTelemetry SDK spans: current and legacy GenAI names, non-GenAI
spans, error status, and hostile attribute values (random, via hypothesis) that must never raise
and must always yield a record every backend can store."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from otelstats import semconv
from otelstats.records import CallRecord, span_to_record
from otelstats.store import Store
from tests.factories import record


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "chat-app", "service.instance.id": "i-1"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def finished(
    pair: tuple[TracerProvider, InMemorySpanExporter],
    attributes: Mapping[str, Any],
    *,
    error: bool = False,
    start: int = 1_700_000_000_000_000_000,
    end: int = 1_700_000_002_500_000_000,
) -> ReadableSpan:
    provider, exporter = pair
    exporter.clear()
    span = provider.get_tracer("test").start_span(
        "chat gpt-4o", kind=SpanKind.CLIENT, attributes=dict(attributes), start_time=start
    )
    if error:
        span.set_status(Status(StatusCode.ERROR, "boom"))
    span.end(end_time=end)
    (done,) = exporter.get_finished_spans()
    return done


CURRENT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "server.address": "api.example.com",
    "server.port": 443,
    "gen_ai.usage.input_tokens": 120,
    "gen_ai.usage.output_tokens": 51,
    "gen_ai.usage.cache_read.input_tokens": 100,
    "gen_ai.usage.reasoning.output_tokens": 20,
    "gen_ai.request.stream": True,
    "gen_ai.response.time_to_first_chunk": 0.5,
    "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.conversation.id": "conv-1",
}


def test_current_names(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    span = finished(spans, CURRENT)
    r = span_to_record(span)
    assert r is not None
    assert span.context is not None
    assert r.trace_id == format(span.context.trace_id, "032x")
    assert r.span_id == format(span.context.span_id, "016x")
    assert (r.start_ns, r.end_ns, r.duration_s) == (
        1_700_000_000_000_000_000,
        1_700_000_002_500_000_000,
        2.5,
    )
    assert (r.operation, r.provider) == ("chat", "openai")
    assert (r.request_model, r.response_model, r.model) == (
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "gpt-4o",
    )
    assert (r.server_address, r.server_port) == ("api.example.com", 443)
    assert (r.input_tokens, r.output_tokens, r.tokens_source) == (120, 51, "reported")
    assert (r.cached_input_tokens, r.reasoning_tokens) == (100, 20)
    assert (r.streaming, r.time_to_first_chunk_s) == (True, 0.5)
    assert r.finish_reasons == ("stop",)
    assert (r.outcome, r.error_type) == ("ok", None)
    assert r.conversation_id == "conv-1"
    assert (r.service_name, r.service_instance_id) == ("chat-app", "i-1")
    # Derived numbers of DESIGN §4: latency is the first chunk, speed (51-1)/(2.5-0.5).
    assert r.latency_s == 0.5
    assert r.tokens_per_second == 25.0


def test_legacy_names(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    r = span_to_record(
        finished(
            spans,
            {
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-3.5-turbo",
                "gen_ai.openai.response.model": "gpt-3.5-turbo-0125",
                "gen_ai.usage.prompt_tokens": 9,
                "gen_ai.usage.completion_tokens": 12,
            },
        )
    )
    assert r is not None
    assert (r.provider, r.operation) == ("openai", "chat")
    assert r.response_model == "gpt-3.5-turbo-0125"
    assert (r.input_tokens, r.output_tokens, r.tokens_source) == (9, 12, "reported")
    assert r.streaming is False
    assert r.latency_s == 2.5  # non-streaming: the whole call
    assert r.tokens_per_second == 4.8  # 12 / 2.5


def test_current_names_win_over_legacy(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    r = span_to_record(
        finished(
            spans,
            CURRENT | {"gen_ai.system": "legacy", "gen_ai.usage.prompt_tokens": 1},
        )
    )
    assert r is not None
    assert (r.provider, r.input_tokens) == ("openai", 120)


def test_non_genai_span_is_ignored(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    assert span_to_record(finished(spans, {"http.request.method": "GET"})) is None
    assert span_to_record(finished(spans, {})) is None


def test_unfinished_span_is_ignored() -> None:
    span = ReadableSpan("chat", attributes={"gen_ai.operation.name": "chat"}, start_time=1)
    assert span_to_record(span) is None


def test_error_status_is_an_error(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    r = span_to_record(finished(spans, CURRENT, error=True))
    assert r is not None
    assert (r.outcome, r.error_type) == ("error", None)
    assert r.latency_s is None  # failures have neither latency nor speed
    assert r.tokens_per_second is None
    typed = span_to_record(finished(spans, CURRENT | {"error.type": "RateLimitError"}))
    assert typed is not None
    assert (typed.outcome, typed.error_type) == ("error", "RateLimitError")


def test_status_ok_and_unset_are_ok() -> None:
    for status in (Status(StatusCode.OK), Status(StatusCode.UNSET)):
        span = ReadableSpan("chat", attributes=CURRENT, start_time=1, end_time=2, status=status)
        r = span_to_record(span)
        assert r is not None
        assert r.outcome == "ok"


def test_each_resource_names_its_own_service() -> None:
    """Spans of two providers, interleaved: each record names its own service."""
    pairs = []
    for name in ("app-a", "app-b"):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        pairs.append((provider, exporter))
    records = [span_to_record(finished(pairs[i % 2], CURRENT)) for i in range(4)]
    assert [r.service_name if r else None for r in records] == ["app-a", "app-b"] * 2


def test_declared_outcome_and_token_source(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    r = span_to_record(
        finished(spans, CURRENT | {"otelstats.outcome": "cancelled", "otelstats.usage.source":
                                   "counted"})
    )  # fmt: skip
    assert r is not None
    assert (r.outcome, r.tokens_source) == ("cancelled", "counted")
    bare = {k: v for k, v in CURRENT.items() if not k.startswith("gen_ai.usage.")}
    none = span_to_record(finished(spans, bare))
    assert none is not None
    assert (none.input_tokens, none.output_tokens, none.tokens_source) == (None, None, "none")


def test_wrong_types_are_ignored(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    r = span_to_record(
        finished(
            spans,
            {
                "gen_ai.operation.name": 5,
                "gen_ai.provider.name": ("a", "b"),
                "gen_ai.request.model": True,
                "gen_ai.usage.input_tokens": -3,
                "gen_ai.usage.output_tokens": 2.5,
                "gen_ai.response.time_to_first_chunk": float("nan"),
                "server.port": 70000,
                "gen_ai.request.stream": "true",
                "gen_ai.conversation.id": "",
            },
        )
    )
    assert r is not None
    assert (r.operation, r.provider, r.model) == ("chat", "unknown", "unknown")
    assert (r.input_tokens, r.output_tokens, r.tokens_source) == (None, None, "none")
    assert r.time_to_first_chunk_s is None
    assert r.server_port is None
    assert r.streaming is False
    assert r.conversation_id is None


def test_huge_strings_are_capped(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    r = span_to_record(
        finished(
            spans,
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "m" * 1_000_000,
                "gen_ai.conversation.id": "c" * 10_000,
                "gen_ai.response.finish_reasons": ("r" * 500,) * 100,
            },
        )
    )
    assert r is not None
    assert len(r.model) == 256
    assert r.conversation_id is not None
    assert len(r.conversation_id) == 128
    assert len(",".join(r.finish_reasons)) <= 1024


# --- hostile values, at random ----------------------------------------------------------------

ATTRIBUTE_NAMES = [
    semconv.OPERATION_NAME, semconv.PROVIDER_NAME, semconv.LEGACY_SYSTEM, semconv.REQUEST_MODEL,
    semconv.RESPONSE_MODEL, semconv.LEGACY_OPENAI_RESPONSE_MODEL, semconv.SERVER_ADDRESS,
    semconv.SERVER_PORT, semconv.USAGE_INPUT_TOKENS, semconv.USAGE_OUTPUT_TOKENS,
    semconv.LEGACY_USAGE_PROMPT_TOKENS, semconv.LEGACY_USAGE_COMPLETION_TOKENS,
    semconv.USAGE_CACHE_READ_INPUT_TOKENS, semconv.USAGE_REASONING_OUTPUT_TOKENS,
    semconv.REQUEST_STREAM, semconv.RESPONSE_TIME_TO_FIRST_CHUNK, semconv.RESPONSE_FINISH_REASONS,
    semconv.CONVERSATION_ID, semconv.ERROR_TYPE, semconv.OTELSTATS_OUTCOME,
    semconv.OTELSTATS_TOKENS_SOURCE, "unrelated.attribute",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
    st.text(alphabet=st.sampled_from(["\x00", "\ud800", "é", "a", ",", "\U0001f600"]), max_size=40),
    st.just("x" * 5000),
    st.binary(max_size=20),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=20), st.dictionaries(st.text(), SCALARS))
ATTRIBUTES = st.dictionaries(
    st.sampled_from(ATTRIBUTE_NAMES), VALUES, max_size=len(ATTRIBUTE_NAMES)
)
TIMES = st.integers(min_value=0, max_value=2**63 - 1)
IDS = st.one_of(st.integers(min_value=-(2**200), max_value=2**200))


def storable(r: CallRecord) -> None:
    """What the database columns accept: widths, no NUL, encodable text, sane numbers."""
    for name, width in (("trace_id", 32), ("span_id", 16)):
        assert len(getattr(r, name)) == width
    for name in ("operation", "provider", "model", "request_model", "response_model",
                 "server_address", "error_type", "service_name"):  # fmt: skip
        value = getattr(r, name)
        if value is not None:
            assert 0 < len(value) <= 256
            assert "\x00" not in value
            value.encode("utf-8")
    if r.conversation_id is not None:
        assert len(r.conversation_id) <= 128
        assert "\x00" not in r.conversation_id
        r.conversation_id.encode("utf-8")
    reasons = ",".join(r.finish_reasons)
    assert len(reasons) <= 1024
    assert "\x00" not in reasons
    reasons.encode("utf-8")
    for count in (r.input_tokens, r.output_tokens, r.cached_input_tokens, r.reasoning_tokens):
        assert count is None or 0 <= count < 2**53
    for seconds in (r.time_to_first_chunk_s, r.latency_s, r.tokens_per_second):
        assert seconds is None or (math.isfinite(seconds) and seconds >= 0)
    assert r.end_ns >= r.start_ns
    assert r.outcome in {"ok", "error", "cancelled", "incomplete"}
    assert r.tokens_source in {"reported", "counted", "none"}


@settings(max_examples=300, deadline=None)
@given(attributes=ATTRIBUTES, start=TIMES, end=TIMES, trace_id=IDS, span_id=IDS)
def test_hostile_attributes_never_raise(
    attributes: dict[str, Any], start: int, end: int, trace_id: int, span_id: int
) -> None:
    # A ReadableSpan as an OTLP receiver would rebuild it: the SDK's own attribute checks are
    # bypassed, so every type reaches span_to_record.
    span = ReadableSpan(
        "hostile",
        context=SpanContext(trace_id=trace_id, span_id=span_id, is_remote=False),
        attributes={semconv.OPERATION_NAME: "chat"} | attributes,
        start_time=start,
        end_time=end,
    )
    r = span_to_record(span)
    if r is not None:
        storable(r)


@settings(max_examples=100, deadline=None)
@given(attributes=ATTRIBUTES)
def test_hostile_attributes_through_the_sdk(attributes: dict[str, Any]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        finished_span = finished((provider, exporter), attributes | {"gen_ai.system": "x"})
    finally:
        provider.shutdown()
    r = span_to_record(finished_span)
    assert r is not None
    storable(r)


def test_hostile_strings_are_stored_on_every_backend(store: Store) -> None:
    span = ReadableSpan(
        "hostile",
        context=SpanContext(trace_id=2**130 + 5, span_id=7, is_remote=False),
        attributes={
            "gen_ai.operation.name": "chat\x00",
            "gen_ai.request.model": "m\x00\ud800" + "é" * 400,
            "gen_ai.conversation.id": "\ud83d" * 300,
            "error.type": "<img src=x onerror=alert(1)>",
            "gen_ai.response.finish_reasons": ["stop\x00" * 20] * 40,
        },
        start_time=1_700_000_000_000_000_000,
        end_time=1_700_000_001_000_000_000,
    )
    r = span_to_record(span)
    assert r is not None
    assert store.write([r]) == 1
    assert store.write([record(request_model="é\U0001f600")]) == 1
