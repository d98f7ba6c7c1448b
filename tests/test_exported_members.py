"""`otelstats.__all__` is exactly the public API, and every name in it resolves (as in httpx)."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

import otelstats

PUBLIC_API = {
    "OpenAIInstrumentor",
    "StatsSpanExporter",
    "StatsSpanProcessor",
    "Store",
    "__version__",
    "conversation",
    "create_app",
    "instrument",
}


def test_all_is_the_public_api() -> None:
    assert set(otelstats.__all__) == PUBLIC_API
    assert len(otelstats.__all__) == len(set(otelstats.__all__))


def test_no_public_name_outside_all() -> None:
    # Names defined in the package namespace itself (submodules become attributes once imported).
    defined = {
        name
        for name, value in vars(otelstats).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    # `annotations` is the __future__ import, not API.
    assert defined - {"annotations", "importlib", "TYPE_CHECKING", "Any"} <= PUBLIC_API
    assert dir(otelstats) == sorted(otelstats.__all__)


def test_every_exported_name_resolves_to_otelstats_code() -> None:
    for name in otelstats.__all__:
        value = getattr(otelstats, name)
        if name == "__version__":
            assert isinstance(value, str)
            continue
        assert callable(value), name
        assert value.__module__.startswith("otelstats."), (name, value.__module__)
    assert "db" in inspect.signature(otelstats.instrument).parameters


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="not_a_thing"):
        otelstats.not_a_thing  # noqa: B018


def test_conversation_stays_the_function_after_its_module_is_imported() -> None:
    import otelstats.conversation  # what the instrumentation does

    assert callable(otelstats.conversation)
    with otelstats.conversation("docs-example") as conversation_id:
        assert conversation_id == "docs-example"
