"""The real Prometheus scraping a running app: same totals as /api/stats, and every PromQL
expression of the Grafana dashboard and of the alert rules valid and returning data.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import yaml

from otelstats.store import Store
from tests.factories import record

from .conftest import (
    REPO,
    Prometheus,
    Served,
    known_records,
    running_prometheus,
    serving,
    wait_for,
)

pytestmark = pytest.mark.prometheus

GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "10m",
    "$job": "otelstats",
    "$instance": ".+",
    "$model": ".*",
}


def grafana_exprs() -> list[str]:
    dashboard = json.loads((REPO / "dashboards/grafana/otelstats.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((REPO / "dashboards/prometheus/alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def substitute(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def signal(expr: str) -> str:
    """An alert's expression without its final threshold: the part that must have data."""
    expr = expr.strip()
    absent = re.fullmatch(r"absent\((.*)\)", expr, re.DOTALL)
    if absent:
        return absent.group(1)
    match = re.fullmatch(r"(.*?)\s*(>|<|==|>=|<=|!=)\s*[0-9.]+", expr, re.DOTALL)
    assert match, f"alert expression without a trailing threshold: {expr}"
    return match.group(1)


def _feed_live_calls(served: Served, n: int) -> None:
    """Calls starting now, so that rate() over the last minute sees them arrive."""
    now = datetime.now().astimezone()
    served.store.write(
        [record(now - timedelta(milliseconds=i), duration_s=1.0 + i / 10) for i in range(n)]
        + [
            record(now, streaming=True, time_to_first_chunk_s=0.1 * (i + 1), duration_s=2.0)
            for i in range(n)
        ]
        + [record(now, outcome="error", error_type="APIConnectionError", output_tokens=None)]
    )


def _scrapes(prometheus: Prometheus) -> float:
    return prometheus.value('count_over_time(up{job="otelstats"}[1h])')


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Prometheus]]:
    """One app + Prometheus for the module: the target up, counters grown over several scrapes."""
    tmp = tmp_path_factory.mktemp("prometheus")
    store = Store.open(tmp / "stats.db")
    store.write(known_records())
    with serving(store) as served, running_prometheus(served, tmp) as prometheus:
        wait_for(lambda: prometheus.query('up{job="otelstats"} == 1'), "the target to be up")
        for batch in (3, 5):
            seen = _scrapes(prometheus)
            _feed_live_calls(served, batch)
            wait_for(lambda seen=seen: _scrapes(prometheus) >= seen + 2, "two more scrapes")
        yield served, prometheus
    store.dispose()


@pytest.fixture
def served(stack: tuple[Served, Prometheus]) -> Served:
    return stack[0]


@pytest.fixture
def scraping(stack: tuple[Served, Prometheus]) -> Prometheus:
    return stack[1]


def test_totals_equal_the_api(served: Served, scraping: Prometheus) -> None:
    records = known_records()  # written by the fixture, plus the live calls fed above
    live = 2 * (3 + 5) + 2
    expected = {
        "requests": len(records) + live,
        "prompt_tokens": sum(r.input_tokens or 0 for r in records) + live * 10,
        "completion_tokens": sum(r.output_tokens or 0 for r in records) + (live - 2) * 20,
        "conversations": 2,
    }
    try:
        body, _ = served.get("/api/stats?period=all&tz=UTC")
    except urllib.error.HTTPError:  # the API not in place yet: the records are the reference
        overview = expected
    else:
        overview = json.loads(body)["overview"]
    got = {
        "requests": scraping.value("sum(otelstats_requests_total)"),
        "prompt_tokens": scraping.value("sum(otelstats_prompt_tokens_total)"),
        "completion_tokens": scraping.value("sum(otelstats_completion_tokens_total)"),
        "conversations": scraping.value("sum(otelstats_conversations_total)"),
    }
    assert got == {key: overview[key] for key in got} == expected
    assert scraping.value('sum(otelstats_requests_total{outcome="ok"})') == (
        overview["requests"] - overview["errors"] - 1  # one cancelled call
        if "errors" in overview
        else expected["requests"] - 4  # three errors, one cancelled
    )


def test_histogram_quantile_is_the_expected_bucket_bound(scraping: Prometheus) -> None:
    # known_records: time to first chunk 0.05, 0.3, 0.2 s, live calls 0.1…0.5 s; all the values
    # ≤ 0.08 s are one of 11 streaming observations: the (1/11)-quantile ends exactly at 0.08.
    ttfc = "gen_ai_client_operation_time_to_first_chunk_seconds"
    assert scraping.value(f"sum({ttfc}_count)") == 3 + 3 + 5
    q = 1 / scraping.value(f"sum({ttfc}_count)")
    assert scraping.value(f"histogram_quantile({q}, sum by (le) ({ttfc}_bucket))") == pytest.approx(
        0.08
    )
    # Every observation is ≤ 0.64 s and one (0.5 s) is above 0.32: the maximum is 0.64.
    assert scraping.value(f"histogram_quantile(1, sum by (le) ({ttfc}_bucket))") == pytest.approx(
        0.64
    )


def test_every_dashboard_expression_returns_data(scraping: Prometheus) -> None:
    empty = [e for e in grafana_exprs() if not scraping.query(substitute(e))]
    assert empty == []


def test_dashboard_variables_have_values(scraping: Prometheus) -> None:
    dashboard = json.loads((REPO / "dashboards/grafana/otelstats.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"job", "instance", "model"} <= set(variables)
    for name in ("job", "instance", "model"):
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", variables[name]["query"]["query"])
        assert match, variables[name]
        selector, label = substitute(match.group(1)), match.group(2)
        values = scraping.api(f"label/{label}/values", **{"match[]": selector})
        assert values, (name, selector)
    assert "gpt-test" in scraping.api(
        "label/gen_ai_request_model/values", **{"match[]": "otelstats_requests_total"}
    )


def test_every_alert_expression_is_valid_and_its_signal_has_data(scraping: Prometheus) -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "LLMErrorRateHigh",
        "LLMTimeToFirstTokenRegression",
        "OtelstatsDown",
        "OtelstatsAbsent",
    }
    for rule in rules:
        scraping.query(rule["expr"])  # valid (the helper asserts status success)
        assert scraping.query(signal(rule["expr"])), rule["alert"]
    # Prometheus itself evaluates the loaded rules without error.
    deadline = time.monotonic() + 10
    while True:
        loaded = [r for g in scraping.api("rules")["groups"] for r in g["rules"]]
        if all(r.get("lastEvaluation", "").startswith("20") for r in loaded) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.3)
    assert len(loaded) == len(rules)
    assert [(r["name"], r["health"], r.get("lastError", "")) for r in loaded] == [
        (r["alert"], "ok", "") for r in rules
    ]
    # The app is up and present: the availability alerts do not fire.
    firing = {a["labels"]["alertname"] for a in scraping.api("alerts")["alerts"]}
    assert not firing & {"OtelstatsDown", "OtelstatsAbsent"}
