"""Fixtures and helpers for the ops tests: a store fed with known calls, the app on a real threaded
server, and the real Prometheus binary scraping it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from otelstats.config import Settings
from otelstats.records import CallRecord
from otelstats.store import Store
from otelstats.web import create_app
from tests.factories import record
from tests.polling import wait_for
from tests.servers import serving as serving_app

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


def known_records(start: datetime = T0) -> list[CallRecord]:
    """Six calls over two models: streaming and not, an error, a cancellation, two conversations."""
    return [
        record(start, duration_s=0.5, input_tokens=12, output_tokens=30, conversation_id="c1"),
        record(
            start + timedelta(seconds=1),
            duration_s=2.0,
            streaming=True,
            time_to_first_chunk_s=0.05,
            input_tokens=100,
            output_tokens=200,
            conversation_id="c1",
        ),
        record(
            start + timedelta(seconds=2),
            duration_s=3.0,
            streaming=True,
            time_to_first_chunk_s=0.3,
            input_tokens=50,
            output_tokens=500,
            conversation_id="c2",
        ),
        record(
            start + timedelta(seconds=3),
            duration_s=0.1,
            request_model="small-model",
            input_tokens=5,
            output_tokens=3,
        ),
        record(
            start + timedelta(seconds=4),
            duration_s=0.03,
            request_model="small-model",
            outcome="error",
            error_type="RateLimitError",
            input_tokens=None,
            output_tokens=None,
            tokens_source="none",
        ),
        record(
            start + timedelta(seconds=5),
            duration_s=1.5,
            streaming=True,
            time_to_first_chunk_s=0.2,
            outcome="cancelled",
            input_tokens=7,
            output_tokens=None,
        ),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_app(store: Store, **settings: Any) -> Flask:
    return create_app({"TESTING": True}, settings=Settings(**settings), store=store)


@dataclass
class Served:
    app: Flask
    url: str
    store: Store

    def get(self, path: str, accept: str | None = None) -> tuple[str, str]:
        request = urllib.request.Request(self.url + path)
        if accept:
            request.add_header("Accept", accept)
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode(), response.headers["Content-Type"]


@pytest.fixture
def fed_store(sqlite_store: Store) -> Store:
    sqlite_store.write(known_records())
    return sqlite_store


@contextmanager
def serving(store: Store) -> Iterator[Served]:
    """The app on a real threaded werkzeug server on a free loopback port."""
    app = make_app(store)
    with serving_app(app) as url:
        yield Served(app, url, store)


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (./scripts/test installs it)"
        if os.environ.get("CI"):  # CI installs it: missing there is a failure, not a skip
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return result

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])


@contextmanager
def running_prometheus(served: Served, tmp_path: Path) -> Iterator[Prometheus]:
    """The real Prometheus, scraping `served` every second, with the repository's alert rules."""
    binary = require("prometheus")
    rules = tmp_path / "alerts.yml"
    shutil.copy(REPO / "dashboards/prometheus/alerts.yml", rules)
    target = served.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: [{rules}]\n"
        "scrape_configs:\n"
        "  - job_name: otelstats\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_for(lambda: urllib.request.urlopen(prom.url + "/-/ready", timeout=2), "ready")
        yield prom
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
