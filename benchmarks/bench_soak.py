"""Soak run on loopback: concurrent instrumented and bare openai clients plus dashboard readers.

For a fixed time, client processes call a FakeOpenAIServer (its own process) with the real openai
SDK: half of them run `otelstats.instrument(db)`, half are bare, all at once, so the latency added
by instrumentation is measured under the same load. Meanwhile reader threads poll /api/stats and
/metrics of an `otelstats serve`-equivalent app (create_app + the threaded WSGI server) on the same
database. Afterwards: exact counts (rows == instrumented calls made), max RSS of every process and
RSS growth of the clients over the run, and p50/p99 call latency, instrumented vs bare.
No assertions on time (issue 7, "Load"); exact counts are checked and reported.

    .venv/bin/python benchmarks/bench_soak.py            # 60 s
    .venv/bin/python benchmarks/bench_soak.py --quick    # 5 s smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from otelstats.config import Settings
from otelstats.store import Store
from otelstats.web import create_app
from tests.servers import serving

_SERVER = """
import sys
from otelstats.fake_server import FakeOpenAIServer
server = FakeOpenAIServer().start()
print(server.base_url, flush=True)
sys.stdin.read()
"""

_CLIENT = """
import json, resource, sys, threading, time
db, base_url, seconds, threads, instrumented = sys.argv[1:6]
seconds, threads = float(seconds), int(threads)
handle = None
if instrumented == "1":
    import otelstats
    handle = otelstats.instrument(db)   # default export interval (OTELSTATS_EXPORT_INTERVAL_MS)
from openai import OpenAI

def rss_kib():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() // 1024
    except OSError:
        return None

MESSAGES = [{"role": "user", "content": "hello"}]
latencies, errors, lock = [], [], threading.Lock()

def work(n):
    client = OpenAI(base_url=base_url, api_key="sk-soak", max_retries=0)
    mine, i = [], 0
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            if i % 4 == 3:
                for _ in client.chat.completions.create(model="soak", messages=MESSAGES,
                                                        stream=True):
                    pass
            else:
                client.chat.completions.create(model="soak", messages=MESSAGES)
            mine.append(time.perf_counter() - t0)
        except Exception as exc:
            errors.append(repr(exc))
        i += 1
    with lock:
        latencies.extend(mine)

# Warm up (imports, first connection) before measuring, so the run compares steady states.
OpenAI(base_url=base_url, api_key="sk-soak", max_retries=0).chat.completions.create(
    model="soak", messages=MESSAGES)
if handle is not None:
    handle.flush()  # the store is opened lazily on the first export: not part of the growth
rss_start = rss_kib()
deadline = time.monotonic() + seconds
pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
for t in pool: t.start()
for t in pool: t.join()
rss_end = rss_kib()
report = {"calls": len(latencies) + len(errors) + 1, "errors": errors[:5], "n_errors": len(errors),
          "latencies": latencies, "rss_start_kib": rss_start, "rss_end_kib": rss_end}
if handle is not None:
    handle.shutdown()
    s = handle.exporter.stats
    report["exporter"] = {"written": s.written, "pending": s.pending, "dropped": s.dropped}
