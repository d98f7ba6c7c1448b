"""OpenAIInstrumentor: wraps the openai SDK's request methods (sync and async) with wrapt.

Uses only the OpenTelemetry API, so it works under any SDK setup (otelstats' own, the app's, OTLP).
`instrument(tracer_provider=..., meter_provider=..., settings=..., stream_usage=...,
capture_content=..., conversation_salt=..., deferred_spans=...)`; `uninstrument()` unwraps exactly
what was wrapped. `deferred_spans` (a `StatsSpanProcessor`'s `deferred`) makes the calls' spans
off the callers' threads: only for a provider that processor alone is on (`_deferred_spans`).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import weakref
from collections.abc import Collection
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap
from wrapt import register_post_import_hook, wrap_function_wrapper

from . import semconv
from ._background import FOLLOW_UPS, FOLLOWED, follow_up
from ._coexist import DuplicateMarker
from ._instr_calls import (
    active_call,
    async_wrapper,
    outside_calls,
    posted,
    resource_call,
    sync_wrapper,
)
from ._instr_request import CHAT, EMBEDDINGS, RESPONSES, TEXT_COMPLETION, Endpoint
from ._instr_telemetry import Options, Telemetry
from ._websocket_wrap import BASES, CONNECTIONS, WEBSOCKETS, Sockets
from .config import SDK_DISABLED_WARNING, Settings, sdk_disabled

log = logging.getLogger(__name__)

_INSTRUMENTS = ("openai >= 1.26",)
"""The oldest SDK otelstats is tested with (`scripts/test` runs the instrumentation tests on it):
1.26 brought `stream_options`, on which usage of streams rests. With an older one installed,
`instrument()` logs the conflict and leaves the SDK as it is."""
_SCOPE = semconv.OTELSTATS_SCOPE

# (candidate modules across SDK versions 1.x-3.x, class, method, endpoint, is_async); endpoint
# None: the client's own `post`, a call when its path is an instrumented API's (`posted`).
_TARGETS: tuple[tuple[tuple[str, ...], str, str, Endpoint | None, bool], ...] = (
    (("openai.resources.chat.completions.completions", "openai.resources.chat.completions"),
     "Completions", "create", CHAT, False),
    (("openai.resources.chat.completions.completions", "openai.resources.chat.completions"),
     "AsyncCompletions", "create", CHAT, True),
    (("openai.resources.chat.completions.completions",), "Completions", "parse", CHAT, False),
    (("openai.resources.chat.completions.completions",), "AsyncCompletions", "parse", CHAT, True),
    (("openai.resources.beta.chat.completions",), "Completions", "parse", CHAT, False),
    (("openai.resources.beta.chat.completions",), "AsyncCompletions", "parse", CHAT, True),
    (("openai.resources.completions",), "Completions", "create", TEXT_COMPLETION, False),
    (("openai.resources.completions",), "AsyncCompletions", "create", TEXT_COMPLETION, True),
    (("openai.resources.embeddings",), "Embeddings", "create", EMBEDDINGS, False),
    (("openai.resources.embeddings",), "AsyncEmbeddings", "create", EMBEDDINGS, True),
    (("openai.resources.responses.responses", "openai.resources.responses"),
     "Responses", "create", RESPONSES, False),
    (("openai.resources.responses.responses", "openai.resources.responses"),
     "AsyncResponses", "create", RESPONSES, True),
    (("openai.resources.responses.responses",), "Responses", "parse", RESPONSES, False),
    (("openai.resources.responses.responses",), "AsyncResponses", "parse", RESPONSES, True),
    (("openai._base_client",), "SyncAPIClient", "post", None, False),
    (("openai._base_client",), "AsyncAPIClient", "post", None, True),
)  # fmt: skip


_SOCKETS = (
    (CONNECTIONS, ("send", "recv", "recv_bytes")),  # the SDK's Responses connections
    (BASES, ("send_raw", "close")),  # their bases, shared with the Realtime API's
    (WEBSOCKETS, ("send", "recv", "close")),  # websockets' own (a library's own socket)
)
"""What `_websocket` wraps: (module, class, is_async) targets and their methods."""
_MODULES = tuple(
    dict.fromkeys(
        [name for target in _TARGETS for name in target[0]]
        + [module for module, _, _ in FOLLOW_UPS + CONNECTIONS + BASES + WEBSOCKETS]
    )
)
"""Every module a target may live in, each once, in order."""


def _options(settings: Settings | None, kwargs: dict[str, Any]) -> Options:
    base = settings or Settings()
    salt = kwargs.get("conversation_salt")
    if isinstance(salt, str):
        salt = salt.encode()
    stream_usage = kwargs.get("stream_usage")
    capture = kwargs.get("capture_content")
    return Options(
        stream_usage=base.stream_usage if stream_usage is None else bool(stream_usage),
        capture_content=base.capture_content if capture is None else bool(capture),
        # Without a salt passed in, a per-process secret: ids stay private, but do not
        # survive a restart (bootstrap passes the database's own salt).
        conversation_salt=salt if isinstance(salt, bytes) and salt else os.urandom(32),
    )


class OpenAIInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """OpenTelemetry instrumentor for the openai SDK (chat, completions, embeddings, responses)."""

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        # BaseInstrumentor is a singleton (every call returns the same object): the options are
        # the last constructor's, read at instrument(); what is wrapped survives re-construction.
        self._defaults: tuple[Settings | None, dict[str, Any]] = (settings, options)
        if not hasattr(self, "_wrapped"):
            self._wrapped: list[tuple[Any, str]] = []
            self.telemetry: Telemetry | None = None
            self._sockets: Sockets | None = None
            self._telemetries: list[Telemetry] = []
            """Every Telemetry instrument() made: streams of an earlier one may still be open."""
            self._markers: weakref.WeakKeyDictionary[Any, DuplicateMarker] = (
                weakref.WeakKeyDictionary()
            )
            self._hooked: set[str] = set()

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        settings, defaults = self._defaults
        settings = kwargs.get("settings") or settings
        merged = {**defaults, **{k: v for k, v in kwargs.items() if v is not None}}
        tracer_provider = kwargs.get("tracer_provider") or trace.get_tracer_provider()
        self._mark_duplicates(tracer_provider)
        tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        if isinstance(tracer, trace.NoOpTracer) and sdk_disabled():
            log.warning(SDK_DISABLED_WARNING, "otelstats")
        from .every_call import record_every_call  # the SDK's sampling, loaded only now

        record_every_call(tracer)
        meter = metrics.get_meter(_SCOPE, meter_provider=kwargs.get("meter_provider"))
        telemetry = Telemetry(tracer, meter, _options(settings, merged))
        # Only for a provider nothing but otelstats' processor sees (`_deferred_spans`).
        telemetry.deferred = kwargs.get("deferred_spans")
        self.telemetry = telemetry
        self._sockets = Sockets(telemetry)
        if not self._telemetries:
            # Registered after the app's TracerProvider (made before instrument()), so it runs
            # before that provider's own exit flush (atexit runs last-registered first).
            atexit.register(self.end_unfinished)
        self._telemetries = [t for t in self._telemetries if t.unfinished or t.parked]
        self._telemetries.append(telemetry)
        self._wrapped = []
        # A module the app has not imported yet is wrapped when it is: importing all of the SDK's
        # resources (Responses, beta...) up front would double the app's start-up time.
        for name in _MODULES:
            if name in sys.modules:
                self._wrap_module(sys.modules[name])
            elif name not in self._hooked:
                self._hooked.add(name)
                register_post_import_hook(self._on_import, name)

    def end_unfinished(self) -> None:
        """End every stream still open, as if closed now (`Telemetry.end_unfinished`): at
        interpreter exit, and by `otelstats.instrument()`'s handle before its last flush."""
        for telemetry in self._telemetries:
            telemetry.end_unfinished()

    def _on_import(self, module: Any) -> None:
        if self.telemetry is None:  # uninstrumented since: hooks cannot be unregistered
            return
        try:
            self._wrap_module(module)
        except Exception:  # never break the app's import
            log.warning("otelstats: could not instrument %s", module.__name__, exc_info=True)

    def _wrap_module(self, module: Any) -> None:
        telemetry = self.telemetry
        assert telemetry is not None
        for modules, cls, name, endpoint, is_async in _TARGETS:
            if module.__name__ not in modules:
                continue
            owner = getattr(module, cls, None)
            if owner is None or not callable(getattr(owner, name, None)):
                continue
            # A package re-exports its submodule's class: the same class is wrapped once.
            if any(o is owner and m == name for o, m in self._wrapped):
                continue
            factory = async_wrapper if is_async else sync_wrapper
            if endpoint is None:
                wrapper = outside_calls(factory(telemetry, posted(telemetry)))
            else:
                wrapper = factory(telemetry, resource_call(telemetry, endpoint))
            wrap_function_wrapper(owner, name, wrapper)
            self._wrapped.append((owner, name))
        for name, cls, is_async in FOLLOW_UPS:
            owner = getattr(module, cls, None) if module.__name__ == name else None
            for method in FOLLOWED if isinstance(owner, type) else ():
                if callable(vars(owner).get(method)) and (owner, method) not in self._wrapped:
                    wrapper = follow_up(telemetry, is_async, method)
                    wrap_function_wrapper(owner, method, wrapper)
                    self._wrapped.append((owner, method))
        self._wrap_sockets(module)

    def _wrap_sockets(self, module: Any) -> None:
        """The Responses API's WebSocket connections (`_websocket`)."""
        sockets = self._sockets
        assert sockets is not None
        for targets, methods in _SOCKETS:
            for name, cls, is_async in targets:
                owner = getattr(module, cls, None) if module.__name__ == name else None
                if not isinstance(owner, type):
                    continue
                if targets is CONNECTIONS:
                    sockets.classes = (*sockets.classes, owner)
                make = sockets.ws_wrapper if targets is WEBSOCKETS else sockets.wrapper
                for method in methods:
                    if callable(vars(owner).get(method)) and (owner, method) not in self._wrapped:
                        wrap_function_wrapper(owner, method, make(method, is_async))
                        self._wrapped.append((owner, method))

    def _mark_duplicates(self, tracer_provider: Any) -> None:
        """With an SDK provider, mark other tools' spans of our calls (see `_coexist`)."""
        for old in self._markers.values():
            old.active = False
        add = getattr(tracer_provider, "add_span_processor", None)
        if not callable(add):
            return  # a proxy / vendor provider: only the theirs-outside order is detected
        marker = self._markers.get(tracer_provider)
        if marker is None:
            marker = DuplicateMarker(active_call)
            add(marker)
            self._markers[tracer_provider] = marker
        marker.active = True

    def _uninstrument(self, **kwargs: Any) -> None:
        for marker in self._markers.values():
            marker.active = False
        for owner, method in reversed(self._wrapped):
            unwrap(owner, method)
        self._wrapped = []
        self.telemetry = None
        self._sockets = None
