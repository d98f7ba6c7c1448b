"""Memory: `otelstats serve` RSS over a large history, and the instrumented app's RSS growth
against the bare SDK and openai-v2, side by side in one run.

    .venv/bin/python -m benchmarks.bench_memory --large benchmarks/data/10m.db
    .venv/bin/python -m benchmarks.bench_memory --quick

Targets (issue 8): serve RSS at 10 million calls under 150 MB; the instrumented app's RSS grows by
no more than openai-v2's. Every figure is measured in a fresh subprocess (serve: peak RSS; the app:
resident set before instrumenting and after the calls), medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

SERVE = textwrap.dedent(
    """
    import json, resource, sys
    from otelstats.store import Store
    from otelstats.web import create_app, warm_day_cache
    app = create_app(store=Store.open(sys.argv[1]))
    warm_day_cache(app, "Europe/Berlin")
    client = app.test_client()
    for _ in range(3):
        for period in ("today", "7d", "30d", "all"):
            assert client.get(f"/api/stats?period={period}&tz=Europe/Berlin").status_code == 200
        assert client.get("/api/export.csv?period=all&by=model").status_code == 200
        assert client.get("/metrics").status_code == 200
    print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)

APP = textwrap.dedent(
    """
    import json, os, sys
    import httpx2, openai

    def rss():  # resident set now (peak RSS would hide growth behind start-up peaks)
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    from otelstats import _fake_wire as wire
    mode, db, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def handler(request):
        body = json.loads(request.content)
        rendered = wire.render("POST", request.url.path, body, wire.Reply(), 1)
        return httpx2.Response(200, content=rendered.body,
                               headers={"content-type": rendered.content_type})

    client = openai.OpenAI(api_key="k", base_url="http://bench.invalid/v1",
                           http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    messages = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model="m", messages=messages)  # warm the SDK's own caches
    base = rss()
    if mode == "otelstats":
        import otelstats
        handle = otelstats.instrument(db=db)
    elif mode == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from otelstats.exporter import StatsSpanExporter
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(StatsSpanExporter(db)))
        OpenAIInstrumentor().instrument(tracer_provider=provider)
    for _ in range(calls):
        client.chat.completions.create(model="m", messages=messages)
    if mode == "otelstats":  # both write what they recorded before the measurement
        handle.flush()
    elif mode == "openai-v2":
        provider.force_flush()
    print(json.dumps({"growth_mb": (rss() - base) / 2**20}))
    """
)


def _run(script: str, *args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", help="a database built by benchmarks.history")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    calls, rounds = (300, 1) if args.quick else (args.calls, args.rounds)

    with tempfile.TemporaryDirectory() as tmp:
        if args.large and not args.quick:
            large = args.large
        else:
            from benchmarks.history import build

            large = str(Path(tmp) / "large.db")
            build(large, 50_000, 730).dispose()
        serve = [_run(SERVE, large)["rss_mb"] for _ in range(rounds)]
        growth: dict[str, list[float]] = {"bare": [], "otelstats": [], "openai-v2": []}
        for round_ in range(rounds):
            for mode in growth:
                db = str(Path(tmp) / f"app-{mode}-{round_}.db")
                growth[mode].append(_run(APP, mode, db, str(calls))["growth_mb"])

    print(f"serve peak RSS over {large}: {statistics.median(serve):.1f} MB (target < 150)")
    print(f"app RSS growth over {calls} calls (median of {rounds}):")
    for mode, values in growth.items():
        print(f"  {mode:<10} {statistics.median(values):6.1f} MB")
    ours, peer = statistics.median(growth["otelstats"]), statistics.median(growth["openai-v2"])
    print(f"  otelstats - openai-v2: {ours - peer:+.1f} MB (target <= 0)")


if __name__ == "__main__":
    main()
