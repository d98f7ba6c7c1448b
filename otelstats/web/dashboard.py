"""The statistics page at `/` and its static assets (plotly.js comes from the installed package).

The page is a shell: every number on it is fetched from `/api/stats` by static/dashboard.js, so
this module renders no figures itself. Nothing is loaded from outside the machine.
"""

from __future__ import annotations

from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from flask import Blueprint, Response, current_app, render_template, send_file

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


def plotly_js_path() -> Path:
    """plotly.min.js as shipped inside the `plotly` Python package (no CDN, no download)."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


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
    return send_file(
        plotly_js_path(), mimetype="text/javascript", max_age=ASSET_MAX_AGE, conditional=True
    )
