"""`otelstats.instrument()`: the one-line setup — providers, the exporter, metrics, the openai SDK.

Provider policy: an app that already set an SDK TracerProvider keeps it and gets our
StatsSpanProcessor added to it; otherwise we trace through a private provider of our own and never
take the global slot, which can be set only once: an app that sets up its own tracing after
`instrument()` (always the case under `otelstats run`) must still get it, not a refusal that leaves
its exporters empty. A non-SDK global provider (a vendor's, or an explicit no-op) is never
replaced. Metrics: a given meter_provider, else with a Prometheus port a private MeterProvider
read by it, else the global one (never set).
The returned Handle is per process: instrument() is idempotent, and flushes at exit and on SIGTERM.
Sampling: the app's sampler decides what the app's own exporters get; the statistics get every
call (`every_call`).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import TracerProvider

from .config import Settings, default_db_path
from .errors import ConfigError
from .every_call import StatsSpanProcessor
from .exporter import StatsSpanExporter

if TYPE_CHECKING:
    from ._deferred_spans import DeferredSpans
    from .store import Store

log = logging.getLogger(__name__)

SIGTERM_FLUSH_TIMEOUT_S = 10.0
"""How long a SIGTERM waits for the last calls to be written before the process goes on."""


@dataclass
class _Process:
    """The one piece of process state instrument() needs to be idempotent."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    handle: Handle | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    """What the first instrument() was given (a later call may repeat it: a Streamlit app runs
    its script again on every interaction)."""


_PROCESS = _Process()


@dataclass(eq=False)
class Handle:
    """What instrument() set up; `shutdown()` flushes and undoes it."""

    settings: Settings
    exporter: StatsSpanExporter
    tracer_provider: TracerProvider
    meter_provider: metrics.MeterProvider
    metrics_port: int | None
    """The port actually serving live metrics (useful when 0 asked for a free one)."""
    _processor: StatsSpanProcessor
    _owns_tracer_provider: bool
    _owned_meter_provider: Any = None
    _instrumentor: Any = None
    """The OpenAIInstrumentor we instrumented with (None: someone else did, or no openai)."""
    _metrics_server: Any = None
    _previous_sigterm: Any = None
    _sigterm_installed: bool = False
    _closed: bool = False
    _sigterm_deferred: bool = False
    """A SIGTERM came while `shutdown` was flushing: delivered once the flush is done."""

    def flush(self, timeout_millis: int = 30000) -> bool:
        """Write every finished call now; True when nothing is left pending."""
        self._processor.force_flush(timeout_millis)
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush, stop exporting, uninstrument and stop the metrics server (idempotent)."""
        with _PROCESS.lock:
            if self._closed:
                return
            self._closed = True
            if _PROCESS.handle is self:
                _PROCESS.handle = None
        atexit.unregister(self.shutdown)
        # Our SIGTERM handler stays until the flush is done: a SIGTERM meanwhile (a Pool
        # terminating its workers as they run their atexit handlers) waits for it, instead of
        # the default action ending the process mid-write (`_on_sigterm`).
        try:
            self._close()
        finally:
            self._restore_sigterm()
            if self._sigterm_deferred:
                self._sigterm_deferred = False
                signal.raise_signal(signal.SIGTERM)  # to the handler before ours, or the default

    def _close(self) -> None:
        if self._instrumentor is not None:
            try:
                self._instrumentor.end_unfinished()  # streams left open: recorded, not lost
                self._instrumentor.uninstrument()
            except Exception:
                log.exception("otelstats: uninstrumenting the openai SDK failed")
        # Shutting the processor down flushes it and shuts the exporter down (spool → journal).
        self._processor.shutdown()
        if self._owns_tracer_provider:
            self.tracer_provider.shutdown()
        if self._owned_meter_provider is not None:
            self._owned_meter_provider.shutdown()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()

    # -- SIGTERM ----------------------------------------------------------------------------

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.debug("otelstats: not on the main thread; SIGTERM will not flush")
            return
        self._previous_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._sigterm_installed = True

    def _restore_sigterm(self) -> None:
        if not self._sigterm_installed:
            return
        self._sigterm_installed = False
        if threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGTERM)
            if current == self._on_sigterm:  # someone else's later handler stays theirs
                signal.signal(signal.SIGTERM, self._previous_sigterm or signal.SIG_DFL)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self._closed and self._sigterm_installed:
            # `shutdown` is flushing, maybe on this very thread (the handler interrupts it):
            # waiting for it here could wait for a lock it holds. It delivers the signal after.
            self._sigterm_deferred = True
            return
        previous = self._previous_sigterm
        terminating = not callable(previous) and previous != signal.SIG_IGN
        # In a helper thread: the signal may have interrupted code holding a lock the flush
        # needs, so never wait for it forever.
        work = self.shutdown if terminating else self.flush
        worker = threading.Thread(target=work, name="otelstats-sigterm-flush", daemon=True)
        worker.start()
        worker.join(SIGTERM_FLUSH_TIMEOUT_S)
        if callable(previous):
            previous(signum, frame)
        elif terminating:
            # Default behaviour: die of SIGTERM, with the exit status a supervisor expects.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


