"""The Flask application: `create_app()` builds it around one Store; blueprints do the rest.

Blueprints read the store and settings from `app.extensions` (never from module globals), so a
test can build as many independent apps as it likes. This module also owns what every response
shares: security headers, Host checking, the bearer token beyond loopback, JSON errors under /api,
and the threaded WSGI server `serve` and `demo` run.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.serving import BaseWSGIServer, make_server

from .. import queries
from ..config import Settings
from ..errors import OtelstatsError, QueryError, StorageError
from ..queries import DayCache
from ..store import Store

log = logging.getLogger(__name__)

STORE_KEY = "otelstats.store"
SETTINGS_KEY = "otelstats.settings"
DAY_CACHE_KEY = "otelstats.day_cache"
TOKEN_COOKIE = "otelstats_token"  # noqa: S105 (a cookie name, not a secret)

SECURITY_HEADERS: Mapping[str, str] = {
    # Everything the page needs is served from here; no inline script, no CDN, no framing.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'; img-src 'self' data:"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# Reachable without a token: the health check, and what holds no statistics but lets a browser ask
# for the token: the page shell, its assets, and the endpoint its token form posts to.
TOKENLESS_ENDPOINTS = frozenset(
    {
        "health.healthz",
        "dashboard.index",
        "dashboard.static",
        "dashboard.plotly_js",
        "dashboard.session",
    }
)


def get_store() -> Store:
    """The Store of the app handling the current request."""
    return current_app.extensions[STORE_KEY]  # type: ignore[no-any-return]


def get_day_cache() -> DayCache:
    """The app's cache of local days (All Time stays fast on a long history; refreshes with
    nothing new read no rollups)."""
    return current_app.extensions[DAY_CACHE_KEY]  # type: ignore[no-any-return]


def warm_day_cache(app: Flask, tz: str) -> None:
    """Fill the app's day cache for `tz` (the first All Time view is then fast).

    Meant for a background thread at start-up; a failure only costs the first view its speed.
    """
    try:
        queries.stats(
            app.extensions[STORE_KEY].engine, "all", tz, cache=app.extensions[DAY_CACHE_KEY]
        )
    except OtelstatsError as exc:
        log.warning("otelstats: could not pre-compute the statistics: %s", exc)


def get_settings() -> Settings:
    return current_app.extensions[SETTINGS_KEY]  # type: ignore[no-any-return]


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """`example.com:8321` → `example.com`; `[::1]:8321` → `::1`."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0].lower()
    return host_header.rsplit(":", 1)[0].lower() if host_header.count(":") == 1 else host_header


def wants_json() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def json_error(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


def _utf8_query() -> bool:
    try:
        request.query_string.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _query_token() -> str:
    # Werkzeug decodes the query string as UTF-8 on first access and raises on anything else.
    return request.args.get("token", "") if _utf8_query() else ""


def _check_request() -> Response | None:
    """Refuse non-UTF-8 queries and DNS-rebinding Host headers (loopback) or a missing token."""
    if not _utf8_query():
        return json_error(400, "the query string must be UTF-8")
    settings = get_settings()
    if is_loopback(settings.host):
        # A page on evil.example that rebinds its name to 127.0.0.1 sends Host: evil.example.
        if _host_name(request.host) not in LOOPBACK_NAMES:
            return json_error(400, "unexpected Host header; open the dashboard via 127.0.0.1")
        return None
    if settings.token is None or request.endpoint in TOKENLESS_ENDPOINTS:
        return None
    expected = settings.token.encode()
    header = request.headers.get("Authorization", "")
    offered = [
        header[7:] if header.lower().startswith("bearer ") else "",
        request.cookies.get(TOKEN_COOKIE, ""),
        _query_token(),
    ]
    if any(hmac.compare_digest(o.encode(), expected) for o in offered if o):
        return None
    return json_error(401, "a valid token is required (Authorization: Bearer TOKEN, or ?token=)")


def _finish_response(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    settings = get_settings()
    token = _query_token()
    if settings.token and token and hmac.compare_digest(token.encode(), settings.token.encode()):
        # A browser opened with ?token= keeps it in a cookie its own fetches send back.
        set_token_cookie(response, token)
    return response


def set_token_cookie(response: Response, token: str) -> None:
    """The cookie a browser sends the token back in: unreadable by scripts, never cross-site."""
    response.set_cookie(
        TOKEN_COOKIE, token, httponly=True, samesite="Strict", secure=request.is_secure
    )


def _http_error(exc: HTTPException) -> Response | HTTPException:
    if wants_json():
        return json_error(exc.code or 500, exc.description or exc.name)
    return exc


def _storage_error(exc: Exception) -> Response | tuple[str, int]:
    log.warning("database unreadable: %s", exc)
    message = f"the database cannot be read: {exc.__class__.__name__}"
    if isinstance(exc, StorageError):
        message = str(exc)
    if wants_json():
        return json_error(503, message)
    return message, 503


def _query_error(exc: QueryError) -> Response | tuple[str, int]:
    return json_error(400, str(exc)) if wants_json() else (str(exc), 400)


def _otelstats_error(exc: OtelstatsError) -> Response | tuple[str, int]:
    # Our own errors carry a message meant for the user; anything else stays a bare 500.
    log.error("request to %s failed: %s", request.path, exc)
    return json_error(500, str(exc)) if wants_json() else (str(exc), 500)


def _unexpected_error(exc: InternalServerError) -> Response | InternalServerError:
    # Logged for the operator; the client gets a message, never a traceback.
    log.error("unhandled error on %s", request.path, exc_info=exc.original_exception)
    if wants_json():
        return json_error(500, "internal error (see the server log)")
    return exc


def create_app(
    test_config: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    store: Store | None = None,
) -> Flask:
    """Build the app. `store` wins over `settings.db`; settings default to the environment."""
    app = Flask(__name__)
    app.config.from_mapping(JSON_SORT_KEYS=False, MAX_CONTENT_LENGTH=1024 * 1024)
    if test_config is not None:
        app.config.from_mapping(test_config)
    settings = settings or Settings.from_env()
    # The store is opened (and migrated) once per app, not per request.
    app.extensions[SETTINGS_KEY] = settings
    app.extensions[STORE_KEY] = store or Store.open(settings.db)
    app.extensions[DAY_CACHE_KEY] = DayCache()

    app.before_request(_check_request)
    app.after_request(_finish_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(OtelstatsError, _otelstats_error)
    app.register_error_handler(QueryError, _query_error)
    app.register_error_handler(StorageError, _storage_error)
    app.register_error_handler(SQLAlchemyError, _storage_error)
    app.register_error_handler(InternalServerError, _unexpected_error)

    from . import api, dashboard, metrics

    app.register_blueprint(api.bp)
    app.register_blueprint(api.health_bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(metrics.bp)
    from ..receivers import otlp

    app.register_blueprint(otlp.bp)
    return app


def make_wsgi_server(app: Flask, host: str, port: int) -> BaseWSGIServer:
    """A real threaded WSGI server for `app` (port 0 picks a free one: see `server.server_port`)."""
    return make_server(host, port, app, threaded=True)
