"""Settings: one table of every OTELSTATS_* variable (name, default, help) and the frozen Settings.

The table drives validation, the CLI's help and the README; `Settings.from_env()` reads it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from .errors import ConfigError

if TYPE_CHECKING:
    import sqlalchemy as sa

APP_NAME = "otelstats"


def default_db_path() -> Path:
    """`stats.db` in the platform's user data directory (not created here)."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "stats.db"


def sqlite_file(url: sa.URL) -> Path | None:
    """The file of a SQLite URL; None for a server database or an in-memory one. (Here, not in
    `store`: the exporter needs it at `instrument()`, before SQLAlchemy is loaded.)"""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database)


def sdk_disabled() -> bool:
    """`OTEL_SDK_DISABLED`, read as the OpenTelemetry SDK reads it: when true, its providers
    make no spans, so nothing reaches otelstats' exporter."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


SDK_DISABLED_WARNING = (
    "otelstats: OTEL_SDK_DISABLED=true turns the OpenTelemetry SDK off: %s records no "
    "calls; unset it to record them"
)


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def _parse_port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535, got {port}")
    return port


def _parse_positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {number}")
    return number


def _parse_str(value: str) -> str:
    return value


_AGE = re.compile(r"^\s*(\d{1,6})\s*([dhw])\s*$")
_UNIT_SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> int:
    """'90d', '12h', '4w' → seconds; anything else is a ConfigError (a ValueError)."""
    match = _AGE.match(text)
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"invalid age {text!r}: use a number with d, h or w, such as 90d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass(frozen=True)
class Setting:
    """One OTELSTATS_* environment variable."""

    field: str
    env: str
    default: Any
    parse: Callable[[str], Any]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "db",
        "OTELSTATS_DB",
        None,
        _parse_str,
        "Database: a file path or a SQLAlchemy URL (sqlite:///…, postgresql+psycopg://…). "
        "Default: stats.db in the user data directory.",
    ),
    Setting("host", "OTELSTATS_HOST", "127.0.0.1", _parse_str, "Address `serve` binds to."),
    Setting("port", "OTELSTATS_PORT", 8321, _parse_port, "Port `serve` listens on."),
    Setting(
        "token",
        "OTELSTATS_TOKEN",
        None,
        _parse_str,
        "Bearer token required by `serve` when it binds beyond loopback.",
    ),
    Setting(
        "stream_usage",
        "OTELSTATS_STREAM_USAGE",
        True,
        _parse_bool,
        "Ask streaming chat calls for usage (stream_options.include_usage) when the caller did "
        "not; the extra usage-only chunk is hidden from the caller.",
    ),
    Setting(
        "capture_content",
        "OTELSTATS_CAPTURE_CONTENT",
        False,
        _parse_bool,
        "Record message content on spans (off: content is never stored). Also honours "
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT.",
    ),
    Setting(
        "export_interval_ms",
        "OTELSTATS_EXPORT_INTERVAL_MS",
        1000,
        _parse_positive_int,
        "How often finished calls are written to the database, in milliseconds "
        "(a SIGKILL loses at most the calls of the last two intervals).",
    ),
    Setting(
        "metrics_model_limit",
        "OTELSTATS_METRICS_MODEL_LIMIT",
        50,
        _parse_positive_int,
        "On /metrics, the top N models by requests keep their own label; the rest become `other`.",
    ),
    Setting(
        "retention_s",
        "OTELSTATS_RETENTION",
        None,
        parse_age,
        "`serve`: remove raw calls older than this (90d, 12h, 4w) every hour; totals, rollups, "
        "All Time and Prometheus counters are kept. Unset: keep everything.",
    ),
    Setting(
        "max_db_mb",
        "OTELSTATS_MAX_DB_MB",
        None,
        _parse_positive_int,
        "`serve`: when the SQLite file grows past this many MiB, remove the oldest raw calls "
        "(hourly) until it fits; totals and rollups are kept. Unset: no cap.",
    ),
    Setting(
        "metrics_port",
        "OTELSTATS_METRICS_PORT",
        None,
        _parse_port,
        "`instrument()` / `otelstats run`: serve the process's live gen_ai_* metrics for "
        "Prometheus on 127.0.0.1 at this port (unset: no metrics server).",
    ),
)


@dataclass(frozen=True)
class Settings:
    """Resolved settings; build with `Settings.from_env()` or directly in tests."""

    db: str | None = None
    host: str = "127.0.0.1"
    port: int = 8321
    token: str | None = None
    stream_usage: bool = True
    capture_content: bool = False
    export_interval_ms: int = 1000
    metrics_model_limit: int = 50
    metrics_port: int | None = None
    retention_s: int | None = None
    max_db_mb: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every OTELSTATS_* variable; explicit overrides (not None) win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = env.get(setting.env)
            if raw is None:
                continue
            try:
                values[setting.field] = setting.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{setting.env}={raw!r} is invalid: {exc}") from None
        if "capture_content" not in values:
            official = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
            if official is not None:
                values["capture_content"] = official.strip().lower() not in {"", "false", "0"}
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)