def instrument(
    db: str | Path | Store | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    prometheus_port: int | None = None,
    settings: Settings | None = None,
    **options: Any,
) -> Handle:
    """Count every openai SDK call of this process in `db` (see the module docstring).

    `options` are Settings fields (export_interval_ms=…, capture_content=…); environment
    variables fill the rest. Calling it again returns the same Handle.
    """
    arguments = _given(
        db=db,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        prometheus_port=prometheus_port,
        settings=settings,
        **options,
    )
    with _PROCESS.lock:
        if _PROCESS.handle is not None:
            first = _PROCESS.arguments
            ignored = [k for k, v in arguments.items() if k not in first or first[k] != v]
            if ignored:
                log.warning(
                    "otelstats.instrument() already ran; ignored: %s", ", ".join(sorted(ignored))
                )
            return _PROCESS.handle
        handle = _build(db, tracer_provider, meter_provider, prometheus_port, settings, options)
        _PROCESS.handle = handle
        _PROCESS.arguments = arguments
    atexit.register(handle.shutdown)
    handle._install_sigterm()
    return handle


def _given(**arguments: Any) -> dict[str, Any]:
    """The arguments an instrument() call gave (a path as its text: `"a.db"` is `Path("a.db")`)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in arguments.items() if v is not None}


def _resolve_settings(
    db: str | Path | Store | None, settings: Settings | None, options: dict[str, Any]
) -> Settings:
    db_text = str(db) if isinstance(db, (str, Path)) else None  # a Store goes to the exporter
    if settings is None:
        return Settings.from_env(db=db_text, **options)
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    overrides = {k: v for k, v in {"db": db_text, **options}.items() if v is not None}
    return dataclasses.replace(settings, **overrides)


def _build(
    db: str | Path | Store | None,
    tracer_provider: TracerProvider | None,
    meter_provider: metrics.MeterProvider | None,
    prometheus_port: int | None,
    settings: Settings | None,
    options: dict[str, Any],
) -> Handle:
    resolved = _resolve_settings(db, settings, options)
    port = prometheus_port if prometheus_port is not None else resolved.metrics_port
    exporter = StatsSpanExporter(resolved.db if db is None or isinstance(db, (str, Path)) else db)

    server = None
    owned_mp = None
    if meter_provider is None and port is not None:
        owned_mp, server = _start_live_metrics(port)
        meter_provider = owned_mp
    elif port is not None:
        log.warning("otelstats: a meter_provider was given, so prometheus_port is ignored")
    if meter_provider is None:
        meter_provider = metrics.get_meter_provider()

    owns_tp = False
    if tracer_provider is None:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            tracer_provider = current
        else:
            tracer_provider = TracerProvider()
            owns_tp = True
    elif not isinstance(tracer_provider, TracerProvider):
        raise ConfigError(
            "tracer_provider must be an opentelemetry.sdk.trace.TracerProvider; with another "
            "provider, add StatsSpanProcessor(StatsSpanExporter(db)) to your own pipeline"
        )
    processor = StatsSpanProcessor(exporter, schedule_delay_millis=resolved.export_interval_ms)
    tracer_provider.add_span_processor(processor)

    handle = Handle(
        settings=resolved,
        exporter=exporter,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        metrics_port=server.server_port if server is not None else None,
        _processor=processor,
        _owns_tracer_provider=owns_tp,
        _owned_meter_provider=owned_mp,
        _metrics_server=server,
    )
    # On a provider of our own, nothing but our processor sees the calls' spans: they are made
    # off the callers' threads (`_deferred_spans`). An app's own provider gets them as they end.
    deferred = processor.deferred if owns_tp else None
    handle._instrumentor = _instrument_openai(tracer_provider, meter_provider, resolved, deferred)
    return handle


def conversation_salt() -> bytes | None:
    """The user's secret salt for conversation fingerprints, created once (mode 0600).

    Kept in the user data directory so that a chat client's turns group into one conversation
    across restarts; None (a per-process salt) when the file cannot be read or created.
    """
    path = default_db_path().parent / "conversation-salt"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            salt = path.read_bytes()
            return salt if len(salt) >= 16 else None
        with os.fdopen(fd, "wb") as handle:
            salt = os.urandom(32)
            handle.write(salt)
        return salt
    except OSError as exc:
        log.debug("otelstats: no persistent conversation salt (%s)", exc)
        return None


def _start_live_metrics(port: int) -> tuple[Any, Any]:
    """A MeterProvider read by Prometheus on 127.0.0.1:port, through a private registry."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=True)
    try:
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve live metrics on 127.0.0.1:{port}: {exc.strerror}; "
            "choose another port (0 picks a free one)"
        ) from None
    reader = PrometheusMetricReader(registry=registry)
    return MeterProvider(metric_readers=[reader]), server


def _instrument_openai(
    tracer_provider: TracerProvider,
    meter_provider: metrics.MeterProvider,
    settings: Settings,
    deferred: DeferredSpans | None,
) -> Any:
    """Instrument the openai SDK; None when it is missing or someone else instrumented it."""
    from .instrumentation import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        log.info("otelstats: the openai SDK is already instrumented; leaving it as it is")
        return None
    instrumentor.instrument(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        settings=settings,
        conversation_salt=conversation_salt(),
        deferred_spans=deferred,
    )
    return instrumentor if instrumentor.is_instrumented_by_opentelemetry else None