report["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(report), flush=True)
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _reader(url: str, stop: threading.Event, out: dict[str, Any]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                response.read()
            out["ok"] += 1
        except Exception as exc:  # reported below, never hidden
            out["errors"].append(repr(exc)[:200])
        out["latencies"].append(time.perf_counter() - t0)


def run(seconds: float, processes: int, threads: int, readers: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="otelstats-soak-"))
    db = folder / "stats.db"
    env = {**os.environ, "XDG_DATA_HOME": str(folder / "xdg")}
    env.pop("OTELSTATS_DB", None)
    upstream = subprocess.Popen(
        [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert upstream.stdout is not None
    assert upstream.stdin is not None
    base_url = upstream.stdout.readline().strip()

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per poll otherwise
    store = Store.open(db)
    app = create_app(settings=Settings(db=str(db)), store=store)
    app_server = contextlib.ExitStack()
    origin = app_server.enter_context(serving(app))
    stop = threading.Event()
    reads: dict[str, dict[str, Any]] = {}
    reader_threads = []
    for i in range(readers):
        path = "/api/stats?period=all" if i % 2 == 0 else "/metrics"
        stats = reads.setdefault(path, {"ok": 0, "errors": [], "latencies": []})
        thread = threading.Thread(target=_reader, args=(origin + path, stop, stats), daemon=True)
        thread.start()
        reader_threads.append(thread)

    clients = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CLIENT,
                str(db),
                base_url,
                str(seconds),
                str(threads),
                "1" if n % 2 == 0 else "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(processes)
    ]
    outputs = [c.communicate(timeout=seconds + 300) for c in clients]
    stop.set()
    for thread in reader_threads:
        thread.join(timeout=60)
    with urllib.request.urlopen(origin + "/api/stats?period=all", timeout=30) as response:
        api_requests = json.loads(response.read())["overview"]["requests"]
    app_server.close()
    upstream.stdin.close()
    upstream.wait(timeout=30)

    reports = []
    for client, (out, err) in zip(clients, outputs, strict=True):
        if client.returncode != 0:
            raise SystemExit(f"a client failed:\n{err[-2000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    instrumented = [r for n, r in enumerate(reports) if n % 2 == 0]
    bare = [r for n, r in enumerate(reports) if n % 2 == 1]
    conn = sqlite3.connect(db)
    (rows,) = conn.execute("SELECT count(*) FROM calls").fetchone()
    conn.close()
    store.dispose()
    shutil.rmtree(folder, ignore_errors=True)

    def lat(group: list[dict[str, Any]]) -> dict[str, float]:
        values = [v for r in group for v in r["latencies"]]
        return {
            "calls": len(values),
            "p50_ms": _percentile(values, 0.50) * 1000,
            "p99_ms": _percentile(values, 0.99) * 1000,
            "mean_ms": statistics.fmean(values) * 1000,
        }

    inst, plain = lat(instrumented), lat(bare)
    made = sum(r["calls"] for r in instrumented)
    return {
        "seconds": seconds,
        "client_processes": {"instrumented": len(instrumented), "bare": len(bare)},
        "threads_per_process": threads,
        "instrumented_calls_made": made,
        "rows_stored": rows,
        "api_stats_requests": api_requests,
        "counts_exact": made == rows == api_requests,
        "call_errors": sum(r["n_errors"] for r in reports),
        "exporter": [r.get("exporter") for r in instrumented],
        "latency_instrumented": inst,
        "latency_bare": plain,
        "added_p50_ms": inst["p50_ms"] - plain["p50_ms"],
        "added_p99_ms": inst["p99_ms"] - plain["p99_ms"],
        "max_rss_kib": {
            "serve_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "instrumented_clients": max(r["max_rss_kib"] for r in instrumented),
            "bare_clients": max(r["max_rss_kib"] for r in bare),
        },
        "client_rss_growth_kib": {
            "instrumented": [
                r["rss_end_kib"] - r["rss_start_kib"]
                for r in instrumented
                if r["rss_start_kib"] is not None
            ],
            "bare": [
                r["rss_end_kib"] - r["rss_start_kib"]
                for r in bare
                if r["rss_start_kib"] is not None
            ],
        },
        "readers": {
            path: {
                "ok": s["ok"],
                "errors": len(s["errors"]),
                "p50_ms": _percentile(s["latencies"], 0.5) * 1000 if s["latencies"] else None,
                "p99_ms": _percentile(s["latencies"], 0.99) * 1000 if s["latencies"] else None,
            }
            for path, s in reads.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 s instead of 60 s")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--processes", type=int, default=4, help="client processes (half bare)")
    parser.add_argument("--threads", type=int, default=2, help="client threads per process")
    parser.add_argument("--readers", type=int, default=2, help="/api/stats + /metrics pollers")
    args = parser.parse_args(argv)
    seconds = args.seconds or (5.0 if args.quick else 60.0)
    result = run(seconds, max(args.processes, 2), args.threads, args.readers)
    print(json.dumps(result, indent=2))
    reader_errors = sum(r["errors"] for r in result["readers"].values())
    return 0 if result["counts_exact"] and not result["call_errors"] and not reader_errors else 1


if __name__ == "__main__":
    sys.exit(main())
