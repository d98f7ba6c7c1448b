"""Per-call overhead of otelstats' instrumentation against the bare openai SDK (and against
`opentelemetry-instrumentation-openai-v2` when it is installed), side by side in one run.

The SDK talks to an in-process httpx2.MockTransport serving the fake server's wire format, so the
network does not hide the overhead. Medians over rounds; no assertions on time.

    .venv/bin/python benchmarks/bench_overhead.py            # full
    OTELSTATS_BENCH_QUICK=1 .venv/bin/python benchmarks/bench_overhead.py   # quick (CI)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx2
import openai
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from otelstats._fake_wire import Reply, render
from otelstats.instrumentation import OpenAIInstrumentor

QUICK = os.environ.get("OTELSTATS_BENCH_QUICK") == "1" or "--quick" in sys.argv
ROUNDS = 2 if QUICK else 9
CALLS = 10 if QUICK else 100
TEXT = " ".join(f"w{i}" for i in range(50))  # 50 content chunks per stream
MESSAGES = [{"role": "user", "content": "hello"}]


class NullExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def transport() -> httpx2.MockTransport:
    reply = Reply(text=TEXT)

    def handle(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content or b"{}")
        rendered = render(request.method, request.url.path, body, reply, 1)
        content = b"".join(rendered.events) if rendered.events else rendered.body
        return httpx2.Response(
            rendered.status, headers={"content-type": rendered.content_type}, content=content
        )

    return httpx2.MockTransport(handle)


def client() -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://fake.local/v1",
        api_key="bench",
        max_retries=0,
        http_client=httpx2.Client(transport=transport()),
    )


def non_stream(sdk: openai.OpenAI) -> None:
    sdk.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]


def stream(sdk: openai.OpenAI) -> None:
    for _chunk in sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True):  # type: ignore[arg-type]
        pass


def per_call_us(fn: Callable[[openai.OpenAI], None], sdk: openai.OpenAI) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        fn(sdk)
    return (time.perf_counter() - start) / CALLS * 1e6


def providers() -> dict[str, Any]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(NullExporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return {"tracer_provider": tracer_provider, "meter_provider": meter_provider}


def openai_v2() -> Any:
    try:
        from opentelemetry.instrumentation.openai_v2 import (  # type: ignore[import-not-found]
            OpenAIInstrumentor as V2,
        )
    except Exception:
        return None
    return V2()


def main() -> None:
    sdk = client()
    v2 = openai_v2()
    ours = OpenAIInstrumentor()
    setups: dict[str, Any] = {"bare": None, "otelstats": ours}
    if v2 is not None:
        setups["openai-v2"] = v2
    samples: dict[str, dict[str, list[float]]] = {
        name: {"non_stream": [], "stream": []} for name in setups
    }
    # Rounds interleave the setups, so load drift on a shared machine hits all of them alike.
    for _ in range(ROUNDS):
        for name, instrumentor in setups.items():
            if instrumentor is not None:
                instrumentor.instrument(**providers())
            try:
                non_stream(sdk)  # warm up
                stream(sdk)
                samples[name]["non_stream"].append(per_call_us(non_stream, sdk))
                samples[name]["stream"].append(per_call_us(stream, sdk))
            finally:
                if instrumentor is not None:
                    instrumentor.uninstrument()
    results = {
        name: {kind: statistics.median(values) for kind, values in row.items()}
        for name, row in samples.items()
    }
    bare = results["bare"]
    print(f"rounds={ROUNDS} calls/round={CALLS} chunks/stream=50 (quick={QUICK})")
    print(f"{'':12}{'non-stream µs':>16}{'overhead':>10}{'stream µs':>12}{'overhead':>10}"
          f"{'per chunk':>11}")  # fmt: skip
    for name, row in results.items():
        ns, st = row["non_stream"], row["stream"]
        o_ns, o_st = ns - bare["non_stream"], st - bare["stream"]
        per_chunk = (o_st - o_ns) / 50
        print(f"{name:12}{ns:16.1f}{o_ns:10.1f}{st:12.1f}{o_st:10.1f}{per_chunk:11.2f}")
    if v2 is None:
        print("openai-v2: not installed (pip install opentelemetry-instrumentation-openai-v2 "
              "opentelemetry-util-genai==1.1b0)")  # fmt: skip


if __name__ == "__main__":
    main()
