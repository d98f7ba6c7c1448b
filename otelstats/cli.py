"""The `otelstats` command line (click): thin wrappers over the store, queries, exports and web app.

Option help comes from config.SETTINGS, so `--help`, the environment and the README say the same.
Errors otelstats raises on purpose become one line on stderr (exit 2 for bad input, 1 otherwise).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from . import __version__, export
from .config import SETTINGS, Settings, sqlite_file
from .errors import ConfigError, OtelstatsError, QueryError

if TYPE_CHECKING:
    from .store import Store

F = TypeVar("F", bound=Callable[..., Any])
PERIOD_CHOICES = ("today", "7d", "30d", "all")


def setting_help(env: str) -> str:
    """The help of one OTELSTATS_* setting, with its variable and default."""
    setting = next(s for s in SETTINGS if s.env == env)
    default = "" if setting.default is None else f"; default {setting.default}"
    return f"{setting.help} [env {setting.env}{default}]"


def local_timezone() -> str:
    """The IANA name of this machine's timezone ($TZ, /etc/localtime, /etc/timezone), else UTC."""
    candidates: list[str] = []
    if os.environ.get("TZ"):
        candidates.append(os.environ["TZ"].lstrip(":"))
    with contextlib.suppress(OSError):
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    for name in candidates:
        try:
            zoneinfo.ZoneInfo(name)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            continue
        return name
    return "UTC"


