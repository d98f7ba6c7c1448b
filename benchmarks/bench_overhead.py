"""Per-call overhead of otelstats' instrumentation against the bare openai SDK and against
`opentelemetry-instrumentation-openai-v2`, side by side in one run (issue 8, target 1).

The SDK talks to an in-process `httpx2.MockTransport` returning canned OpenAI JSON / SSE bytes (no
sockets), so nothing hides the overhead. Every setup exports through the real pipeline: a
BatchSpanProcessor feeding StatsSpanExporter into a temporary SQLite file, flushed at the end of
every block, so the exporter thread's CPU is counted (`time.process_time()` covers every thread).
Each instrumentor runs with and without an SDK MeterProvider; the table compares three pairings
(`CONFIGURATIONS`): "default" (what each user gets out of the box: `otelstats.instrument()` sets
no MeterProvider, openai-v2 under `opentelemetry-instrument` gets an SDK one), "sdk-metrics" and
"no-metrics" (equal work on both sides). Setups are interleaved within each round (order rotated),
medians over rounds. Per-chunk cost is the slope between streams of two lengths. No assertions:
`--quick` only keeps it from rotting.

    .venv/bin/python benchmarks/bench_overhead.py            # full (about 90 s)
    .venv/bin/python benchmarks/bench_overhead.py --quick    # CI smoke run
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import openai
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otelstats.every_call import StatsSpanProcessor
from otelstats.exporter import StatsSpanExporter
from otelstats.instrumentation import OpenAIInstrumentor

QUICK = os.environ.get("OTELSTATS_BENCH_QUICK") == "1" or "--quick" in sys.argv
ROUNDS = 2 if QUICK else 15
CALLS = 10 if QUICK else 100
SHORT, LONG = 10, 210
"""Content chunks of the two stream lengths; per-chunk cost = slope between them."""
MESSAGES = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello"}]
KINDS = ("non_stream", "async_non_stream", "stream_short", "async_stream_short", "stream_long")


# -- canned wire bytes ---------------------------------------------------------------------------


def _sse(data: Any) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def _chunk(choices: list[Any], usage: Any = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": choices, "usage": usage}  # fmt: skip


USAGE = {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5}


def stream_body(chunks: int, include_usage: bool) -> bytes:
    parts = [_sse(_chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}]))]
    parts += [
        _sse(_chunk([{"index": 0, "delta": {"content": f" w{i}"}, "finish_reason": None}]))
        for i in range(chunks)
    ]
    parts.append(_sse(_chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])))
    if include_usage:
        usage = {**USAGE, "completion_tokens": chunks, "total_tokens": 5 + chunks}
        parts.append(_sse(_chunk([], usage)))
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


COMPLETION = json.dumps(
    {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
     "choices": [{"index": 0, "finish_reason": "stop",
                  "message": {"role": "assistant", "content": "The quick brown fox."}}],
     "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}
).encode()  # fmt: skip
STREAMS = {(n, usage): stream_body(n, usage) for n in (SHORT, LONG) for usage in (False, True)}


def handle(request: httpx2.Request) -> httpx2.Response:
    content = request.content
    if b'"stream":true' not in content:
        return httpx2.Response(200, headers={"content-type": "application/json"},
                               content=COMPLETION)  # fmt: skip
    n = LONG if b'"max_tokens":' + str(LONG).encode() in content else SHORT
    body = STREAMS[(n, b'"include_usage":true' in content)]
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)


# -- the calls -----------------------------------------------------------------------------------


def make_clients() -> tuple[openai.OpenAI, openai.AsyncOpenAI]:
    sync = openai.OpenAI(
        base_url="http://fake.local/v1",
        api_key="bench",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handle)),
    )
    async_ = openai.AsyncOpenAI(
        base_url="http://fake.local/v1",
        api_key="bench",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handle)),
    )
    return sync, async_


def block(kind: str, sync: openai.OpenAI, async_: openai.AsyncOpenAI, calls: int) -> None:
    create = sync.chat.completions.create
    if kind == "non_stream":
        for _ in range(calls):
            create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    elif kind == "async_non_stream":

        async def run() -> None:
            acreate = async_.chat.completions.create
            for _ in range(calls):
                await acreate(model="m", messages=MESSAGES)  # type: ignore[arg-type]

        asyncio.run(run())
    elif kind == "async_stream_short":

        async def run_streams() -> None:
            acreate = async_.chat.completions.create
            for _ in range(calls):
                stream = await acreate(  # type: ignore[call-overload]
                    model="m",
                    messages=MESSAGES,
                    stream=True,
                    max_tokens=SHORT,
                    stream_options={"include_usage": True},
                )
                async for _chunk in stream:
                    pass

        asyncio.run(run_streams())
    else:
        n = LONG if kind == "stream_long" else SHORT
        for _ in range(calls):
            # The caller asks for usage itself, so every setup gets the same bytes (otelstats
            # would otherwise add one usage chunk that the SDK must parse: ~1 chunk of cost).
            stream = create(  # type: ignore[call-overload]
                model="m",
                messages=MESSAGES,
                stream=True,
                max_tokens=n,
                stream_options={"include_usage": True},
            )
            for _chunk in stream:
                pass


# -- setups --------------------------------------------------------------------------------------


def openai_v2() -> Any:
    try:
        from opentelemetry.instrumentation.openai_v2 import (
            OpenAIInstrumentor as V2,
        )
    except Exception as exc:
        print(f"openai-v2 not available ({exc!r}): pip install opentelemetry-instrumentation-"
              "openai-v2 opentelemetry-util-genai==1.1b0")  # fmt: skip
        return None
    return V2()  # type: ignore[no-untyped-call]


class Setup:
    """One instrumentor under one provider setup. Every setup traces through an SDK
    TracerProvider + BatchSpanProcessor (otelstats' own StatsSpanProcessor, a BatchSpanProcessor
    that also takes unsampled calls) into a StatsSpanExporter (the same database), so the
    export CPU is the same kind of work for all. `sdk_metrics`: an SDK MeterProvider (what
    `opentelemetry-instrument` configures); otherwise no meter provider is passed and the
    histograms come from the API's global proxy meter, which is what `otelstats.instrument()`
    does when no `prometheus_port` / meter_provider is given (bootstrap sets no MeterProvider)."""

    def __init__(self, name: str, instrumentor: Any, db: Path, sdk_metrics: bool) -> None:
        self.name = name
        self.instrumentor = instrumentor
        self.tracer_provider = TracerProvider()
        # otelstats' setups get what `otelstats.instrument()` installs on a provider of its own:
        # its processor, which makes the calls' spans off the callers' threads.
        self.deferred = None
        if name.startswith("otelstats"):
            processor = StatsSpanProcessor(StatsSpanExporter(db))
            self.deferred = processor.deferred
        else:
            processor = BatchSpanProcessor(StatsSpanExporter(db))
        self.tracer_provider.add_span_processor(processor)
        self.meter_provider = (
            MeterProvider(metric_readers=[InMemoryMetricReader()]) if sdk_metrics else None
        )

    def __enter__(self) -> Setup:
        if self.instrumentor is not None:
            deferred = {"deferred_spans": self.deferred} if self.deferred is not None else {}
            self.instrumentor.instrument(
                tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **deferred
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.instrumentor is not None:
            self.instrumentor.uninstrument()

    def flush(self) -> None:
        self.tracer_provider.force_flush()


CONFIGURATIONS = (
    ("default", "otelstats", "openai-v2+metrics",
     "what each user gets: otelstats.instrument(db=...) records no SDK metrics (it serves "
     "/metrics from the database); openai-v2 as opentelemetry-instrument sets it up, SDK metrics"),
    ("sdk-metrics", "otelstats+metrics", "openai-v2+metrics",
     "both record gen_ai.client.* histograms into an SDK MeterProvider"),
    ("no-metrics", "otelstats", "openai-v2",
     "both with the API's proxy meter (no SDK MeterProvider): spans and export only"),
)  # fmt: skip
"""(name, otelstats setup, openai-v2 setup, what it means). Every setup exports its spans
through BatchSpanProcessor -> StatsSpanExporter -> SQLite, so the export CPU is in all."""


def measure(setup: Setup, kind: str, clients: tuple[Any, Any]) -> tuple[float, float]:
    """(wall µs, process CPU µs) per call; CPU includes flushing this block's spans to SQLite."""
    gc.collect()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    calls = CALLS // 4 if kind == "stream_long" else CALLS
    block(kind, *clients, calls)
    wall = time.perf_counter() - wall0
    setup.flush()
    cpu = time.process_time() - cpu0
    return wall / calls * 1e6, cpu / calls * 1e6


