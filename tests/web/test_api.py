"""The JSON API: /api/stats, exports, /api/version, /healthz, errors and security headers."""

from __future__ import annotations

import csv
import io
import json
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from otelstats import queries
from otelstats.cli import cli
from otelstats.config import Settings
from otelstats.export import DAILY_COLUMNS
from otelstats.store import Store
from otelstats.web import create_app
from tests.factories import record
from tests.servers import serving

NOW = datetime.now(timezone.utc)


def _seed(store: Store) -> None:
    store.write(
        [
            record(NOW - timedelta(minutes=5), input_tokens=11, output_tokens=7),
            record(NOW - timedelta(minutes=4), request_model="other", input_tokens=3),
            record(NOW - timedelta(days=2), outcome="error", error_type="X", output_tokens=None),
            record(NOW - timedelta(days=20), input_tokens=100, output_tokens=200),
        ]
    )


def _same_numbers(a: dict, b: dict) -> None:
    assert a["overview"] == b["overview"]
    assert a["daily"] == b["daily"]
    assert a["models"] == b["models"]


def test_stats_defaults_to_7d_utc_and_equals_queries(client: FlaskClient, store: Store) -> None:
    _seed(store)
    response = client.get("/api/stats")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert (body["period"], body["timezone"]) == ("7d", "UTC")
    assert body["overview"]["requests"] == 3
    assert body["overview"]["prompt_tokens"] == 24
    assert len(body["daily"]) == 7
    _same_numbers(body, queries.stats(store.engine, "7d", "UTC"))


def test_stats_period_and_timezone(client: FlaskClient, store: Store) -> None:
    _seed(store)
    body = client.get("/api/stats?period=30d&tz=Asia/Kolkata").get_json()
    assert (body["period"], body["timezone"]) == ("30d", "Asia/Kolkata")
    assert len(body["daily"]) == 30
    assert body["overview"]["requests"] == 4
    _same_numbers(body, queries.stats(store.engine, "30d", "Asia/Kolkata"))


@pytest.mark.parametrize(
    "query",
    [
        "period=forever",
        "tz=Mars/Base",
        "tz=" + "A" * 5000,
        "period=" + "7" * 100,
        "tz=%FF%FE",
        "tz=Europe%2F..%2F..%2Fetc%2Fpasswd",
        "tz=/etc/passwd",
        "tz=UTC%00",
    ],
)
def test_bad_parameters_are_a_json_400(client: FlaskClient, query: str) -> None:
    for path in ("/api/stats", "/api/export.json", "/api/export.csv"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400, (path, query)
        assert response.mimetype == "application/json"
        assert response.get_json()["error"]
        assert b"Traceback" not in response.data


def test_non_utf8_query_string_is_a_400(client: FlaskClient) -> None:
    # WSGI carries raw bytes as latin-1 text: this is the byte string b"tz=\xff\xfe".
    response = client.get("/api/stats", environ_overrides={"QUERY_STRING": "tz=\xff\xfe"})
    assert response.status_code == 400
    assert "UTF-8" in response.get_json()["error"]


def test_unknown_api_route_and_method_are_json(client: FlaskClient) -> None:
    response = client.get("/api/nope")
    assert response.status_code == 404
    assert response.get_json()["error"]
    response = client.post("/api/stats")
    assert response.status_code == 405
    assert response.get_json()["error"]


def test_security_headers_on_every_response(client: FlaskClient) -> None:
    for path in ("/api/stats", "/healthz", "/api/nope", "/api/export.csv"):
        response = client.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";")[0]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8321", "127.0.0.1.evil.example"])
def test_dns_rebinding_host_is_refused_on_loopback(client: FlaskClient, host: str) -> None:
    response = client.get("/api/stats", headers={"Host": host})
    assert response.status_code == 400
    assert "Host" in response.get_json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:8321", "localhost", "[::1]:8321"])
