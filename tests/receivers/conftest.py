"""Fixtures for the receivers: a real upstream, the recording proxy, a served otelstats app.

Everything runs on real sockets on 127.0.0.1 (port 0); the proxy's spans go through its own
TracerProvider and the real StatsSpanExporter into a temporary SQLite store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider

from otelstats.config import Settings
from otelstats.exporter import StatsSpanExporter
from otelstats.fake_server import FakeOpenAIServer
from otelstats.models import Call
from otelstats.receivers.proxy import (
    ProxyOptions,
    ProxyServer,
    create_proxy_app,
    recording_provider,
)
from otelstats.store import Store
from otelstats.web import create_app
from tests.servers import serving


def calls(store: Store) -> list[Any]:
    """Every stored call row, oldest first."""
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(Call).order_by(Call.start_ns)).mappings())


@dataclass
class RunningProxy:
    server: ProxyServer
    provider: TracerProvider
    store: Store

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def calls(self, at_least: int = 0) -> list[Any]:
        """Flush the proxy's spans to the store, then read them back. A stream is recorded once
        the proxy has read the upstream to its end, a moment after the client has its last
        chunk: `at_least` waits (up to 10 s) for that many calls."""
        deadline = time.monotonic() + 10
        while True:
            assert self.provider.force_flush(10_000)
            rows = calls(self.store)
            if len(rows) >= at_least or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def start_proxy(sqlite_store: Store) -> Iterator[Any]:
    """start_proxy(upstream_url, **ProxyOptions) -> RunningProxy, stopped after the test."""
    running: list[RunningProxy] = []

    def start(upstream_url: str, **options: Any) -> RunningProxy:
        provider = recording_provider(StatsSpanExporter(sqlite_store), export_interval_ms=50)
        app = create_proxy_app(upstream_url, provider, ProxyOptions(**options))
        proxy = RunningProxy(ProxyServer(app).start(), provider, sqlite_store)
        running.append(proxy)
        return proxy

    yield start
    for proxy in running:
        proxy.server.shutdown()
        proxy.provider.shutdown()


@dataclass
class RunningApp:
    url: str
    store: Store


def _serve(store: Store, settings: Settings, config: dict[str, Any]) -> Iterator[RunningApp]:
    with serving(create_app(config, settings=settings, store=store)) as url:
        yield RunningApp(url, store)


@pytest.fixture
def otlp_config() -> dict[str, Any]:
    """App config for `served`; small limits so oversized bodies stay cheap to build."""
    return {
        "TESTING": True,
        "OTLP_MAX_BODY_BYTES": 256 * 1024,
        "OTLP_MAX_DECODED_BYTES": 1024 * 1024,
    }


@pytest.fixture
def served(sqlite_store: Store, otlp_config: dict[str, Any]) -> Iterator[RunningApp]:
    """`otelstats serve`'s app on a real threaded server over a temporary SQLite store."""
    yield from _serve(sqlite_store, Settings(), otlp_config)


@pytest.fixture
def serve() -> Iterator[Any]:
    """serve(store, settings) -> RunningApp, for tests that need their own store or token."""
    stack: list[Iterator[RunningApp]] = []

    def start(store: Store, settings: Settings) -> RunningApp:
        gen = _serve(store, settings, {"TESTING": True})
        stack.append(gen)
        return next(gen)

    yield start
    for gen in stack:
        next(gen, None)
