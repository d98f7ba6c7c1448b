"""The web surfaces, beyond tests/web: GET never changes state, cross-site POSTs are refused,
no `Access-Control-Allow-Origin: *` anywhere, and no traceback for any fuzzed path or parameter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx2 as httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from otelstats.config import Settings
from otelstats.exporter import StatsSpanExporter
from otelstats.fake_server import FakeOpenAIServer, Reply
from otelstats.receivers.proxy import ProxyServer, create_proxy_app, recording_provider
from otelstats.store import Store
from otelstats.web import create_app
from tests.factories import record

from .conftest import table_rows

NOW = datetime.now(timezone.utc)
# Arguments for routes that take one, so that every GET route is visited.
ROUTE_ARGUMENTS = {"filename": "dashboard.js"}
QUERIES = ["", "?period=all&tz=UTC", "?period=today&tz=Asia/Kolkata", "?by=model&period=30d"]


def _otlp_body(span_id: str = "aaaaaaaaaaaaaaaa") -> bytes:
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": span_id,
        "name": "chat m",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000001000000000",
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
        ],
    }
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


@pytest.fixture
def app(sqlite_store: Store) -> Flask:
    sqlite_store.write(
        [
            record(NOW - timedelta(minutes=3), conversation_id="c1"),
            record(NOW - timedelta(days=3), request_model="other", outcome="error"),
        ]
    )
    return create_app({"TESTING": True}, settings=Settings(), store=sqlite_store)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _get_urls(app: Flask) -> list[str]:
    urls = []
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()):
            continue
        path = rule.build({name: ROUTE_ARGUMENTS[name] for name in rule.arguments})
        assert path is not None
        urls.extend(path[1] + query for query in QUERIES)
    return urls


def test_no_get_route_changes_the_database(app: Flask, client: FlaskClient) -> None:
    store: Store = app.extensions["otelstats.store"]
    assert store.path is not None
    before = table_rows(store.path)
    urls = _get_urls(app)
    assert {"/", "/api/stats", "/api/export.csv", "/metrics", "/healthz"} <= {
        u.split("?")[0] for u in urls
    }
    for url in urls:
        for method in ("GET", "HEAD"):
            with client.open(url, method=method) as response:  # closes file responses
                assert response.status_code < 500, (method, url)
        # A GET on the POST-only receiver is refused, not treated as a write.
    assert client.get("/v1/traces").status_code == 405
    assert table_rows(store.path) == before
    assert sum(before["rollups"][i][-1] is not None for i in range(len(before["rollups"])))


def _post(client: FlaskClient, content_type: str = "application/json", **headers: str) -> int:
    response = client.post(
        "/v1/traces", data=_otlp_body(), headers={"Content-Type": content_type, **headers}
    )
    assert b"Traceback" not in response.data
    assert "Access-Control-Allow-Origin" not in response.headers
    return response.status_code


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://localhost:3000"},  # another local app: same site, not same origin
        {"Origin": "null"},  # sandboxed iframes and file:// pages
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_cross_site_posts_are_refused(client: FlaskClient, headers: dict[str, str]) -> None:
    store: Store = client.application.extensions["otelstats.store"]
    assert store.path is not None
    before = table_rows(store.path)
    assert _post(client, **headers) == 403
    assert table_rows(store.path) == before


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"],
)
def test_content_types_a_form_can_send_are_refused(client: FlaskClient, content_type: str) -> None:
    assert _post(client, content_type) == 415


@pytest.mark.parametrize(
    "headers",
    [
        {},  # OTLP exporters send neither Origin nor Sec-Fetch-Site
        {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed by the user
    ],
)
def test_same_origin_and_non_browser_posts_are_accepted(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    assert _post(client, **headers) == 200


def test_preflight_gets_no_cors_grant(client: FlaskClient) -> None:
    for path in ("/v1/traces", "/api/stats", "/metrics", "/"):
        response = client.options(
            path,
            headers={
                "Origin": "http://evil.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert not any(h.lower().startswith("access-control-") for h, _ in response.headers)


@pytest.fixture
def cors_upstream() -> Iterator[FakeOpenAIServer]:
    """An upstream that allows every origin, as llama.cpp's and Ollama's servers can."""
    grant = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true"}
    with FakeOpenAIServer(default=Reply(headers=grant)) as server:
        yield server


def test_proxy_never_passes_a_cors_grant_on(
    cors_upstream: FakeOpenAIServer, sqlite_store: Store
) -> None:
    provider: TracerProvider = recording_provider(StatsSpanExporter(sqlite_store))
    proxy = ProxyServer(create_proxy_app(cors_upstream.base_url, provider)).start()
    try:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        responses = [
            httpx.post(f"{proxy.base_url}/chat/completions", json=body, timeout=30),
            httpx.post(
                f"{proxy.base_url}/chat/completions", json={**body, "stream": True}, timeout=30
            ),
            httpx.get(f"{proxy.base_url}/models", timeout=30),
        ]
    finally:
        proxy.shutdown()
        provider.shutdown()
    for response in responses:
        assert response.status_code == 200
        assert not any(h.lower().startswith("access-control-") for h in response.headers)


SEGMENT = st.one_of(
    st.sampled_from(["api", "stats", "export.csv", "assets", "metrics", "v1", "traces", "..",
                     "%2e%2e", "%00", "%ff", "a" * 3000, "<script>", "'--", "\u202e"]),
    st.text(max_size=30),
)  # fmt: skip
QUERY = st.one_of(
    st.sampled_from(["period=forever", "tz=%ff", "by=%00", "period=7d&period=30d", "tz[]=1",
                     "token=x", "by=model&tz=Etc/GMT%2B14", "a=" + "b" * 5000, "%", "&&=&"]),
    st.text(max_size=60),
)  # fmt: skip


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    segments=st.lists(SEGMENT, min_size=1, max_size=4),
    query=QUERY,
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
)
def test_no_traceback_for_any_path_or_parameter(
    client: FlaskClient, segments: list[str], query: str, method: str
) -> None:
    # Raw WSGI values (latin-1 text carrying bytes), as a real server hands them over.
    path = "/" + "/".join(segments)
    environ = {
        "PATH_INFO": path.encode("utf-8", "surrogatepass").decode("latin-1"),
        "QUERY_STRING": query.encode("utf-8", "surrogatepass").decode("latin-1"),
    }
    with client.open("/", method=method, environ_overrides=environ) as response:
        text = response.get_data()
    assert response.status_code != 500 or b"internal error" in text, (path, query)
    assert b"Traceback" not in text
    assert b'File "' not in text
    assert response.headers.get("Access-Control-Allow-Origin") is None
    if environ["PATH_INFO"].startswith("/api/") and method != "HEAD":
        assert response.mimetype == "application/json", (path, query, response.status_code)


def test_template_is_a_shell(client: FlaskClient, tmp_path: Path) -> None:
    """The page carries no data: everything arrives through /api/stats and is set as text."""
    html = client.get("/").get_data(as_text=True)
    assert "gpt-test" not in html
    assert "<script>" not in html.replace(" ", "")  # no inline script (CSP forbids it anyway)
