"""Every error otelstats raises on purpose. The tree::

    OtelstatsError
    ├── ConfigError        a setting or argument is invalid (bad --db URL, unknown period, timezone)
    ├── StorageError       the database cannot be opened, migrated or written
    └── QueryError         a statistics query was asked something it cannot answer

Errors carry a message meant for the user: what is wrong and what to do.
"""

from __future__ import annotations


class OtelstatsError(Exception):
    """Base class of every error otelstats raises on purpose."""


class ConfigError(OtelstatsError, ValueError):
    """A setting or argument is invalid."""


class StorageError(OtelstatsError):
    """The database cannot be opened, migrated or written."""


class QueryError(OtelstatsError, ValueError):
    """A statistics query was asked something it cannot answer (period, timezone)."""
