"""Fixtures for the web tests, in the style of Flask's tutorial: app, client, runner over a temp DB.

`app` is built by `create_app()` around the parametrised `store` fixture, so every API test runs
on SQLite and on the real PostgreSQL; `runner` is the otelstats CLI on the same database.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from otelstats.config import Settings
from otelstats.store import Store
from otelstats.web import create_app


@pytest.fixture
def app(store: Store) -> Flask:
    # Settings are explicit so that OTELSTATS_* variables of the machine running the tests
    # cannot change what is tested.
    return create_app({"TESTING": True}, settings=Settings(), store=store)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(store: Store) -> CliRunner:
    """The `otelstats` command line, pointed at the same database as `app`."""
    url = store.url.render_as_string(hide_password=False)
    return CliRunner(env={"OTELSTATS_DB": url, "TZ": "UTC"})
