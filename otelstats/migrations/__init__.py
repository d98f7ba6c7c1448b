"""Alembic migrations. Revisions are written by hand and never import otelstats.models."""

HEAD = "0002"
"""The newest revision, known without alembic: `Store.migrate` reads the database's version
against it and imports alembic only when there is something to do (a test checks that it is
alembic's head)."""
