"""One instrumented call: its span and the metrics at its end (what is read from a response's
usage is `_usage`).

`Telemetry` holds what an instrumentor owns (tracer, histograms, options, per-server memory);
`Call` is one user call and ends exactly once (`end`). Nothing here ever raises into the caller:
`Telemetry.internal_error` logs a failure of otelstats once and the call goes on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Final, Protocol

from opentelemetry.context import Context
from opentelemetry.metrics import Histogram, Meter, NoOpHistogram
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    Span,
    Tracer,
)

from . import semconv
from ._coexist import encloses_call, mark
from ._deferred_spans import (
    DeferredSpans,
    Pending,
    end_call_span,
    make_span,
    start_call_span,
)
from ._forks import in_fork_children
from ._parked import ParkedResponses
from .conversation import ResponseChains
from .records import Outcome

logger = logging.getLogger("otelstats.instrumentation")


Server = tuple[str | None, int | None, str, str]
"""(host, port, base URL text, `gen_ai.provider.name`) of a client."""


class Unfinished(Protocol):
    """A call that outlives the SDK method that started it (a stream)."""

    def stopped(self) -> None:
        """End it now, as if its user had closed it."""


@dataclass(frozen=True)
class Options:
    """What an instrumentor was asked to do (from `Settings` or keyword arguments)."""

    stream_usage: bool = True
    capture_content: bool = False
    conversation_salt: bytes = b""


class Telemetry:
    """What one `OpenAIInstrumentor.instrument()` owns; passed to every wrapper."""

    def __init__(self, tracer: Tracer, meter: Meter, options: Options) -> None:
        self.tracer = tracer
        self.options = options
        self.token_usage: Histogram = meter.create_histogram(
            semconv.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(semconv.TOKEN_USAGE_BUCKETS),
        )
        self.duration: Histogram = meter.create_histogram(
            semconv.METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(semconv.DURATION_BUCKETS),
        )
        self.time_to_first_chunk: Histogram = meter.create_histogram(
            semconv.METRIC_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk in a streaming operation.",
            explicit_bucket_boundaries_advisory=list(semconv.TIME_TO_FIRST_CHUNK_BUCKETS),
        )
        self.time_per_output_chunk: Histogram = meter.create_histogram(
            semconv.METRIC_TIME_PER_OUTPUT_CHUNK,
            unit="s",
            description="Time per output chunk after the first one in a streaming operation.",
            explicit_bucket_boundaries_advisory=list(semconv.TIME_PER_OUTPUT_CHUNK_BUCKETS),
        )
        self.not_asked_usage: set[str] = set()
        """Servers (base URLs) never asked for usage on a stream: those that refused
        `stream_options` once, and those that send it unasked (`usage_request`)."""
        self.response_chains = ResponseChains()
        self.servers: dict[int, tuple[Any, Server]] = {}
        """id(client.base_url) -> (that URL, its host/port/text): parsed once per client."""
        self.unfinished: dict[int, Unfinished] = {}
        """Streams handed out and not ended yet, by id: `end_unfinished` ends them at exit."""
        self.parked = ParkedResponses()
        """Background responses still going on at the server (`_background`)."""
        self.deferred: DeferredSpans | None = None
        """Where ended calls' spans go to be made off the caller's thread (`_deferred_spans`):
        set where otelstats' processor alone sees them; None: made by the caller."""
        self.generation = 0
        """How many forks deep this process is from the one that made this: a call belongs to
        the process that started it (`Call.end` in a fork child records nothing of it)."""
        self._logged: set[str] = set()
        in_fork_children(self.forked)

    def forked(self) -> None:
        """In a fork child: the calls open at the fork (a stream being read) are the parent's,
        which records them; the child's copies, dropped or left open at its exit, are not calls
        of its own."""
        self.generation += 1
        self.unfinished.clear()
        self.parked.after_fork()
        self.response_chains.after_fork()

    def end_unfinished(self) -> None:
        """End every stream still open (left mid-way, neither closed nor garbage collected: a
        script whose stream variable lives until the end), as if closed now: at interpreter
        exit, before the last spans are flushed, so that no call made is lost. Background
        responses still going on are recorded as they stood when last seen (`_parked`)."""
        self.parked.close()
        for stream in list(self.unfinished.values()):
            try:
                stream.stopped()
            except Exception:
                self.internal_error("ending an open stream")
        self.unfinished.clear()

    def records_metrics(self) -> bool:
        """False while the histograms record nothing: the API's no-op meter, or its proxy meter
        before any global MeterProvider is set (what `otelstats.instrument()` leaves without a
        Prometheus port). Asked per call, since an app may set its MeterProvider later; then
        the labels are not even built (a few µs per call)."""
        histogram = self.duration
        # The API's _ProxyHistogram (the common case, asked first: the ABC isinstance check
        # below costs more) forwards to `_real_instrument` once a provider is set.
        real = getattr(histogram, "_real_instrument", histogram)
        if real is not histogram:
            return real is not None
        return not isinstance(histogram, NoOpHistogram)

    def internal_error(self, where: str) -> None:
        """A failure of otelstats itself: log it once per place, never disturb the user's call."""
        if where not in self._logged:
            self._logged.add(where)
            logger.warning(
                "otelstats: internal error in %s (call unaffected)", where, exc_info=True
            )

    def start(
        self,
        operation: str,
        model: str | None,
        attributes: dict[str, Any],
        context: Context,
        parent: Span,
    ) -> Call:
        """Start one call in `context`, whose span is `parent` (maybe another tool's span of this
        same call, see `_coexist`)."""
        name = f"{operation} {model}" if model else operation
        call = Call(self, name, attributes, context)
        if encloses_call(parent):
            mark(parent, call.start_span(attributes))
        return call


