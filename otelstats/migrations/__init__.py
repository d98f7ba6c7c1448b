"""Alembic migrations. Revisions are written by hand and never import otelstats.models."""
