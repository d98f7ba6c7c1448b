"""Browser fixtures: the real app on a real threaded server, driven by Debian's Chromium.

One Chromium and one context per session (Playwright pointed at /usr/bin/chromium, never a
downloaded build; the shared context keeps plotly.js compiled between pages), a fresh page per
test. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from otelstats.config import Settings
from otelstats.store import Store
from otelstats.web import create_app
from tests.browser.support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, TZ, Site, Watch, seed_records
from tests.servers import serving

playwright_sync = pytest.importorskip("playwright.sync_api")


def _serve(store: Store, poll_ms: int = 5000) -> Iterator[Site]:
    app = create_app(
        {"TESTING": True, "OTELSTATS_DASHBOARD_POLL_MS": poll_ms},
        settings=Settings.from_env({}),
        store=store,
    )
    with serving(app) as url:
        yield Site(url, store)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    # Package scope, not session: Playwright's sync API runs an event loop on the main thread
    # while it is open, and every later test that calls asyncio.run() would fail.
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("CI"):  # CI installs it: a missing browser there is a failure
            pytest.fail(message)
        pytest.skip(message)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _seeded(tmp_path_factory: pytest.TempPathFactory, name: str, days: int) -> Iterator[Site]:
    store = Store.open(tmp_path_factory.mktemp(name) / "stats.db")
    store.write(seed_records(days))
    yield from _serve(store)
    store.dispose()


@pytest.fixture(scope="package")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """40 days of seeded history, shared read-only by the tests that do not write."""
    yield from _seeded(tmp_path_factory, "site", 40)


@pytest.fixture(scope="package")
def long_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """150 days of seeded history: more days than a chart line shows markers for."""
    yield from _seeded(tmp_path_factory, "long_site", 150)


@pytest.fixture
def fresh_site(tmp_path: Path) -> Iterator[Site]:
    """An empty database and a fast poll: for the empty state and live refresh."""
    store = Store.open(tmp_path / "stats.db")
    yield from _serve(store, poll_ms=200)
    store.dispose()


@pytest.fixture
def broken_site(tmp_path: Path) -> Iterator[Site]:
    """A database whose tables are gone: every query fails as an unreadable database does."""
    store = Store.open(tmp_path / "stats.db")
    meta = sa.MetaData()
    meta.reflect(store.engine)
    meta.drop_all(store.engine)
    yield from _serve(store)
    store.dispose()


CSP_RECORDER = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + (e.sample || '')));
"""


@pytest.fixture(scope="package")
def context(browser: Any) -> Iterator[Any]:
    """One context for the session: its cache keeps plotly.js compiled between tests' pages."""
    ctx = browser.new_context(
        timezone_id=TZ,
        locale="en-US",
        accept_downloads=True,
        viewport={"width": 1280, "height": 900},
    )
    ctx.grant_permissions(["clipboard-read", "clipboard-write"])
    ctx.add_init_script(CSP_RECORDER)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: Any) -> Iterator[Any]:
    page = context.new_page()
    watch = Watch()
    page.on("dialog", lambda d: (watch.dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: watch.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: watch.errors.append(str(e)))
    page.on("request", lambda r: watch.requests.append(r.url))
    page.watch = watch
    yield page
    page.close()