_METRIC_KEYS = (
    semconv.OPERATION_NAME,
    semconv.PROVIDER_NAME,
    semconv.REQUEST_MODEL,
    semconv.SERVER_ADDRESS,
    semconv.SERVER_PORT,
)


_STARTING: Final = NonRecordingSpan(INVALID_SPAN_CONTEXT)
"""`Call.span` while the call's span is being started (a span processor may ask for it then)."""


class Call:
    """One user call. `end()` records its span and its metrics, once.

    The span is started when the call ends, with the call's start time and every attribute at
    once: one pass through the SDK's span and attribute code instead of two (about 15 k CPU
    instructions less per call). Only another tool's span of the same call needs our span's id
    earlier (`_coexist`): `span_now()` then starts it at once.
    """

    __slots__ = (
        "attributes",
        "context",
        "done",
        "generation",
        "name",
        "remember",
        "span",
        "start",
        "start_ns",
        "telemetry",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        name: str,
        attributes: dict[str, Any],
        context: Context,
    ) -> None:
        self.telemetry = telemetry
        self.name = name
        self.attributes = attributes
        self.context = context
        """The context the call started in: its span's parent."""
        self.span: Span | None = None
        self.start_ns = time.time_ns()
        self.start = time.perf_counter()
        self.done = False
        self.generation = telemetry.generation
        self.remember = False
        """Responses API: remember response id -> conversation id for `previous_response_id`."""

    def span_now(self) -> Span | None:
        """The call's span, started now if it was not yet; None while it is being started."""
        span = self.span
        if span is None:
            return self.start_span(self.attributes)
        return None if span is _STARTING else span

    def start_span(self, attributes: dict[str, Any]) -> Span:
        """Start the call's span (once), with the call's start time, parent and `attributes`."""
        self.span = _STARTING
        span = self.span = start_call_span(
            self.telemetry.tracer, self.name, self.context, attributes, self.start_ns
        )
        return span

    def end(
        self,
        outcome: Outcome,
        attributes: dict[str, Any],
        *,
        error: BaseException | None = None,
        first_chunk_s: float | None = None,
        per_chunk_s: float | None = None,
        ended: float | None = None,
    ) -> None:
        """`first_chunk_s`: time to the first chunk of a stream; `per_chunk_s`: the mean time
        between its chunks after the first (the `time_per_output_chunk` metric); `ended`: when
        the call ended (`perf_counter`), if not now (a background response, `_background`)."""
        if self.done:
            return
        self.done = True
        if self.generation != self.telemetry.generation:
            return  # started before this process was forked: the parent's call, recorded there
        try:
            self._end(outcome, attributes, error, first_chunk_s, per_chunk_s, ended)
        except Exception:
            self.telemetry.internal_error("ending a span")

    def _end(
        self,
        outcome: Outcome,
        attributes: dict[str, Any],
        error: BaseException | None,
        first_chunk_s: float | None,
        per_chunk_s: float | None,
        ended: float | None,
    ) -> None:
        duration = (time.perf_counter() if ended is None else ended) - self.start
        if outcome != "ok":  # ok is what `span_to_record` reads from a span without one
            attributes[semconv.OTELSTATS_OUTCOME] = outcome
        if first_chunk_s is not None:
            attributes[semconv.RESPONSE_TIME_TO_FIRST_CHUNK] = first_chunk_s
        if error is not None and semconv.ERROR_TYPE not in attributes:
            attributes[semconv.ERROR_TYPE] = type(error).__qualname__
        failed = outcome == "error" or (outcome == "incomplete" and error is not None)
        description = str(error)[:200] if failed and error is not None else None
        end_ns = time.time_ns() if ended is None else self.start_ns + int(duration * 1e9)
        telemetry = self.telemetry
        span = self.span
        if span is not None:  # started early (`_coexist`)
            span.set_attributes(attributes)
            end_call_span(span, end_ns, failed, description)
        else:
            pending: Pending = (telemetry.tracer, self.name, self.context,
                                {**self.attributes, **attributes}, self.start_ns, end_ns, failed,
                                description)  # fmt: skip
            deferred = telemetry.deferred
            if deferred is None or not deferred.put(pending):
                make_span(pending)  # here and now

        if self.remember:
            response_id = attributes.get(semconv.RESPONSE_ID)
            conversation_id = self.attributes.get(semconv.CONVERSATION_ID)
            if isinstance(response_id, str) and isinstance(conversation_id, str):
                telemetry.response_chains.remember(response_id, conversation_id)
        if not telemetry.records_metrics():
            return
        base = self.attributes
        labels = {key: base[key] for key in _METRIC_KEYS if key in base}
        response_model = attributes.get(semconv.RESPONSE_MODEL)
        if response_model:
            labels[semconv.RESPONSE_MODEL] = response_model
        error_type = attributes.get(semconv.ERROR_TYPE)
        if error_type:
            labels[semconv.ERROR_TYPE] = error_type
        telemetry.duration.record(duration, labels)
        if outcome == "error":
            return
        if semconv.OTELSTATS_TOKENS_SOURCE not in attributes:  # reported, not counted
            for key, kind in (
                (semconv.USAGE_INPUT_TOKENS, semconv.TOKEN_TYPE_INPUT),
                (semconv.USAGE_OUTPUT_TOKENS, semconv.TOKEN_TYPE_OUTPUT),
            ):
                count = attributes.get(key)
                if count is not None:
                    telemetry.token_usage.record(count, {**labels, semconv.TOKEN_TYPE: kind})
        if first_chunk_s is not None:
            telemetry.time_to_first_chunk.record(first_chunk_s, labels)
        if per_chunk_s is not None:
            telemetry.time_per_output_chunk.record(per_chunk_s, labels)
