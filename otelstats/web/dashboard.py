"""The statistics page (placeholder until the dashboard lands)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("dashboard", __name__)
