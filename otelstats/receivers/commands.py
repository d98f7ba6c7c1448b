"""Click commands for collecting: `otelstats proxy` and `otelstats import llm-logs`.

Kept here (not in cli.py) so the CLI stays thin; cli.py only `add_command`s them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from ..config import Settings

_HOST_HELP = (
    "Address the proxy binds to. Beyond loopback anyone who reaches it can use your upstream."
)


@click.command("proxy")
@click.option(
    "--upstream",
    required=True,
    metavar="URL",
    help="Base URL of the OpenAI-compatible server to forward to, e.g. http://127.0.0.1:11434/v1.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help=_HOST_HELP)
@click.option("--port", type=click.IntRange(0, 65535), default=8322, show_default=True)
@click.option("--db", metavar="URL|PATH", help="Database (default: OTELSTATS_DB, else stats.db).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds without a byte from the upstream before the client gets a 504.",
)
@click.option(
    "--provider",
    default=None,
    help="gen_ai.provider.name recorded for the calls [default: azure.ai.openai for an Azure "
    "OpenAI upstream, else openai].",
)
@click.option(
    "--max-request-mb",
    type=click.FloatRange(min=0, min_open=True),
    help="Largest request body forwarded, in MiB (default: 64, above OpenAI's own 50 MB); "
    "a larger one gets a 413.",
)
def proxy(
    upstream: str,
    host: str,
    port: int,
    db: str | None,
    timeout: float,
    provider: str | None,
    max_request_mb: float | None,
) -> None:
    """Record every call made through an OpenAI-compatible proxy.

    Point any client at the printed base URL instead of the real server: requests and streams
    are forwarded unchanged, headers (API keys included) are never stored.
    """
    from ..bootstrap import conversation_salt
    from ..exporter import StatsSpanExporter
    from ..store import Store
    from .proxy import ProxyOptions, ProxyServer, create_proxy_app, recording_provider

    settings = Settings.from_env(db=db)
    store = Store.open(settings.db)
    provider_ = recording_provider(StatsSpanExporter(store), settings.export_interval_ms)
    options = ProxyOptions(timeout=timeout, stream_usage=settings.stream_usage, provider=provider)
    if max_request_mb is not None:
        options = dataclasses.replace(options, max_request_bytes=int(max_request_mb * 2**20))
    salt = conversation_salt()  # the user's, as instrument() uses; else a per-process one
    if salt is not None:
        options = dataclasses.replace(options, conversation_salt=salt)
    server = ProxyServer(create_proxy_app(upstream, provider_, options), host, port)
    click.echo(f"otelstats proxy on {server.base_url} -> {upstream}")
    click.echo(f"recording to {store.describe()}; press Ctrl+C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.end_open_calls()
        provider_.shutdown()  # flushes the calls still queued for the database


@click.group("import")
def import_() -> None:
    """Import call history recorded by other tools."""


@import_.command("llm-logs")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--db", metavar="URL|PATH", help="Database (default: OTELSTATS_DB, else stats.db).")
def llm_logs(path: Path | None, db: str | None) -> None:
    """Import the history of the `llm` CLI from its logs.db (default: llm's own location).

    Safe to run again: calls already imported are not counted twice.
    """
    from ..importers.llm_logs import count_rows, default_logs_path, import_llm_logs
    from ..store import Store

    source = path or default_logs_path()
    total = count_rows(source)
    store = Store.open(Settings.from_env(db=db).db)
    try:
        with click.progressbar(length=total, label=f"Importing {source}") as bar:
            result = import_llm_logs(source, store, on_progress=bar.update)
    finally:
        store.dispose()
    click.echo(
        f"{result.imported} call(s) imported, {result.rows - result.imported - result.skipped} "
        f"already present, {result.skipped} without a time skipped -> {store.describe()}"
    )
