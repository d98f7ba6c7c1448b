"""What the OpenTelemetry SDK charges for the span of one call, by the attributes it carries.

The span an instrumentation makes for a call is the same SDK work for any instrumentation, except
for its attributes: the SDK validates and copies each one (`BoundedAttributes`), and a list (the
finish reasons) takes its slowest path. This benchmark captures the attributes that otelstats and
openai-v2 really put on the span of one call through `bench_overhead`'s fake server, then starts
and ends that span (same name, kind, parent and start time) through an SDK TracerProvider with no
span processor: with no attributes, with otelstats' and with openai-v2's. The three are timed in
turn in every round (CPU time, blocks of N spans), so they see the same stretches of a noisy
machine; the figures are medians of the rounds.

    .venv/bin/python -m benchmarks.bench_span                 # non_stream and stream_short
    .venv/bin/python -m benchmarks.bench_span stream_short 40 2000
    .venv/bin/python -m benchmarks.bench_span --quick         # CI smoke run (no assertions)

It prints, per kind of call, each span's cost, what its attributes add over a bare span, and that
per attribute: the part of target 1 (per-call overhead, see README.md) that follows from how many
attributes a span carries rather than from the instrumentation's own code.

`--pipeline batch|otelstats N` starts and ends N spans with otelstats' attributes through a plain
BatchSpanProcessor, or through what `otelstats.instrument()` installs (`EveryCallSampler` on the
tracer, `StatsSpanProcessor`), for callgrind; the difference of two runs over N is the cost per
span (the exports are left out: the queue is never flushed):

    for p in batch otelstats; do for n in 0 2000; do valgrind --tool=callgrind \
        --callgrind-out-file=/dev/null .venv/bin/python -m benchmarks.bench_span --pipeline $p $n
    done; done
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer

from benchmarks.bench_overhead import block, make_clients, openai_v2

QUICK = "--quick" in sys.argv
KINDS = ("non_stream", "stream_short")


class Captured:
    """The span one instrumentation made for one call: its name, kind and attributes (sequences
    as lists, as instrumentations pass them)."""

    def __init__(self, name: str, kind: SpanKind, attributes: dict[str, Any]) -> None:
        self.name = name
        self.kind = kind
        self.attributes = attributes


def capture(instrumentation: str, kind: str) -> Captured | None:
    """Make one call of `kind` instrumented by `instrumentation` (otelstats | openai-v2) and
    return its span; None when openai-v2 is not installed."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    if instrumentation == "openai-v2":
        instrumentor = openai_v2()
        if instrumentor is None:
            return None
    else:
        from otelstats.instrumentation import OpenAIInstrumentor

        instrumentor = OpenAIInstrumentor()
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = MeterProvider(metric_readers=[InMemoryMetricReader()])
    instrumentor.instrument(tracer_provider=provider, meter_provider=metrics)
    try:
        block(kind, *make_clients(), 1)
    finally:
        instrumentor.uninstrument()
    (span,) = spans.get_finished_spans()
    attributes = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in (span.attributes or {}).items()
    }
    return Captured(span.name, span.kind, attributes)


def time_spans(tracer: Tracer, span: Captured, attributes: dict[str, Any], n: int) -> float:
    """CPU µs per span to start and end `n` spans like `span`, carrying `attributes`."""
    start_span, name, kind = tracer.start_span, span.name, span.kind
    began = time.process_time()
    for _ in range(n):
        start_span(name, None, kind, attributes, start_time=time.time_ns()).end()
    return (time.process_time() - began) / n * 1e6


def measure(kind: str, rounds: int, n: int) -> None:
    ours = capture("otelstats", kind)
    assert ours is not None
    theirs = capture("openai-v2", kind)
    variants: dict[str, dict[str, Any]] = {"no attributes": {}, "otelstats": ours.attributes}
    if theirs is not None:
        variants["openai-v2"] = theirs.attributes
    tracer = TracerProvider().get_tracer("bench_span")
    for attributes in variants.values():  # warm-up
        time_spans(tracer, ours, attributes, n)
    samples: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(rounds):
        for label, attributes in variants.items():
            samples[label].append(time_spans(tracer, ours, attributes, n))
    cost = {label: statistics.median(values) for label, values in samples.items()}
    bare = cost["no attributes"]
    print(f"{kind}: CPU µs per span, SDK TracerProvider without span processors "
          f"(median of {rounds} rounds of {n} spans)")  # fmt: skip
    for label, attributes in variants.items():
        count = len(attributes)
        line = f"  {label:14} {count:3} attributes {cost[label]:7.2f} µs"
        if count:
            added = cost[label] - bare
            line += f"  +{added:.2f} over none, {added / count:.2f} per attribute"
        print(line)
    if theirs is not None:
        alone = ", ".join(sorted(set(ours.attributes) - set(theirs.attributes))) or "none"
        print(f"  otelstats' span costs {cost['otelstats'] - cost['openai-v2']:+.2f} µs against "
              f"openai-v2's; otelstats' alone: {alone}")  # fmt: skip


def pipeline(kind: str, n: int) -> None:
    """N spans with otelstats' attributes through `kind`'s processor (see the docstring)."""
    from otelstats.every_call import StatsSpanProcessor, record_every_call
    from otelstats.semconv import OTELSTATS_SCOPE

    span = capture("otelstats", "non_stream")
    assert span is not None
    provider = TracerProvider()
    processor = StatsSpanProcessor if kind == "otelstats" else BatchSpanProcessor
    provider.add_span_processor(
        processor(
            InMemorySpanExporter(),
            max_queue_size=n + 1,
            max_export_batch_size=n + 1,
            schedule_delay_millis=3_600_000,
        )
    )
    tracer = provider.get_tracer(OTELSTATS_SCOPE)
    if kind == "otelstats":
        record_every_call(tracer)
    cost = time_spans(tracer, span, span.attributes, n) if n else 0.0
    print(f"{n} spans through {kind}: {cost:.2f} CPU µs per span")


def main() -> int:
    if sys.argv[1:2] == ["--pipeline"]:
        pipeline(sys.argv[2], int(sys.argv[3]))
        return 0
    args = [a for a in sys.argv[1:] if a != "--quick"]
    kinds = [args[0]] if args else list(KINDS)
    if kinds[0] not in KINDS:
        print(f"usage: [KIND] [ROUNDS] [N] [--quick]; KIND one of {', '.join(KINDS)}",
              file=sys.stderr)  # fmt: skip
        return 2
    rounds = int(args[1]) if len(args) > 1 else (2 if QUICK else 30)
    n = int(args[2]) if len(args) > 2 else (50 if QUICK else 2000)
    for kind in kinds:
        measure(kind, rounds, n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
