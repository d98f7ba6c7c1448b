"""Queries: /api/stats for every period and /metrics, at a large and a small history, side by side.

    .venv/bin/python -m benchmarks.history --calls 10000000 --days 730 benchmarks/data/10m.db
    .venv/bin/python -m benchmarks.bench_queries --large benchmarks/data/10m.db
    .venv/bin/python -m benchmarks.bench_queries --quick          # CI: builds small databases

Through the real Flask app (test client: no sockets, so the network does not hide anything).
Reports the first request after start (cold: the day cache is empty) and the median of the next
rounds (warm). Target (issue 8): warm median under 50 ms at 10 million calls, and at most 2x the
same request at 10 thousand calls.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.history import build
from otelstats.store import Store
from otelstats.web import create_app

URLS = [f"/api/stats?period={p}&tz=Europe/Berlin" for p in ("today", "7d", "30d", "all")] + [
    "/metrics"
]


def measure(db: str | Path, rounds: int) -> dict[str, tuple[float, float]]:
    """url → (cold ms, warm median ms) on a fresh app over `db`."""
    store = Store.open(db)
    app = create_app(store=store)
    client = app.test_client()
    out: dict[str, tuple[float, float]] = {}
    for url in URLS:
        started = time.perf_counter()
        assert client.get(url).status_code == 200, url
        cold = (time.perf_counter() - started) * 1000
        warm = []
        for _ in range(rounds):
            started = time.perf_counter()
            client.get(url)
            warm.append((time.perf_counter() - started) * 1000)
        out[url] = (cold, statistics.median(warm))
    store.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", help="a database built by benchmarks.history (10M calls)")
    parser.add_argument("--quick", action="store_true", help="small databases, few rounds")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small.db"
        build(small, 10_000, 730).dispose()
        large: str | Path
        if args.large and not args.quick:
            large = args.large
        else:
            large = Path(tmp) / "large.db"
            build(large, 200_000, 730).dispose()
        rounds = 3 if args.quick else args.rounds
        results = {"small": measure(small, rounds), "large": measure(large, rounds)}
    print(f"{'request (ms)':<42}{'small cold':>11}{'small warm':>11}{'large cold':>11}"
          f"{'large warm':>11}{'ratio':>7}")  # fmt: skip
    for url in URLS:
        s_cold, s_warm = results["small"][url]
        l_cold, l_warm = results["large"][url]
        print(
            f"{url:<42}{s_cold:>11.1f}{s_warm:>11.1f}{l_cold:>11.1f}{l_warm:>11.1f}"
            f"{l_warm / s_warm:>7.2f}"
        )


if __name__ == "__main__":
    main()
