"""Side by side with another openai instrumentation (e.g. opentelemetry-instrumentation-openai-v2):
one user call yields two GenAI spans; the other one is marked `otelstats.duplicate_of` so that
`span_to_record` never turns it into a second record. It is still exported untouched otherwise.

Wrappers nest, so one span is the other's parent:
- theirs outside (instrumented first): their span is current when ours starts -> `mark_parent`;
- ours outside: their span starts inside our call -> `DuplicateMarker.on_start`, a span processor
  added to the SDK TracerProvider, sees it while our call is active.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.trace import Span, SpanKind

from . import semconv

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


def _mark(span: Span, ours: Span | None) -> None:
    span_id = ours.get_span_context().span_id if ours is not None else 0
    span.set_attribute(semconv.OTELSTATS_DUPLICATE_OF, format(span_id, "016x"))


def mark_parent(ours: Span, parent: Span) -> None:
    """Called as our span starts with the current span, `parent`: mark it if it is another
    tool's span of this same call."""
    if parent is not ours and parent.is_recording() and _is_inference(parent):
        _mark(parent, ours)


class DuplicateMarker:
    """A SpanProcessor (duck-typed: the instrumentation uses the OTel API only) marking inference
    spans that start while one of our calls runs. `active` is cleared on uninstrument (an SDK
    provider cannot drop a processor)."""

    def __init__(self, current_call: Callable[[], Span | None]) -> None:
        self.current_call = current_call
        self.active = True

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        if not self.active:
            return
        ours = self.current_call()
        if ours is not None and span is not ours and _is_inference(span):
            _mark(span, ours)

    def on_end(self, span: Any) -> None:
        return None

    def _on_ending(self, span: Any) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
