"""Fixtures for the pipeline tests: real GenAI spans from an SDK TracerProvider, DB counting.

Spans are made by the real SDK (TracerProvider + InMemorySpanExporter) with the GenAI attributes
the instrumentor sets, then handed to the exporter under test.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelstats import semconv

MakeSpans = Callable[..., list[ReadableSpan]]
_models = itertools.count()


@pytest.fixture
def make_spans() -> Iterator[MakeSpans]:
    """make_spans(n, genai=True) -> n finished spans (chat calls with usage when genai)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.pipeline")

    def make(n: int, *, genai: bool = True) -> list[ReadableSpan]:
        memory.clear()
        for i in range(n):
            attrs: dict[str, str | int] = {"http.method": "GET"}
            if genai:
                attrs = {
                    semconv.OPERATION_NAME: semconv.OPERATION_CHAT,
                    semconv.PROVIDER_NAME: semconv.PROVIDER_OPENAI,
                    semconv.REQUEST_MODEL: f"model-{next(_models) % 3}",
                    semconv.USAGE_INPUT_TOKENS: 10 + i,
                    semconv.USAGE_OUTPUT_TOKENS: 5,
                }
            with tracer.start_as_current_span("chat", attributes=attrs):
                pass
        return list(memory.get_finished_spans())

    yield make
    provider.shutdown()


@pytest.fixture
def immutable() -> Iterator[Callable[[Path], None]]:
    """immutable(path): `chattr +i` — read-only even for root; undone after the test."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not available")
    done: list[Path] = []

    def make(path: Path) -> None:
        result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"chattr +i unsupported here: {result.stderr.strip()}")
        done.append(path)

    yield make
    for path in done:
        subprocess.run(["chattr", "-i", str(path)], check=False)
