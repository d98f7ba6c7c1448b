"""OTLP/HTTP receiver: real OTel exporters → POST /v1/traces → the statistics; bad input refused."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otelstats.config import Settings
from otelstats.fake_server import FakeOpenAIServer
from otelstats.store import Store

from .conftest import RunningApp, calls

MESSAGES = [{"role": "user", "content": "hello"}]


def _stats(app: RunningApp) -> Any:
    with urllib.request.urlopen(f"{app.url}/api/stats?period=all&tz=UTC", timeout=10) as resp:
        return json.loads(resp.read())


def _send(app: RunningApp, body: bytes, content_type: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{app.url}/v1/traces", data=body, headers={"Content-Type": content_type, **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def openai_v2() -> Iterator[TracerProvider]:
    """The official openai-v2 instrumentation on a private provider (uninstrumented afterwards)."""
    provider = TracerProvider(resource=Resource.create({"service.instance.id": "laptop-1"}))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    yield provider
    instrumentor.uninstrument()
    provider.shutdown()


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_openai_v2_spans_over_otlp_reach_the_statistics(
    served: RunningApp, openai_v2: TracerProvider, compression: Compression
) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{served.url}/v1/traces", compression=compression)
    openai_v2.add_span_processor(SimpleSpanProcessor(exporter))
    with (
        FakeOpenAIServer() as upstream,
        openai.OpenAI(base_url=upstream.base_url, api_key="x", max_retries=0) as client,
    ):
        replies = [
            client.chat.completions.create(model="fake-gpt-4o-mini", messages=MESSAGES)
            for _ in range(3)
        ]
    assert openai_v2.force_flush(10_000)

    overview = _stats(served)["overview"]
    assert overview["requests"] == 3
    assert overview["prompt_tokens"] == sum(r.usage.prompt_tokens for r in replies if r.usage)
    assert overview["completion_tokens"] == sum(
        r.usage.completion_tokens for r in replies if r.usage
    )
    rows = calls(served.store)
    assert {r["service_instance_id"] for r in rows} == {"laptop-1"}
    assert {r["model"] for r in rows} == {"fake-gpt-4o-mini"}


def _json_span(span_id: str, **overrides: Any) -> dict[str, Any]:
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": span_id,
        "name": "chat m",
        "kind": 3,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000001500000000",
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "json-model"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 30}},
            {
                "key": "gen_ai.response.finish_reasons",
                "value": {"arrayValue": {"values": [{"stringValue": "stop"}]}},
            },
        ],
        "status": {},
    }
    span.update(overrides)
    return span


def _json_request(*spans: dict[str, Any]) -> bytes:
    resource = {"attributes": [{"key": "service.instance.id", "value": {"stringValue": "box-9"}}]}
    return json.dumps(
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": list(spans)}]}]}
    ).encode()


def test_otlp_json_with_partial_success(served: RunningApp) -> None:
    body = _json_request(
        _json_span("eee19b7ec3c1b174"),
        _json_span("eee19b7ec3c1b175", status={"code": 2, "message": "boom"}),
        _json_span("not-hex"),
        _json_span("eee19b7ec3c1b176", endTimeUnixNano="1"),
    )
    status, reply = _send(served, body, "application/json")
    assert status == 200
    assert json.loads(reply) == {
        "partialSuccess": {
            "rejectedSpans": "2",
            "errorMessage": "2 span(s) rejected: invalid span_id",
        }
    }
    rows = calls(served.store)
    assert [(r["span_id"], r["outcome"]) for r in rows] == [
        ("eee19b7ec3c1b174", "ok"),
        ("eee19b7ec3c1b175", "error"),
    ]
    assert rows[0]["input_tokens"] == 12
    assert rows[0]["output_tokens"] == 30
    assert rows[0]["finish_reasons"]
    assert "stop" in rows[0]["finish_reasons"]
    assert rows[0]["service_instance_id"] == "box-9"
    # Delivered again (an exporter retry): nothing is counted twice.
    assert _send(served, body, "application/json")[0] == 200
    assert len(calls(served.store)) == 2


def test_garbage_and_oversized_payloads_are_refused_cleanly(served: RunningApp) -> None:
    good = _json_request(_json_span("aaaaaaaaaaaaaaaa"))
    refusals = [
        (b"\xff\xff\xff\xff", "application/x-protobuf", {}, 400),
        (b"{nope", "application/json", {}, 400),
        (b"[]", "application/json", {}, 400),
        (b'{"resourceSpans": 5}', "application/json", {}, 400),
        (b"not gzip at all", "application/json", {"Content-Encoding": "gzip"}, 400),
        (gzip.compress(good)[:-12], "application/json", {"Content-Encoding": "gzip"}, 400),
        (good, "application/json", {"Content-Encoding": "br"}, 415),
        (good, "text/plain", {}, 415),
        (b"x" * (256 * 1024 + 1), "application/json", {}, 413),
        # A zip bomb: 300 KB that inflates past the 1 MiB limit.
        (
            gzip.compress(b" " * (64 * 1024 * 1024)),
            "application/json",
            {"Content-Encoding": "gzip"},
            413,
        ),
    ]
    for body, content_type, headers, expected in refusals:
        status, reply = _send(served, body, content_type, **headers)
        assert status == expected, (body[:20], reply)
        if content_type == "application/json":
            assert json.loads(reply)["message"]
    assert calls(served.store) == []
    # A mix of valid spans and a malformed body writes nothing (no partial write) ...
    half = good[: len(good) // 2]
    assert _send(served, half, "application/json")[0] == 400
    assert calls(served.store) == []
    # ... and the server keeps serving.
    status, _ = _send(
        served, gzip.compress(good), "application/json", **{"Content-Encoding": "gzip"}
    )
    assert status == 200
    assert len(calls(served.store)) == 1


def test_protobuf_reply_follows_the_spec(served: RunningApp) -> None:
    message = ExportTraceServiceRequest()
    span = message.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id = b"\x01" * 16, b""
    status, reply = _send(served, message.SerializeToString(), "application/x-protobuf")
    assert status == 200
    answer = ExportTraceServiceResponse.FromString(reply)
    assert answer.partial_success.rejected_spans == 1
    assert "invalid span_id" in answer.partial_success.error_message


def test_token_is_required_when_set(sqlite_store: Store, serve: Any) -> None:
    app: RunningApp = serve(sqlite_store, Settings(token="team-s3cret"))
    body = _json_request(_json_span("bbbbbbbbbbbbbbbb"))
    assert _send(app, body, "application/json")[0] == 401
    assert _send(app, body, "application/json", Authorization="Bearer wrong")[0] == 401
    assert calls(sqlite_store) == []
    assert _send(app, body, "application/json", Authorization="Bearer team-s3cret")[0] == 200
    assert len(calls(sqlite_store)) == 1