def test_loopback_hosts_are_accepted(client: FlaskClient, host: str) -> None:
    assert client.get("/api/stats", headers={"Host": host}).status_code == 200


def test_beyond_loopback_every_request_needs_the_token(sqlite_store: Store) -> None:
    settings = Settings(host="0.0.0.0", token="s3cret")
    client = create_app({"TESTING": True}, settings=settings, store=sqlite_store).test_client()
    assert client.get("/api/stats").status_code == 401
    assert client.get("/api/stats", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/stats", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200  # liveness probes carry no token
    # A browser opens ?token= once; the cookie carries it for the page's own fetches.
    response = client.get("/api/stats?token=s3cret")
    assert response.status_code == 200
    assert "HttpOnly" in response.headers["Set-Cookie"]
    assert client.get("/api/stats").status_code == 200
    client.delete_cookie("otelstats_token")
    assert client.get("/api/stats").status_code == 401


def test_export_json_is_an_attachment_of_the_stats(client: FlaskClient, store: Store) -> None:
    _seed(store)
    response = client.get("/api/export.json?period=all&tz=Europe/Berlin")
    assert response.status_code == 200
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert 'filename="otelstats-all-' in disposition
    body = json.loads(response.data)
    _same_numbers(body, queries.stats(store.engine, "all", "Europe/Berlin"))


def test_export_csv_has_one_row_per_local_day(client: FlaskClient, store: Store) -> None:
    _seed(store)
    response = client.get("/api/export.csv?period=30d")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    rows = list(csv.reader(io.StringIO(response.data.decode())))
    assert tuple(rows[0]) == DAILY_COLUMNS
    daily = queries.stats(store.engine, "30d", "UTC")["daily"]
    assert len(rows) == 1 + len(daily) == 31
    assert [r[0] for r in rows[1:]] == [d["date"] for d in daily]
    assert sum(int(r[1]) for r in rows[1:]) == 4
    assert sum(int(r[4]) for r in rows[1:]) == sum(d["total_tokens"] for d in daily)


def test_export_csv_by_model_neutralises_hostile_model_names(
    client: FlaskClient, store: Store
) -> None:
    hostile = ['=HYPERLINK("http://evil.example","x")', "-2+3", "@SUM(A1)", "+1", "\tTAB"]
    store.write([record(NOW - timedelta(minutes=1), request_model=m) for m in hostile])
    response = client.get("/api/export.csv?by=model&period=7d")
    assert response.status_code == 200
    assert "by-model" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.data.decode())))
    assert sorted(r["model"] for r in rows) == sorted("'" + m for m in hostile)
    assert all(r["requests"] == "1" for r in rows)


def test_export_csv_rejects_unknown_by(client: FlaskClient) -> None:
    response = client.get("/api/export.csv?by=provider")
    assert response.status_code == 400
    assert "by" in response.get_json()["error"]


def test_version_changes_when_calls_are_stored(client: FlaskClient, store: Store) -> None:
    before = client.get("/api/version").get_json()["version"]
    assert client.get("/api/version").get_json()["version"] == before
    store.write([record(NOW)])
    assert client.get("/api/version").get_json()["version"] != before


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_unreadable_database_is_a_json_503(client: FlaskClient, store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE rollups"))
    for path in ("/api/stats", "/api/export.csv", "/api/version"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert response.get_json()["error"]
        assert b"Traceback" not in response.data


def test_cli_stats_json_equals_api(client: FlaskClient, store: Store, runner: CliRunner) -> None:
    _seed(store)
    result = runner.invoke(cli, ["stats", "--json", "--period", "30d", "--tz", "UTC"])
    assert result.exit_code == 0, result.output
    _same_numbers(json.loads(result.output), client.get("/api/stats?period=30d").get_json())


def test_real_threaded_server_serves_the_app(app: Flask) -> None:
    with serving(app) as base:
        with urllib.request.urlopen(base + "/api/stats?period=today", timeout=10) as response:
            body = json.load(response)
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert body["period"] == "today"
