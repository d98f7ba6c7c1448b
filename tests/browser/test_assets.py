"""The page shell and its assets, through the Flask test client (no browser needed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from otelstats.config import Settings
from otelstats.store import Store
from otelstats.web import create_app
from otelstats.web.plotly_bundle import plotly_js_path

STATIC = Path(__file__).resolve().parents[2] / "otelstats" / "web" / "static"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    store = Store.open(tmp_path / "stats.db")
    app = create_app({"TESTING": True}, settings=Settings.from_env({}), store=store)
    yield app.test_client()
    store.dispose()


def test_page_has_no_inline_script_or_style_and_only_local_assets(client: FlaskClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None
    assert " style=" not in html
    assert "<style" not in html
    urls = re.findall(r'(?:src|href)="([^"#?]+)', html)
    assets = [u for u in urls if u.startswith("/assets/")]
    assert len(assets) >= 8
    assert not [u for u in urls if "//" in u]  # nothing from another host
    for url in assets:
        with client.get(url) as response:  # files are streamed: close them
            assert response.status_code == 200, url


def test_plotly_comes_from_the_installed_package(client: FlaskClient) -> None:
    """The installed text with its factory in parentheses (see otelstats.web.plotly_bundle):
    two characters added, nothing else changed."""
    installed = plotly_js_path().read_text(encoding="utf-8")
    with client.get("/assets/vendor/plotly.min.js") as response:
        assert response.status_code == 200
        assert response.mimetype == "text/javascript"
        assert response.cache_control.max_age == 86_400
        served = response.get_data(as_text=True)
    assert len(served) == len(installed) + 2
    assert 'self : this, (() => {\n"use strict";' in served[:1000]
    assert served.rstrip().endswith("return Plotly;\n})));")
    opened = served.index("(() => {")
    closed = len(served.rstrip()) - len("));")
    assert served[:opened] + served[opened + 1 : closed - 1] + served[closed:] == installed


def test_plotly_is_revalidated_and_served_in_ranges(client: FlaskClient) -> None:
    first = client.get("/assets/vendor/plotly.min.js")
    etag = first.headers["ETag"]
    body = first.get_data()
    again = client.get("/assets/vendor/plotly.min.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.get_data() == b""
    modified = first.headers["Last-Modified"]
    since = client.get("/assets/vendor/plotly.min.js", headers={"If-Modified-Since": modified})
    assert since.status_code == 304
    part = client.get("/assets/vendor/plotly.min.js", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.get_data() == body[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(body)}"


def test_head_starts_the_numbers_before_plotly_and_never_queues_them(client: FlaskClient) -> None:
    """boot.js (the /api/stats request) before any stylesheet; plotly.js only preloaded (the page
    runs it after the numbers); the deferred scripts at high priority (see dashboard.html)."""
    head = client.get("/").get_data(as_text=True).split("</head>")[0]
    tags = re.findall(r"<(?:script|link)\b[^>]*>", head)
    boot = next(i for i, t in enumerate(tags) if "boot.js" in t)
    styles = [i for i, t in enumerate(tags) if 'rel="stylesheet"' in t]
    assert "defer" not in tags[boot]
    assert "async" not in tags[boot]
    assert boot < min(styles)
    plotly = [t for t in tags if "plotly.min.js" in t]
    assert len(plotly) == 1
    assert plotly[0].startswith('<link rel="preload" as="script" id="plotly-js"')
    deferred = [t for t in tags if t.startswith("<script") and "defer" in t]
    assert len(deferred) == 3
    assert all('fetchpriority="high"' in t for t in deferred)


def test_plotly_css_matches_the_installed_plotly_version() -> None:
    head = plotly_js_path().read_text(encoding="utf-8")[:200]
    installed = re.search(r"plotly\.js (v[\d.]+)", head)
    assert installed is not None
    assert f"plotly.js {installed.group(1)};" in (STATIC / "plotly.css").read_text(encoding="utf-8")


def test_maplibre_placeholder_id_is_the_one_plotly_looks_for(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    placeholder = re.search(r'<template id="([0-9a-f]{64})">', html)
    assert placeholder is not None
    assert f'getElementById("{placeholder.group(1)}")' in plotly_js_path().read_text(
        encoding="utf-8"
    )
