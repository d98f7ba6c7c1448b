"""Statistics count every call, whatever the app's trace sampling decides.

An app that samples its traces (`OTEL_TRACES_SAMPLER=traceidratio`, or a request arriving with an
unsampled `traceparent` under the default parent-based sampler) would otherwise drop the spans of
most calls before any processor sees them, and the statistics would count a fraction of the
calls. Two pieces keep the app's tracing as it is and the statistics whole:

- `EveryCallSampler` wraps the sampler of otelstats' own tracer only: the app's sampler still
  decides whether a call's span is *sampled* (exported by the app's own processors), and a call it
  drops is still *recorded* (RECORD_ONLY) instead of discarded. The app's own spans are untouched.
- `StatsSpanProcessor` is the BatchSpanProcessor for the statistics exporter that also takes those
  recorded, unsampled spans of otelstats' calls (a plain BatchSpanProcessor ignores them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from . import semconv
from ._child_exit import shutdown_at_child_exit
from ._deferred_spans import DeferredSpans
from ._gevent import settle_platform_for_gevent

_DROP = Decision.DROP


class EveryCallSampler(Sampler):
    """The app's sampler for otelstats' tracer, except that what it drops is recorded."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = self.delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is _DROP:
            # A dropped result carries no attributes: the span keeps its own.
            return SamplingResult(Decision.RECORD_ONLY, attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        return f"EveryCallSampler{{{self.delegate.get_description()}}}"


def record_every_call(tracer: Any) -> None:
    """Give otelstats' SDK tracer an `EveryCallSampler` (once); another kind of tracer (a
    vendor's, the API's proxy before any provider is set) keeps its own sampling."""
    sampler = getattr(tracer, "sampler", None)
    if isinstance(sampler, Sampler) and not isinstance(sampler, EveryCallSampler):
        tracer.sampler = EveryCallSampler(sampler)


class StatsSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that also exports otelstats' recorded but unsampled call spans.

    Use it in place of BatchSpanProcessor in front of `StatsSpanExporter` in a pipeline of your
    own: `provider.add_span_processor(StatsSpanProcessor(StatsSpanExporter(db)))`.

    `deferred` takes the spans of calls to make off the callers' threads, where it alone sees
    them (`_deferred_spans`); its pending spans are made first when this is flushed or shut down.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settle_platform_for_gevent()  # before the fork hook below exists: see `_gevent`
        super().__init__(*args, **kwargs)
        shutdown_at_child_exit(self)  # a multiprocessing worker's last calls: see _child_exit
        # The queue BatchSpanProcessor.on_end hands a sampled span to (opentelemetry-sdk 1.3x+);
        # putting spans on it here spares a second method call per span (~4 k instructions, a
        # percent of otelstats' cost per call). Without it, through BatchSpanProcessor.on_end.
        self._emit: Callable[[ReadableSpan], None] | None = getattr(
            getattr(self, "_batch_processor", None), "emit", None
        )
        # Spans made off the callers' threads: every export interval, an export batch at a
        # time, and no more pending than the queue holds (`_deferred_spans`).
        self.deferred = DeferredSpans(
            self._setting("schedule_delay_millis", 5000) / 1e3,
            self._export_now,
            batch=self._setting("max_export_batch_size", 512),
            limit=self._setting("max_queue_size", 2048),
        )

    def _setting(self, name: str, default: int) -> int:
        """One of the batch processor's settings as resolved (arguments, then environment):
        the SDK's BatchProcessor holds it (1.3x+), the older BatchSpanProcessor itself."""
        value = getattr(getattr(self, "_batch_processor", None), f"_{name}", None)
        if value is None:
            value = getattr(self, name, None)
        return int(value) if isinstance(value, (int, float)) and value > 0 else default

    def _export_now(self) -> bool:
        return BatchSpanProcessor.force_flush(self)

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        self.deferred.make()
        return super().force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.deferred.close()
        super().shutdown()  # type: ignore[no-untyped-call]

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        emit = self._emit
        if not context.trace_flags.sampled:
            scope = span.instrumentation_scope
            if scope is None or scope.name != semconv.OTELSTATS_SCOPE:
                return  # the app's own unsampled span: not ours to export
            if emit is None:
                span = _sampled_copy(span, context)
        if emit is not None:
            emit(span)
        else:
            BatchSpanProcessor.on_end(self, span)


def _sampled_copy(span: ReadableSpan, context: SpanContext) -> ReadableSpan:
    """The span as BatchSpanProcessor.on_end takes it: flagged sampled (only the statistics
    exporter sees this copy), from public properties only."""
    flags = TraceFlags(context.trace_flags | TraceFlags.SAMPLED)
    return ReadableSpan(
        name=span.name,
        context=SpanContext(
            context.trace_id, context.span_id, context.is_remote, flags, context.trace_state
        ),
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
