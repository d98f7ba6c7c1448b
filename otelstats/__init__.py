"""otelstats: local statistics for LLM calls made with the openai SDK.

    import otelstats
    otelstats.instrument()          # every openai call from here on is counted in stats.db

Names are imported lazily so that `import otelstats` stays cheap for the host application
(Flask, SQLAlchemy and prometheus_client load only when something needs them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported eagerly: the name equals its submodule's, and importing `otelstats.conversation`
# (as the instrumentation does) would otherwise rebind `otelstats.conversation` to the module.
from .conversation import conversation

__version__ = "0.1.0"

__all__ = [
    "OpenAIInstrumentor",
    "StatsSpanExporter",
    "StatsSpanProcessor",
    "Store",
    "__version__",
    "conversation",
    "create_app",
    "instrument",
]

_LAZY = {
    "instrument": "otelstats.bootstrap",
    "OpenAIInstrumentor": "otelstats.instrumentation",
    "StatsSpanExporter": "otelstats.exporter",
    "StatsSpanProcessor": "otelstats.every_call",
    "Store": "otelstats.store",
    "create_app": "otelstats.web",
}

if TYPE_CHECKING:
    from .bootstrap import instrument
    from .every_call import StatsSpanProcessor
    from .exporter import StatsSpanExporter
    from .instrumentation import OpenAIInstrumentor
    from .store import Store
    from .web import create_app


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'otelstats' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
