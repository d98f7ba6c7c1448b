"""The Flask application: `create_app()` builds it around one Store; blueprints do the rest.

Blueprints read the store and settings from `app.extensions` (never from module globals), so a
test can build as many independent apps as it likes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app

from ..config import Settings
from ..store import Store

STORE_KEY = "otelstats.store"
SETTINGS_KEY = "otelstats.settings"


def get_store() -> Store:
    """The Store of the app handling the current request."""
    return current_app.extensions[STORE_KEY]  # type: ignore[no-any-return]


def get_settings() -> Settings:
    return current_app.extensions[SETTINGS_KEY]  # type: ignore[no-any-return]


def create_app(
    test_config: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    store: Store | None = None,
) -> Flask:
    """Build the app. `store` wins over `settings.db`; settings default to the environment."""
    app = Flask(__name__)
    app.config.from_mapping(JSON_SORT_KEYS=False)
    if test_config is not None:
        app.config.from_mapping(test_config)
    settings = settings or Settings.from_env()
    # The store is opened (and migrated) once per app, not per request.
    app.extensions[SETTINGS_KEY] = settings
    app.extensions[STORE_KEY] = store or Store.open(settings.db)

    from . import api, dashboard, metrics

    app.register_blueprint(api.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(metrics.bp)
    return app
