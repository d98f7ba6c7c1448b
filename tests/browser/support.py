"""What the browser tests share besides fixtures: seeded data, the running site, page helpers.

Seeded calls sit at known local times in TZ (the browser context's timezone), so every period's
figures are known; the hostile model names check that server strings stay text.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from otelstats.records import CallRecord
from otelstats.store import Store
from tests.factories import record

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TZ = "Europe/Berlin"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"
XSS_MODEL = "<img src=x onerror=alert(1)>"
CSV_HOSTILE_MODELS = ('=HYPERLINK("http://evil.example","x")', "@SUM(1+1)", "+cmd", "-2+3")


@dataclass
class Site:
    """A running app: its base URL and its store (write to it to simulate new calls)."""

    url: str
    store: Store
    extra: dict[str, Any] = field(default_factory=dict)

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            return json.loads(resp.read())


def local_days_ago(days: int, tz: str = TZ) -> datetime:
    """A moment on the local day `days` before today: noon, or for today half-way since midnight."""
    now = datetime.now(ZoneInfo(tz))
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if days == 0:
        return midnight + (now - midnight) / 2
    day = (midnight - timedelta(days=days)).date()
    return datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo(tz))


def seed_records(days: int) -> list[CallRecord]:
    """Known traffic over `days` local days: two regular models, hostile names, one failure."""
    out: list[CallRecord] = []
    for k in range(days):
        start = local_days_ago(k)
        for i in range(k % 3 + 1):
            out.append(
                record(
                    start + timedelta(seconds=i),
                    request_model="gpt-4o",
                    input_tokens=100 * (k + 1),
                    output_tokens=50,
                    duration_s=2.0,
                    conversation_id=f"conv-{k % 4}",
                )
            )
        if k % 2 == 0:
            out.append(
                record(
                    start,
                    request_model="llama-3",
                    input_tokens=1000,
                    output_tokens=2000,
                    duration_s=8.0,
                )
            )
    out.append(record(local_days_ago(1), request_model=XSS_MODEL, input_tokens=5, output_tokens=7))
    for j, name in enumerate(CSV_HOSTILE_MODELS):
        out.append(
            record(local_days_ago(2 + j), request_model=name, input_tokens=3, output_tokens=4)
        )
    out.append(
        record(
            local_days_ago(0),
            outcome="error",
            error_type="timeout",
            input_tokens=None,
            output_tokens=None,
        )
    )
    return out


@dataclass
class Watch:
    """What a page did that a test may forbid: dialogs, console errors, requests it made."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


# Recorded before any page script runs, so a violation during load is caught too.


def open_dashboard(page: Any, site: Site, query: str = "", state: str = "ready") -> None:
    """Load the page and wait until it has settled in `state` (charts drawn when ready)."""
    page.goto(site.url + "/" + query)
    page.wait_for_function(
        "s => document.body.dataset.state === s"
        " && (s !== 'ready' || Boolean(document.body.dataset.rendered))",
        arg=state,
    )


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


CARD_METRICS = (
    "requests",
    "total_tokens",
    "prompt_tokens",
    "completion_tokens",
    "avg_tokens_per_second",
    "conversations",
    "avg_latency_ms",
    "success_rate",
)


def stats(site: Site, period: str) -> dict[str, Any]:
    return site.api(f"/api/stats?period={period}&tz={TZ.replace('/', '%2F')}")  # type: ignore[no-any-return]


def card_values(page: Any) -> dict[str, str]:
    return page.evaluate(  # type: ignore[no-any-return]
        """Object.fromEntries([...document.querySelectorAll('.card[data-metric]')]
             .map(c => [c.dataset.metric, c.querySelector('.value').dataset.value]))"""
    )


def assert_cards_match(page: Any, overview: dict[str, Any]) -> None:
    shown = card_values(page)
    assert set(shown) == set(CARD_METRICS)
    for key in CARD_METRICS:
        expected = overview[key]
        if expected is None:
            assert shown[key] == "", key
        else:
            assert float(shown[key]) == pytest.approx(expected), key


def rendered(page: Any) -> int:
    return int(page.evaluate("Number(document.body.dataset.rendered || 0)"))


def wait_rerendered(page: Any, before: int) -> None:
    page.wait_for_function(
        "n => Number(document.body.dataset.rendered || 0) > n"
        " && document.body.dataset.state === 'ready'",
        arg=before,
    )
