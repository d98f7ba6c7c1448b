"""OpenAIInstrumentor: wraps the openai SDK's request methods (sync and async) with wrapt.

Uses only the OpenTelemetry API, so it works under any SDK setup (otelstats' own, the app's, OTLP).
`instrument(tracer_provider=..., meter_provider=..., settings=..., stream_usage=...,
capture_content=..., conversation_salt=...)`; `uninstrument()` unwraps exactly what was wrapped.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Collection
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from ._instr_calls import (
    CHAT,
    EMBEDDINGS,
    RESPONSES,
    TEXT_COMPLETION,
    Endpoint,
    async_wrapper,
    sync_wrapper,
)
from ._instr_telemetry import Options, Telemetry
from .config import Settings

_INSTRUMENTS = ("openai >= 1.0",)
_SCOPE = "otelstats.instrumentation.openai"

# (candidate modules across SDK versions 1.x-3.x, class, method, endpoint, is_async)
_TARGETS: tuple[tuple[tuple[str, ...], str, str, Endpoint, bool], ...] = (
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
)  # fmt: skip


def _resolve(modules: tuple[str, ...], cls: str, method: str) -> tuple[Any, str] | None:
    """The first module that has `cls.method` (modules moved between SDK versions)."""
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        owner = getattr(module, cls, None)
        if owner is not None and callable(getattr(owner, method, None)):
            return module, f"{cls}.{method}"
    return None


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

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        settings, defaults = self._defaults
        settings = kwargs.get("settings") or settings
        merged = {**defaults, **{k: v for k, v in kwargs.items() if v is not None}}
        tracer = trace.get_tracer(_SCOPE, tracer_provider=kwargs.get("tracer_provider"))
        meter = metrics.get_meter(_SCOPE, meter_provider=kwargs.get("meter_provider"))
        telemetry = Telemetry(tracer, meter, _options(settings, merged))
        self.telemetry = telemetry
        self._wrapped = []
        for modules, cls, method, endpoint, is_async in _TARGETS:
            found = _resolve(modules, cls, method)
            if found is None or (found[0], found[1]) in self._wrapped:
                continue
            module, name = found
            factory = async_wrapper if is_async else sync_wrapper
            wrap_function_wrapper(module, name, factory(telemetry, endpoint))
            self._wrapped.append((module, name))

    def _uninstrument(self, **kwargs: Any) -> None:
        for module, name in reversed(self._wrapped):
            cls, method = name.split(".")
            unwrap(getattr(module, cls), method)
        self._wrapped = []
        self.telemetry = None