def main() -> None:
    clients = make_clients()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        ours = OpenAIInstrumentor()
        setups = [
            Setup("bare", None, db, sdk_metrics=False),
            Setup("otelstats", ours, db, sdk_metrics=False),
            Setup("otelstats+metrics", ours, db, sdk_metrics=True),
        ]
        v2 = openai_v2()
        if v2 is not None:
            setups.append(Setup("openai-v2", v2, db, sdk_metrics=False))
            setups.append(Setup("openai-v2+metrics", v2, db, sdk_metrics=True))
        for setup in setups:  # warm up: imports, the database's creation, SDK caches
            with setup:
                for kind in KINDS:
                    block(kind, *clients, 3)
                setup.flush()
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for r in range(ROUNDS):
            # Interleaved, order rotated: load drift on a shared machine hits every setup alike.
            for setup in setups[r % len(setups) :] + setups[: r % len(setups)]:
                with setup:
                    for kind in KINDS:
                        samples.setdefault((setup.name, kind), []).append(
                            measure(setup, kind, clients)
                        )
        for setup in setups:
            setup.tracer_provider.shutdown()
            if setup.meter_provider is not None:
                setup.meter_provider.shutdown()
    report([s.name for s in setups], samples)


def report(names: list[str], samples: dict[tuple[str, str], list[tuple[float, float]]]) -> None:
    def med(name: str, kind: str, which: int) -> float:
        return statistics.median(s[which] for s in samples[(name, kind)])

    def over(name: str, kind: str, which: int) -> float:
        # Median of per-round differences: each round's bare run is its own baseline.
        pairs = zip(samples[(name, kind)], samples[("bare", kind)], strict=True)
        return statistics.median(s[which] - b[which] for s, b in pairs)

    def per_chunk(name: str, which: int) -> float:
        return (over(name, "stream_long", which) - over(name, "stream_short", which)) / (
            LONG - SHORT
        )

    print(f"rounds={ROUNDS} calls/block={CALLS} stream chunks={SHORT}/{LONG} quick={QUICK}")
    print("medians; overhead = median of per-round (setup - bare); "
          "wall = caller's time, cpu = process CPU incl. the exporter thread")  # fmt: skip
    width = max(len(n) for n in names) + 1
    header = f"{'':{width}}" + "".join(f"{k:>20}" for k in KINDS) + f"{'per chunk':>14}"
    for which, label in ((0, "wall µs"), (1, "cpu µs")):
        print(f"\n{label} per call (overhead in brackets)\n{header}")
        for name in names:
            cells = "".join(
                f"{med(name, k, which):11.1f} ({over(name, k, which):5.1f})" for k in KINDS
            )
            chunk = "" if name == "bare" else f"{per_chunk(name, which):12.2f}µs"
            print(f"{name:{width}}{cells}{chunk}")
    if "openai-v2" not in names:
        return
    print(
        "\nCPU overhead per call, otelstats vs openai-v2 (target: ratio <= 0.5; per chunk <= 1.0)"
    )
    print(f"{'configuration':13}{'kind':>18}{'otelstats µs':>14}{'openai-v2 µs':>14}{'ratio':>8}")
    for config, mine, theirs, _meaning in CONFIGURATIONS:
        for kind in ("non_stream", "async_non_stream", "stream_short", "async_stream_short"):
            a, b = over(mine, kind, 1), over(theirs, kind, 1)
            print(f"{config:13}{kind:>18}{a:14.1f}{b:14.1f}{_ratio(a, b):>8}")
        a, b = per_chunk(mine, 1), per_chunk(theirs, 1)
        print(f"{config:13}{'per chunk':>18}{a:14.2f}{b:14.2f}{_ratio(a, b):>8}")
    print("\nconfigurations (otelstats setup vs openai-v2 setup):")
    for config, mine, theirs, meaning in CONFIGURATIONS:
        print(f"  {config}: {mine} vs {theirs} -- {meaning}")
    print("headline: 'default' (what `otelstats.instrument()` and openai-v2 under "
          "opentelemetry-instrument each cost by default); 'sdk-metrics' and 'no-metrics' "
          "compare equal work.")  # fmt: skip


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a"


if __name__ == "__main__":
    main()
