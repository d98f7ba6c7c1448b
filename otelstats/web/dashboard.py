"""The statistics page at `/`, its static assets (plotly.js comes from the installed package) and
`POST /api/session`, where the page's token form trades the token for the token cookie.

The page is a shell: every number on it is fetched from `/api/stats` by static/dashboard.js, so
this module renders no figures itself. Nothing is loaded from outside the machine.
"""

from __future__ import annotations

import hmac
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, render_template, request

from . import get_settings, json_error, set_token_cookie
from .plotly_bundle import PlotlyBundle, plotly_js_path

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    # A path of its own, so the app-level /static route can never shadow these files.
    static_url_path="/assets",
)

#: How often the page asks /api/version whether new calls arrived (app config key, milliseconds).
POLL_MS_KEY = "OTELSTATS_DASHBOARD_POLL_MS"
DEFAULT_POLL_MS = 5000

#: A day: the assets' URLs carry the package version, so a new release is fetched anew.
ASSET_MAX_AGE = 86_400

#: The app's PlotlyBundle (app.extensions key), read on the first request for it.
PLOTLY_BUNDLE_KEY = "otelstats.plotly_bundle"


def _version() -> str:
    try:
        return version("otelstats")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "dev"


@bp.get("/")
def index() -> str:
    poll_ms = int(current_app.config.get(POLL_MS_KEY, DEFAULT_POLL_MS))
    return render_template("dashboard.html", asset_version=_version(), poll_ms=poll_ms)


@bp.get("/assets/vendor/plotly.min.js")
def plotly_js() -> Response:
    """The installed bundle, its factory put where Chromium compiles it off the main thread
    (see plotly_bundle): kept in memory, about 5 MB, once read."""
    bundle: PlotlyBundle | None = current_app.extensions.get(PLOTLY_BUNDLE_KEY)
    if bundle is None:  # two first requests at once both read it; the first one stored is kept
        bundle = current_app.extensions.setdefault(
            PLOTLY_BUNDLE_KEY, PlotlyBundle.load(plotly_js_path())
        )
    response = Response(bundle.body, mimetype="text/javascript")
    response.set_etag(bundle.etag)
    response.last_modified = bundle.last_modified
    response.cache_control.public = True
    response.cache_control.max_age = ASSET_MAX_AGE
    response.make_conditional(request, accept_ranges=True, complete_length=len(bundle.body))
    return response


def _same_origin() -> bool:
    """True only for a request the dashboard's own page made (what browsers say about it).

    Browsers send Origin on every POST; Sec-Fetch-Site, where sent, must agree. Only the host part
    of Origin is compared: behind a TLS-terminating proxy the app itself sees plain http.
    """
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site != "same-origin":
        return False
    origin = request.headers.get("Origin", "")
    return bool(origin) and urlsplit(origin).netloc.lower() == request.host.lower()


@bp.post("/api/session")
def session() -> Response:
    """Check a token typed into the page and, if right, set the cookie `?token=` would have set.

    Only same-origin JSON is accepted: a cross-site form cannot send application/json without a
    CORS preflight this app never grants, and Origin/Sec-Fetch-Site say who is asking. The token
    travels in the body, never in a URL.
    """
    expected = get_settings().token
    if expected is None:
        return json_error(404, "this server requires no token")
    if not _same_origin():
        return json_error(403, "the token can only be submitted from the dashboard itself")
    if request.mimetype != "application/json":
        return json_error(415, 'send {"token": "..."} as application/json')
    body = request.get_json(silent=True)
    offered = body.get("token") if isinstance(body, dict) else None
    if not isinstance(offered, str) or not offered:
        return json_error(400, 'send {"token": "..."} with a non-empty token')
    if not hmac.compare_digest(offered.encode(), expected.encode()):
        return json_error(401, "that token is not correct")
    response = Response(status=204)
    set_token_cookie(response, offered)
    return response
