"""The JSON API: /api/stats, /api/export.json, /api/export.csv, /api/version, and /healthz.

Every number comes from `otelstats.queries`; this module validates parameters and formats.
Bad parameters are a 400 with a JSON message; an unreadable database a 503 (see web/__init__).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from .. import export, queries
from ..errors import QueryError
from . import get_day_cache, get_store, json_error

bp = Blueprint("api", __name__, url_prefix="/api")
health_bp = Blueprint("health", __name__)

MAX_PARAM_LENGTH = 64
"""Longest period/tz value read; the longest IANA name is about 32 characters."""
MAX_QUERY_STRING = 1024
BY_CHOICES = ("model",)


class BadRequest(Exception):
    """A query parameter is unusable; the message is shown to the client."""


def _param(name: str, default: str) -> str:
    value = request.args.get(name, default)
    if len(value) > MAX_PARAM_LENGTH:
        raise BadRequest(f"{name} is too long (at most {MAX_PARAM_LENGTH} characters)")
    if "\ufffd" in value or not value.isprintable():
        # Werkzeug replaces undecodable percent-escapes with U+FFFD: the client sent non-UTF-8.
        raise BadRequest(f"{name} must be printable UTF-8 text")
    return value or default


def _period_tz() -> tuple[str, str]:
    # (A query string that is not UTF-8 was already refused for every route in web/__init__.)
    if len(request.query_string) > MAX_QUERY_STRING:
        raise BadRequest("query string too long")
    return _param("period", "7d"), _param("tz", "UTC")


def _stats() -> dict[str, Any]:
    period, tz = _period_tz()
    return queries.stats(get_store().engine, period, tz, cache=get_day_cache())


@bp.errorhandler(BadRequest)
@bp.errorhandler(QueryError)
def _bad_request(exc: Exception) -> Response:
    return json_error(400, str(exc))


def _attachment(body: str, mimetype: str, name: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/stats")
def stats() -> Response:
    """Overview, daily and per-model statistics (DESIGN §3) for ?period= and ?tz=."""
    response = jsonify(_stats())
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/export.json")
def export_json() -> Response:
    data = _stats()
    return _attachment(export.to_json(data), "application/json", export.filename(data, "json"))


@bp.get("/export.csv")
def export_csv() -> Response:
    """One row per local day of the period; `by=model`: one row per day and model."""
    by = _param("by", "")
    if by not in ("", *BY_CHOICES):
        raise BadRequest(f"by must be one of: {', '.join(BY_CHOICES)}")
    if by == "model":
        period, tz = _period_tz()
        engine = get_store().engine
        data = queries.stats(engine, period, tz, cache=get_day_cache())
        rows = queries.daily_by_model(engine, period, tz, cache=get_day_cache())
        body = export.to_csv(rows, export.MODEL_DAILY_COLUMNS)
    else:
        data = _stats()
        body = export.to_csv(data["daily"])
    return _attachment(body, "text/csv", export.filename(data, "csv", by=by or None))


@bp.get("/version")
def version() -> Response:
    """A token that changes whenever the data changes: poll this, fetch /api/stats on change."""
    response = jsonify(version=queries.data_version(get_store().engine))
    response.headers["Cache-Control"] = "no-store"
    return response


@health_bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process serves requests (the database is checked by /api/version)."""
    return jsonify(status="ok")
