"""Side by side with another openai instrumentation (e.g. opentelemetry-instrumentation-openai-v2):
one user call yields two GenAI spans; the other one is marked `otelstats.duplicate_of` so that
`span_to_record` never turns it into a second record. It is still exported untouched otherwise.

Wrappers nest, so one span is the other's parent:
- theirs outside (instrumented first): their span is current when our call starts ->
  `encloses_call`, then `mark`;
- ours outside: their span starts inside our call -> `DuplicateMarker.on_start`, a span processor
  added to the SDK TracerProvider, sees it while our call is active.

Our own span is started only when the call ends (all its attributes at once), unless one of these
needs its id before: then it is started at that moment, with the call's start time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from opentelemetry.trace import Span, SpanKind

from . import semconv

logger = logging.getLogger("otelstats.instrumentation")

_INFERENCE = frozenset(
    {
        semconv.OPERATION_CHAT,
        semconv.OPERATION_TEXT_COMPLETION,
        semconv.OPERATION_EMBEDDINGS,
        semconv.OPERATION_GENERATE_CONTENT,
    }
)


def _is_inference(span: Any) -> bool:
    """A CLIENT span of one inference call (not an agent/workflow span that contains calls)."""
    if getattr(span, "kind", None) is not SpanKind.CLIENT:
        return False
    attrs = getattr(span, "attributes", None)
    if not attrs:
        return False
    operation = attrs.get(semconv.OPERATION_NAME)
    if operation is None:
        return semconv.LEGACY_SYSTEM in attrs
    return operation in _INFERENCE


def _is_ours(span: Any) -> bool:
    """otelstats' own span: never another tool's. Ours may start while another of our calls
    runs: a stream dropped in a reference cycle ends when the garbage collector runs, which may
    be in the middle of the next call."""
    scope = getattr(span, "instrumentation_scope", None)
    return getattr(scope, "name", None) == semconv.OTELSTATS_SCOPE


def mark(span: Span, ours: Span) -> None:
    """Mark `span`, another tool's span of the call `ours` traces, as its duplicate."""
    span.set_attribute(
        semconv.OTELSTATS_DUPLICATE_OF, format(ours.get_span_context().span_id, "016x")
    )


def encloses_call(parent: Span) -> bool:
    """`parent`, the current span as one of our calls starts, is another tool's span of that
    same call (theirs outside): it is then marked with our span's id."""
    return parent.is_recording() and _is_inference(parent)


class OurCall(Protocol):
    def span_now(self) -> Span | None:
        """Our span of the call, started now if it was not yet; None while it is starting."""


class DuplicateMarker:
    """A SpanProcessor (duck-typed: the instrumentation uses the OTel API only) marking inference
    spans that start while one of our calls runs. `active` is cleared on uninstrument (an SDK
    provider cannot drop a processor)."""

    def __init__(self, current_call: Callable[[], OurCall | None]) -> None:
        self.current_call = current_call
        self.active = True

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        if not self.active:
            return
        call = self.current_call()
        if call is None or _is_ours(span) or not _is_inference(span):
            return
        try:  # inside another tool's start_span: nothing may raise from here
            ours = call.span_now()  # None: this span is ours, starting
            if ours is not None:
                mark(span, ours)
        except Exception:
            logger.warning("otelstats: could not mark a duplicate span", exc_info=True)

    def on_end(self, span: Any) -> None:
        return None

    def _on_ending(self, span: Any) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
