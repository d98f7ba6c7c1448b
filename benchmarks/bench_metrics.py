"""Scrape cost of /metrics with few vs many stored calls, side by side in one run.

The database is built by writing rows directly (calls, rollups, conversations, all-time totals and
histograms shaped as the store writes them), not through HTTP or the exporter, so 10 million calls
take minutes, not hours.

    .venv/bin/python benchmarks/bench_metrics.py --quick          # 10k vs 200k, no assertions
    .venv/bin/python benchmarks/bench_metrics.py                  # 10k vs 10M, asserts < 50 ms
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from otelstats import semconv
from otelstats.collector import build_registry
from otelstats.config import Settings
from otelstats.store import Store
from otelstats.web import create_app

OUTCOMES = ("ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "error", "cancelled")
CALLS_PER_CONVERSATION = 8
SPAN_DAYS = 365
CHUNK = 100_000
TARGET_MS = 50.0


def build(path: Path, calls: int, models: int = 8, seed: int = 1) -> Store:
    """A migrated SQLite store holding `calls` synthetic calls over a year across `models`."""
    names = [f"model-{i}" for i in range(models)]
    store = Store.open(path)
    rng = random.Random(seed)
    start = 1_735_689_600  # 2025-01-01
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("BEGIN")
        totals: dict[tuple[str, str], list[float]] = {}
        hist: dict[tuple[str, str, str, int], int] = {}
        buckets = (calls * 3) // (SPAN_DAYS * 96) + 1
        for first in range(0, calls, CHUNK):
            rows = []
            conversations = set()
            for n in range(first, min(first + CHUNK, calls)):
                t = start + (n * SPAN_DAYS * 86400) // calls
                model = names[min(int(rng.expovariate(0.5)), models - 1)]
                outcome = OUTCOMES[n % len(OUTCOMES)]
                duration = rng.uniform(0.2, 8.0)
                ttfc = rng.uniform(0.05, 1.5)
                inp, out = rng.randint(10, 4000), rng.randint(1, 1500)
                conversation = f"c{n // CALLS_PER_CONVERSATION}"
                rows.append(
                    (f"{n:032x}", f"{n:016x}", t * 10**9, int((t + duration) * 10**9), "chat",
                     "openai", model, model, inp, out, "reported", True, duration, ttfc, outcome,
                     "RateLimitError" if outcome == "error" else None, conversation)
                )  # fmt: skip
                conversations.add((t - t % 900, conversation))
                sums = totals.setdefault((model, outcome), [0, 0, 0, 0.0, 0.0, 0])
                sums[0] += 1
                sums[1] += inp
                sums[2] += out
                sums[3] += duration
                sums[4] += ttfc
                sums[5] += 1
                for metric, value, bounds in (
                    ("duration", duration, semconv.DURATION_BUCKETS),
                    ("ttfc", ttfc, semconv.TIME_TO_FIRST_CHUNK_BUCKETS),
                    ("input_tokens", inp, semconv.TOKEN_USAGE_BUCKETS),
                    ("output_tokens", out, semconv.TOKEN_USAGE_BUCKETS),
                ):
                    index = next((i for i, b in enumerate(bounds) if value <= b), len(bounds))
                    key = (model, outcome, metric, index)
                    hist[key] = hist.get(key, 0) + 1
            cursor.executemany(
                "INSERT INTO calls (trace_id, span_id, start_ns, end_ns, operation, provider, "
                "model, request_model, input_tokens, output_tokens, tokens_source, streaming, "
                "duration_s, time_to_first_chunk_s, outcome, error_type, conversation_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            cursor.executemany(
                "INSERT OR IGNORE INTO conversation_buckets VALUES (?, ?)", sorted(conversations)
            )
        cursor.executemany(
            "INSERT INTO rollups (bucket_start, model, provider, operation, outcome, requests, "
            "input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, counted_calls, "
            "unreported_calls, duration_sum_s, latency_sum_s, latency_count, tps_sum, tps_count) "
            "VALUES (?, ?, 'openai', 'chat', ?, ?, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)",
            [
                (start + b * 900, model, outcome, buckets)
                for b in range(SPAN_DAYS * 96)
                for model, outcome in list(totals)[:3]
            ],
        )
        cursor.executemany(
            "INSERT INTO metric_totals VALUES ('chat', 'openai', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (m, o, "RateLimitError" if o == "error" else "", *s[:6], s[0], s[0])
                for (m, o), s in totals.items()
            ],
        )
        cursor.executemany(
            "INSERT INTO metric_histograms VALUES ('chat', 'openai', ?, ?, ?, ?, ?, ?)",
            [
                (m, o, "RateLimitError" if o == "error" else "", metric, i, count)
                for (m, o, metric, i), count in hist.items()
            ],
        )
        cursor.execute("COMMIT")
    finally:
        raw.close()
    return store


def measure(store: Store, repeat: int) -> dict[str, float]:
    """Milliseconds per scrape: the collector alone, and GET /metrics through Flask (each with its
    own registry, so each pays a first scrape)."""
    from prometheus_client import generate_latest

    registry = build_registry(store, model_limit=50)
    client = create_app(settings=Settings(), store=store).test_client()
    results: dict[str, float] = {}
    for name, scrape in (
        ("collector", lambda: generate_latest(registry)),
        ("GET /metrics", lambda: client.get("/metrics").get_data()),
    ):
        t0 = time.perf_counter()
        scrape()  # the first scrape also counts distinct conversations (then refreshed off-path)
        results[f"{name} first"] = (time.perf_counter() - t0) * 1000
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            scrape()
            times.append((time.perf_counter() - t0) * 1000)
        results[f"{name} median"] = statistics.median(times)
        results[f"{name} max"] = max(times)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, no assertions")
    parser.add_argument("--calls", type=int, default=None, help="the large size")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--models", type=int, default=8, help="distinct models (label sets grow with it)"
    )
    args = parser.parse_args()
    sizes = [10_000, args.calls or (200_000 if args.quick else 10_000_000)]
    table: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for calls in sizes:
            t0 = time.perf_counter()
            store = build(Path(tmp) / f"stats-{calls}.db", calls, args.models)
            built = time.perf_counter() - t0
            table[calls] = measure(store, args.repeat)
            size_mb = (Path(tmp) / f"stats-{calls}.db").stat().st_size / 1e6
            print(f"built {calls:>11,} calls in {built:6.1f} s ({size_mb:,.0f} MB)", flush=True)
            store.dispose()
    columns = list(table[sizes[0]])
    print(f"\n{'stored calls':>12}  " + "  ".join(f"{c:>19}" for c in columns))
    for calls, row in table.items():
        print(f"{calls:>12,}  " + "  ".join(f"{row[c]:>16.2f} ms" for c in columns))
    if not args.quick:
        slowest = table[sizes[-1]]["GET /metrics median"]
        assert slowest < TARGET_MS, f"GET /metrics takes {slowest:.1f} ms at {sizes[-1]:,} calls"


if __name__ == "__main__":
    main()
