"""GET /metrics: the Prometheus exposition of the store, OpenMetrics when the scraper asks for it.

One private registry per app (built when the blueprint is registered), evaluated at each scrape.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState
from flask.sansio.app import App
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from sqlalchemy.exc import SQLAlchemyError

from ..collector import ExporterCounts, build_registry
from ..errors import OtelstatsError
from . import SETTINGS_KEY, STORE_KEY

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

REGISTRY_KEY = "otelstats.metrics_registry"
EXPORTER_STATS_KEY = "otelstats.exporter_stats"
"""Optional: a callable returning the serving process's exporter stats (`lambda: exp.stats`)."""


def _exporter_stats_of(app: App) -> ExporterCounts | None:
    provider = app.extensions.get(EXPORTER_STATS_KEY)
    return provider() if callable(provider) else None


@bp.record_once
def _build_registry(state: BlueprintSetupState) -> None:
    app = state.app
    settings = app.extensions[SETTINGS_KEY]
    app.extensions[REGISTRY_KEY] = build_registry(
        app.extensions[STORE_KEY],
        model_limit=settings.metrics_model_limit,
        # Looked up at each scrape: whatever hosts an exporter may attach it after create_app().
        exporter_stats=lambda: _exporter_stats_of(app),
    )


@bp.get("/metrics")
def metrics() -> Response:
    registry: CollectorRegistry = current_app.extensions[REGISTRY_KEY]
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    try:
        body = encoder(registry)
    except (SQLAlchemyError, OtelstatsError) as exc:
        # A failed scrape (not an empty one) so that `up` drops and the down alert fires.
        log.warning("metrics scrape failed: %s: %s", exc.__class__.__name__, exc)
        return Response(
            f"cannot read the database: {exc.__class__.__name__}\n",
            status=503,
            mimetype="text/plain",
        )
    response = Response(body, status=200, content_type=content_type)
    response.headers["Vary"] = "Accept"
    response.headers["Cache-Control"] = "no-store"
    return response
