"""GET /metrics on the app: content negotiation, promtool's linter, failures as failed scrapes."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from otelstats.store import Store
from otelstats.web.metrics import EXPORTER_STATS_KEY
from tests.factories import record

from .conftest import T0, make_app, require

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def test_plain_text_by_default(fed_store: Store) -> None:
    response = make_app(fed_store).test_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert response.headers["Vary"] == "Accept"
    names = {f.name for f in parse_text(response.get_data(as_text=True))}
    assert "otelstats_requests" in names
    assert "# EOF" not in response.get_data(as_text=True)


def test_openmetrics_when_asked(fed_store: Store) -> None:
    response = (
        make_app(fed_store).test_client().get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
    )
    assert response.status_code == 200
    assert response.content_type.startswith("application/openmetrics-text; version=1.0.0")
    text = response.get_data(as_text=True)
    assert text.endswith("# EOF\n")
    assert "# UNIT gen_ai_client_operation_duration_seconds seconds" in text
    # The token histogram has no unit, as OTel's exporter gives it none for `{token}`.
    assert "# UNIT gen_ai_client_token_usage" not in text
    families = {f.name: f for f in parse_om(text)}
    assert families["otelstats_build"].type == "info"
    ok = [s for s in families["otelstats_requests"].samples if s.labels.get("outcome") == "ok"]
    assert sum(s.value for s in ok if s.name == "otelstats_requests_total") == 4


@pytest.mark.prometheus
def test_promtool_check_metrics_passes(sqlite_store: Store) -> None:
    promtool = require("promtool")
    sqlite_store.write(
        [
            record(T0, request_model='a"b\\c\nd' + "z" * 10_000, outcome="error", error_type="E\n"),
            record(T0, streaming=True, time_to_first_chunk_s=0.2),
        ]
    )
    text = make_app(sqlite_store).test_client().get("/metrics").get_data()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == b""


def test_exporter_stats_of_the_serving_process(fed_store: Store) -> None:
    class Stats:
        written, pending, dropped = 11, 0, 1

    app = make_app(fed_store)
    client = app.test_client()
    assert "otelstats_exporter_records_written" not in client.get("/metrics").get_data(as_text=True)
    # Attached after create_app(), as a host of an exporter would.
    app.extensions[EXPORTER_STATS_KEY] = Stats
    text = client.get("/metrics").get_data(as_text=True)
    assert "otelstats_exporter_records_written_total 11.0" in text
    assert "otelstats_exporter_records_dropped_total 1.0" in text


def test_model_limit_comes_from_settings(sqlite_store: Store) -> None:
    sqlite_store.write([record(T0, request_model=m) for m in ("a", "a", "b", "c")])
    text = make_app(sqlite_store, metrics_model_limit=1).test_client().get("/metrics")
    models = {
        s.labels["gen_ai_request_model"]
        for f in parse_text(text.get_data(as_text=True))
        for s in f.samples
        if "gen_ai_request_model" in s.labels
    }
    assert models == {"a", "other"}


def test_unreadable_database_is_a_failed_scrape(fed_store: Store) -> None:
    app = make_app(fed_store)
    with fed_store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE metric_totals")
    response = app.test_client().get("/metrics")
    assert response.status_code == 503
    assert "OperationalError" in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/metrics", "/metrics?x=1"])
def test_token_required_beyond_loopback(fed_store: Store, path: str) -> None:
    app = make_app(fed_store, host="0.0.0.0", token="s3cret")
    client = app.test_client()
    assert client.get(path).status_code == 401
    ok = client.get(path, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
