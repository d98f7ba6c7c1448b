"""Dashboard speed: time until every chart is drawn with two years of daily history in headless
Chromium, and the time of the All Time JSON (`/api/stats?period=all`) it draws from.

    .venv/bin/python -m benchmarks.bench_dashboard            # 7 rounds, checks the targets
    .venv/bin/python -m benchmarks.bench_dashboard --quick    # 2 rounds, no target checks (CI)

Targets (issue 4): all charts rendered < 1.5 s; All Time JSON < 100 ms. "Cold" opens a new browser
context (nothing cached, plotly.js fetched and parsed); "warm" reloads in the same context.
"plotly.js alone" loads only the bundle, cold, on an otherwise empty page of the same origin: the
floor under "all charts rendered" that no change to the dashboard itself can go below.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from otelstats.config import Settings
from otelstats.records import CallRecord
from otelstats.store import Store
from otelstats.web import create_app
from tests.browser.support import CHROMIUM, CHROMIUM_ARGS  # one launch recipe for both
from tests.servers import serving

MODELS = ("gpt-4o", "gpt-4o-mini", "llama-3.1-70b", "qwen2.5-coder", "mistral-large", "claude-like")
TARGET_RENDER_S = 1.5
# Performance marks set by static/dashboard.js: cards and table filled; every chart drawn.
NUMBERS_MARK = "otelstats:numbers-shown"
RENDERED_MARK = "otelstats:charts-rendered"
MARKS_JS = (
    "() => Object.fromEntries(performance.getEntriesByType('mark').map(m => [m.name, m.startTime]))"
)
TARGET_JSON_S = 0.100
# The floor page: the installed bundle and nothing else, timed to the end of its evaluation. Served
# by Playwright at a path of the app's origin, so it has no CSP and may carry an inline handler.
FLOOR_PATH = "/__bench_plotly_floor__"
FLOOR_HTML = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>floor</title>'
    '<script async src="/assets/vendor/plotly.min.js" onload="performance.mark(\'plotly-ran\');'
    ' document.documentElement.dataset.ran = 1"></script></head><body></body></html>'
)


def history(days: int, per_day: int) -> list[CallRecord]:
    """`per_day` calls on each of the last `days` days, spread over the models."""
    now = datetime.now(timezone.utc)
    out = []
    n = 0
    for d in range(days):
        day = now - timedelta(days=d)
        for i in range(per_day):
            n += 1
            start = day - timedelta(minutes=7 * i)
            start_ns = int(start.timestamp() * 1e9)
            out.append(
                CallRecord(
                    trace_id=f"{n:032x}",
                    span_id=f"{n:016x}",
                    start_ns=start_ns,
                    end_ns=start_ns + 1_500_000_000,
                    operation="chat",
                    provider="openai",
                    request_model=MODELS[(d + i) % len(MODELS)],
                    response_model=None,
                    server_address="127.0.0.1",
                    server_port=8000,
                    input_tokens=200 + i,
                    output_tokens=80 + d % 50,
                    tokens_source="reported",
                    cached_input_tokens=None,
                    reasoning_tokens=None,
                    streaming=bool(i % 2),
                    time_to_first_chunk_s=0.3 if i % 2 else None,
                    finish_reasons=("stop",),
                    outcome="ok" if i % 17 else "error",
                    error_type=None if i % 17 else "timeout",
                    conversation_id=f"c{d}-{i % 3}",
                )
            )
    return out


def median_ms(values: list[float]) -> str:
    return (
        f"{statistics.median(values) * 1000:.0f} ms (min {min(values) * 1000:.0f}, n={len(values)})"
    )


def run(rounds: int, days: int, per_day: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    results: dict[str, list[float]] = {
        "json_all": [],
        "numbers_cold": [],
        "render_cold": [],
        "render_warm": [],
        "plotly_alone_cold": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "stats.db")
        store.write(history(days, per_day))
        app = create_app(settings=Settings.from_env({}), store=store)
        with serving(app) as url:
            for _ in range(rounds * 3):
                t0 = time.perf_counter()
                with urllib.request.urlopen(url + "/api/stats?period=all&tz=UTC") as resp:
                    resp.read()
                results["json_all"].append(time.perf_counter() - t0)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for _ in range(rounds):
                    ctx = browser.new_context(
                        timezone_id="UTC", viewport={"width": 1280, "height": 900}
                    )
                    page = ctx.new_page()
                    for key in ("render_cold", "render_warm"):
                        if key == "render_cold":
                            page.goto(url + "/?period=all")
                        else:
                            page.reload()
                        page.wait_for_function(
                            "() => document.body.dataset.rendered", timeout=30_000
                        )
                        marks = page.evaluate(MARKS_JS)
                        results[key].append(marks[RENDERED_MARK] / 1000)
                        if key == "render_cold":
                            results["numbers_cold"].append(marks[NUMBERS_MARK] / 1000)
                    ctx.close()
                    results["plotly_alone_cold"].append(plotly_alone(browser, url))
                browser.close()
        store.dispose()
    return results


def plotly_alone(browser: Any, url: str) -> float:
    """Seconds from navigation until plotly.min.js has run, cold, on the empty floor page."""
    ctx = browser.new_context(timezone_id="UTC", viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.route(
        url + FLOOR_PATH, lambda route: route.fulfill(content_type="text/html", body=FLOOR_HTML)
    )
    page.goto(url + FLOOR_PATH)
    page.wait_for_function("() => document.documentElement.dataset.ran", timeout=30_000)
    ran: float = page.evaluate(MARKS_JS)["plotly-ran"] / 1000
    ctx.close()
    return ran


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few rounds, no target checks")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--per-day", type=int, default=20)
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 7)
    logging.getLogger("werkzeug").setLevel(
        logging.WARNING
    )  # one line per request drowns the result
    r = run(rounds, args.days, args.per_day)
    print(f"dashboard, {args.days} days x {args.per_day} calls/day, {rounds} rounds (medians)")
    json_target = f"target < {TARGET_JSON_S * 1000:.0f} ms"
    render_target = f"target < {TARGET_RENDER_S:.1f} s"
    print(f"  /api/stats?period=all JSON      {median_ms(r['json_all'])}   {json_target}")
    print(f"  all charts rendered, cold       {median_ms(r['render_cold'])}   {render_target}")
    print(f"  cards and table shown, cold     {median_ms(r['numbers_cold'])}")
    print(f"  all charts rendered, warm cache {median_ms(r['render_warm'])}")
    print(f"  plotly.js alone, cold (floor)   {median_ms(r['plotly_alone_cold'])}")
    if args.quick:
        return 0
    missed = []
    if statistics.median(r["json_all"]) >= TARGET_JSON_S:
        missed.append("All Time JSON")
    if statistics.median(r["render_cold"]) >= TARGET_RENDER_S:
        missed.append("charts rendered (cold)")
    if missed:
        print("MISSED: " + ", ".join(missed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