class _Group(click.Group):
    """Turns otelstats' own errors into one line on stderr instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, QueryError) as exc:
            _fail(str(exc), 2)
        except (OtelstatsError, SQLAlchemyError) as exc:
            _fail(str(exc) if isinstance(exc, OtelstatsError) else _db_message(exc), 1)


def _db_message(exc: SQLAlchemyError) -> str:
    return f"database error: {exc.__class__.__name__}: {getattr(exc, 'orig', None) or exc}"


def _fail(message: str, code: int) -> None:
    click.echo(f"otelstats: error: {message.splitlines()[0] if message else 'failed'}", err=True)
    sys.exit(code)


def db_option(func: F) -> F:
    return click.option("--db", metavar="URL|PATH", help=setting_help("OTELSTATS_DB"))(func)


def period_options(func: F) -> F:
    func = click.option(
        "--tz",
        metavar="AREA/CITY",
        default=None,
        help="IANA timezone for local days [default: this machine's timezone].",
    )(func)
    return click.option(
        "--period",
        type=click.Choice(PERIOD_CHOICES),
        default="7d",
        show_default=True,
        help="Time period: today, the last 7 or 30 local days, or everything.",
    )(func)


def _settings(**overrides: Any) -> Settings:
    return Settings.from_env(**overrides)


@contextlib.contextmanager
def _open_store(db: str | None, *, migrate: bool = True, existing: bool = False) -> Iterator[Store]:
    """The store for one command; its connections are closed when the command ends.
    `existing`: a command that reads what was recorded refuses a SQLite file that is not there
    (a mistyped --db would otherwise create an empty database and report zeros)."""
    from .store import Store, resolve_url

    chosen = _settings(db=db).db
    path = sqlite_file(resolve_url(chosen)) if existing else None
    if path is not None and not path.exists():
        raise ConfigError(
            f"no database at {path}: nothing has been recorded there. Record calls with "
            "`otelstats run -- python app.py` or otelstats.instrument(), or choose another "
            "database with --db or OTELSTATS_DB."
        )
    store = Store.open(chosen, migrate=migrate)
    try:
        yield store
    finally:
        store.dispose()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="otelstats")
def cli() -> None:
    """Local statistics for the LLM calls your code makes."""


@cli.command()
@db_option
@click.option("--host", default=None, help=setting_help("OTELSTATS_HOST"))
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help=setting_help("OTELSTATS_PORT")
)
def serve(db: str | None, host: str | None, port: int | None) -> None:
    """Serve the dashboard, /api/stats, the exports and /metrics."""
    from .web import STORE_KEY, create_app, is_loopback, make_wsgi_server, warm_day_cache

    settings = _settings(db=db, host=host, port=port)
    check_bind(settings)
    app = create_app(settings=settings)
    server = make_wsgi_server(app, settings.host, settings.port)
    # Reading two years of rollups takes a while once; do it before the first visitor does.
    threading.Thread(
        target=warm_day_cache, args=(app, local_timezone()), name="otelstats-warm", daemon=True
    ).start()
    stop_retention = threading.Event()
    if settings.retention_s is not None or settings.max_db_mb is not None:
        from .retention import run_periodically

        store = app.extensions[STORE_KEY]
        threading.Thread(
            target=run_periodically,
            args=(store, settings, stop_retention),
            name="otelstats-retention",
            daemon=True,
        ).start()
    click.echo(
        f"otelstats: serving {_describe(app)} at http://{_url_host(settings.host)}:"
        f"{server.server_port}/ (Ctrl-C to stop)"
    )
    if not is_loopback(settings.host):
        click.echo("otelstats: bound beyond loopback; requests need the OTELSTATS_TOKEN")
    try:
        server.serve_forever()  # werkzeug's server returns on Ctrl-C
    except KeyboardInterrupt:
        pass
    finally:
        stop_retention.set()
        server.server_close()
        click.echo("otelstats: stopped")


def check_bind(settings: Settings) -> None:
    """Binding beyond loopback exposes usage data: only with a token."""
    from .web import is_loopback

    if not is_loopback(settings.host) and not settings.token:
        raise ConfigError(
            f"refusing to bind {settings.host!r} without a token: set OTELSTATS_TOKEN, "
            "or bind 127.0.0.1"
        )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _describe(app: Any) -> str:
    from .web import STORE_KEY

    return str(app.extensions[STORE_KEY].describe())


@cli.command()
@db_option
@click.option("--host", default=None, help=setting_help("OTELSTATS_HOST"))
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help=setting_help("OTELSTATS_PORT")
)
@click.option(
    "--traffic/--no-traffic",
    default=True,
    show_default=True,
    help="Send live instrumented SDK calls through the fake server.",
)
def demo(db: str | None, host: str | None, port: int | None, traffic: bool) -> None:
    """Fake OpenAI-compatible server, real instrumented traffic, weeks of history, dashboard."""
    from .demo import run_demo

    settings = _settings(db=db, host=host, port=port)
    check_bind(settings)
    run_demo(settings, traffic=traffic, echo=click.echo)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@db_option
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help=setting_help("OTELSTATS_METRICS_PORT"),
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(db: str | None, metrics_port: int | None, command: Sequence[str]) -> None:
    """Run a program with its openai calls instrumented: otelstats run -- python app.py"""
    from .runner import run_program

    settings = _settings(db=db)
    sys.exit(run_program(list(command), db=settings.db, metrics_port=metrics_port))


@cli.command()
@db_option
@period_options
@click.option("--json", "as_json", is_flag=True, help="Print the JSON of /api/stats.")
def stats(db: str | None, period: str, tz: str | None, as_json: bool) -> None:
    """Print the statistics of a period (a table, or --json)."""
    from . import queries

    with _open_store(db, existing=True) as store:
        data = queries.stats(store.engine, period, tz or local_timezone())
    click.echo(export.to_json(data) if as_json else format_table(data), nl=not as_json)


@cli.command("export")
@db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), required=True)
@period_options
@click.option(
    "--by", type=click.Choice(["model"]), default=None, help="CSV only: one row per day and model."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write to this file instead of stdout.",
)
def export_command(
    db: str | None, fmt: str, period: str, tz: str | None, by: str | None, output: str | None
) -> None:
    """Export daily statistics as CSV, or everything as JSON."""
    from . import queries

    if by and fmt != "csv":
        raise ConfigError("--by applies to --format csv only")
    zone = tz or local_timezone()
    with _open_store(db, existing=True) as store:
        if fmt == "json":
            body = export.to_json(queries.stats(store.engine, period, zone))
        elif by == "model":
            rows = queries.daily_by_model(store.engine, period, zone)
            body = export.to_csv(rows, export.MODEL_DAILY_COLUMNS)
        else:
            body = export.to_csv(queries.stats(store.engine, period, zone)["daily"])
    if output is None:
        click.echo(body, nl=False)
        return
    try:
        # newline="" keeps the CSV's CRLF line ends as they are on every platform.
        with open(output, "w", encoding="utf-8", newline="") as handle:
            handle.write(body)
    except OSError as exc:
        raise ConfigError(f"cannot write {output!r}: {exc.strerror}") from None
    click.echo(f"otelstats: wrote {output}", err=True)


@cli.group()
def db() -> None:
    """Database maintenance: upgrade, info, prune."""


@db.command()
@db_option
def upgrade(db: str | None) -> None:
    """Apply pending schema migrations."""
    from .store import schema_revision

    with _open_store(db, migrate=False) as store:
        before = schema_revision(store.engine)
        store.migrate()
        after = schema_revision(store.engine)
    click.echo(f"{store.describe()}: schema {before or 'empty'} → {after}")


@db.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(db: str | None, as_json: bool) -> None:
    """Where the data lives, row counts, size and schema revision."""
    from .dbinfo import describe

    with _open_store(db, migrate=False, existing=True) as store:
        facts = describe(store)
    if as_json:
        click.echo(export.to_json(facts), nl=False)
        return
    for key, value in facts.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for name, count in value.items():
                click.echo(f"  {name:<22} {count}")
        else:
            click.echo(f"{key + ':':<24}{value}")


@db.command()
@db_option
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="AGE",
    help="Remove raw calls that started longer ago than this: 90d, 12h, 4w.",
)
def prune(db: str | None, older_than: str) -> None:
    """Remove old raw calls; totals, rollups and Prometheus counters are kept."""
    from .config import parse_age
    from .retention import prune as prune_calls

    age = parse_age(older_than)
    with _open_store(db, existing=True) as store:
        result = prune_calls(store, age)
    reclaimed = f", {result.reclaimed_bytes:,} bytes reclaimed" if result.reclaimed_bytes else ""
    click.echo(f"{store.describe()}: removed {result.deleted_calls:,} raw calls{reclaimed}")


def _add_collectors(group: click.Group) -> None:
    """`proxy` and `import` live with the receivers; registered here, imported only then."""
    from .receivers.commands import import_, proxy

    group.add_command(proxy)
    group.add_command(import_)


_add_collectors(cli)


def _number(value: Any, suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}{suffix}"
    return f"{value:,}{suffix}"


def format_table(data: dict[str, Any]) -> str:
    """The human view of a stats document: overview lines, then one line per model."""
    o = data["overview"]
    lines = [
        f"Period {data['period']} ({data['timezone']}), from {data['start'] or 'the start'} "
        f"to {data['end']}",
        "",
        f"  API calls          {_number(o['requests'])}",
        f"  Total tokens       {_number(o['total_tokens'])}",
        f"  Prompt tokens      {_number(o['prompt_tokens'])}",
        f"  Completion tokens  {_number(o['completion_tokens'])}",
        f"  Avg tokens/sec     {_number(o['avg_tokens_per_second'])}",
        f"  Conversations      {_number(o['conversations'])}",
        f"  Avg latency        {_number(o['avg_latency_ms'], ' ms')}",
        f"  Success rate       {_number(o['success_rate'], ' %')}",
        f"  Errors             {_number(o['errors'])}",
    ]
    models = data.get("models") or []
    if models:
        width = min(40, max(5, *(len(m["model"]) for m in models)))
        lines += [
            "",
            f"  {'Model':<{width}}  {'Requests':>10}  {'Prompt':>12}  "
            f"{'Completion':>12}  {'Tok/s':>8}  {'Latency ms':>10}",
        ]
        for m in models:
            name = "".join(ch if ch.isprintable() else "?" for ch in m["model"][:40])
            lines.append(
                f"  {name:<{width}}  {_number(m['requests']):>10}  "
                f"{_number(m['prompt_tokens']):>12}  {_number(m['completion_tokens']):>12}  "
                f"{_number(m['avg_tokens_per_second']):>8}  {_number(m['avg_latency_ms']):>10}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="otelstats")
