"""Synthetic call history for benchmarks: deterministic records spread over a time span, and a
generator that builds a large database through the real writer (rollups included).

    .venv/bin/python -m benchmarks.history --calls 10000000 --days 730 benchmarks/data/10m.db
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from otelstats.records import CallRecord
from otelstats.store import Store

MODELS = ("gpt-4o", "gpt-4o-mini", "llama-3.1-8b", "qwen2.5-7b", "mistral-7b")
DAY_NS = 86_400 * 10**9


def make_records(
    n: int, offset: int = 0, *, step_ns: int = 1_700_000_000, start_ns: int = 1_780_000_000 * 10**9
) -> list[CallRecord]:
    """Calls numbered `offset`..`offset + n - 1`; call i starts at start_ns + i * step_ns.

    Trace and span ids are random, as the SDK makes them (so index inserts land where real ones
    do), but reproducible: seeded by `offset`."""
    ids = random.Random(offset)
    out = []
    for i in range(offset, offset + n):
        start = start_ns + i * step_ns
        streaming = i % 2 == 0
        ok = i % 20 != 0
        out.append(
            CallRecord(
                trace_id=f"{ids.getrandbits(128):032x}",
                span_id=f"{ids.getrandbits(64):016x}",
                start_ns=start,
                end_ns=start + 900_000_000,
                operation="chat",
                provider="openai",
                request_model=MODELS[i % len(MODELS)],
                response_model=None,
                server_address="127.0.0.1",
                server_port=8000,
                input_tokens=100 + i % 50,
                output_tokens=200 + i % 70,
                tokens_source="reported",
                cached_input_tokens=None,
                reasoning_tokens=None,
                streaming=streaming,
                time_to_first_chunk_s=0.12 if streaming else None,
                finish_reasons=("stop",),
                outcome="ok" if ok else "error",
                error_type=None if ok else "APIError",
                conversation_id=f"conv-{i // 8}",
            )
        )
    return out


def build(db: str | Path, calls: int, days: float, *, end_ns: int | None = None) -> Store:
    """A database of `calls` calls spread evenly over the `days` days before `end_ns` (now),
    written by Store.write in batches like the exporter does."""
    end = time.time_ns() if end_ns is None else end_ns
    step = max(int(days * DAY_NS / max(calls, 1)), 1)
    store = Store.open(db)
    batch = 20_000
    for offset in range(0, calls, batch):
        records = make_records(
            min(batch, calls - offset), offset, step_ns=step, start_ns=end - int(days * DAY_NS)
        )
        store.write(records)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description="Build a benchmark database.")
    parser.add_argument("db")
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--days", type=float, default=730)
    args = parser.parse_args()
    started = time.perf_counter()
    build(args.db, args.calls, args.days).dispose()
    print(f"{args.calls:,} calls over {args.days:g} days in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
