"""Prometheus /metrics (placeholder until the collector lands)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("metrics", __name__)
