"""CallRecord, the one row every source becomes, and `span_to_record`, the one pure mapping to it.

The exporter, the OTLP receiver and the proxy all go through `span_to_record`, so a call means
the same thing whichever way it arrived. Attribute values are untrusted: wrong types are ignored,
strings are length-capped, and the function never raises on a GenAI span.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from opentelemetry.trace import StatusCode

from . import semconv

Outcome = Literal["ok", "error", "cancelled", "incomplete"]
TokensSource = Literal["reported", "counted", "none"]

OUTCOMES: tuple[Outcome, ...] = ("ok", "error", "cancelled", "incomplete")
MAX_LABEL_LENGTH = 256
"""Longest model/provider/operation/error name kept; longer values are cut (hostile servers)."""
MAX_ID_LENGTH = 128
UNKNOWN_MODEL = "unknown"


@dataclass(slots=True)
class CallRecord:
    """One inference call. Times are Unix nanoseconds; durations are seconds.

    Treated as immutable, but not frozen: a frozen dataclass sets each of these fields through
    `object.__setattr__`, about 3 µs per record on the exporter's thread (4× a plain one).
    """

    trace_id: str
    span_id: str
    start_ns: int
    end_ns: int
    operation: str
    provider: str
    request_model: str | None
    response_model: str | None
    server_address: str | None
    server_port: int | None
    input_tokens: int | None
    output_tokens: int | None
    tokens_source: TokensSource
    cached_input_tokens: int | None
    reasoning_tokens: int | None
    streaming: bool
    time_to_first_chunk_s: float | None
    finish_reasons: tuple[str, ...]
    outcome: Outcome
    error_type: str | None
    conversation_id: str | None
    service_name: str | None = None
    service_instance_id: str | None = None

    @property
    def model(self) -> str:
        """The requested model, falling back to the response model (DESIGN §4)."""
        return self.request_model or self.response_model or UNKNOWN_MODEL

    @property
    def duration_s(self) -> float:
        elapsed = self.end_ns - self.start_ns
        return elapsed / 1e9 if elapsed > 0 else 0.0

    @property
    def latency_s(self) -> float | None:
        """Time to first token of a successful call: the first chunk, or the whole call."""
        if self.outcome != "ok":
            return None
        if self.streaming:
            return self.time_to_first_chunk_s
        return self.duration_s

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed of a successful call (DESIGN §4), or None when it has no meaning."""
        out = self.output_tokens
        if self.outcome != "ok" or out is None:
            return None
        duration = self.duration_s  # once: the rollup fold reads these for every record
        if self.streaming:
            first = self.time_to_first_chunk_s
            if out < 2 or first is None:
                return None
            generating = duration - first
            return (out - 1) / generating if generating > 0 else None
        if out < 1 or duration <= 0:
            return None
        return out / duration

    @property
    def total_tokens(self) -> int:
        return (self.input_tokens or 0) + (self.output_tokens or 0)


class SpanLike(Protocol):
    """What `span_to_record` reads: an SDK ReadableSpan, or one rebuilt from OTLP."""

    @property
    def attributes(self) -> Mapping[str, Any] | None: ...
    @property
    def start_time(self) -> int | None: ...
    @property
    def end_time(self) -> int | None: ...


def _storable(text: str) -> str:
    """Text every backend accepts: PostgreSQL refuses NUL, no driver encodes lone surrogates."""
    if not text.isascii():  # the common ASCII case costs one C scan
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _text(value: Any, limit: int = MAX_LABEL_LENGTH) -> str | None:
    if isinstance(value, str) and value:
        return _storable(value[:limit])
    return None


def _count(value: Any) -> int | None:
    """A token count: a non-negative int (bools and floats with fractions are not counts)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value < 2**53:
        return value
    return None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value)
    if seconds != seconds or seconds < 0 or seconds > 1e7:  # NaN, negative, absurd
        return None
    return seconds


def _first(attrs: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None:
            return value
    return None


def _finish_reasons(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    elif type(value) is not tuple and not isinstance(value, Sequence):  # the ABC check is slow
        return ()
    # 16 reasons of at most 60 characters, joined by commas, fit the 1024-character column.
    # Made storable by the caller, with the span's other strings.
    return tuple([v[:60] for v in value if isinstance(v, str)][:16])


def _outcome(attrs: Mapping[str, Any], span: Any, error_type: str | None) -> Outcome:
    declared = attrs.get(semconv.OTELSTATS_OUTCOME)
    if declared is not None and declared in OUTCOMES:  # absent (ok) skips four comparisons
        return declared  # type: ignore[no-any-return]
    if error_type is not None:
        return "error"
    status = getattr(getattr(span, "status", None), "status_code", None)
    if status is None or status is StatusCode.UNSET:  # the common case, without an enum lookup
        return "ok"
    # By name: spans rebuilt from OTLP may carry another enum of the same names.
    return "error" if getattr(status, "name", None) == "ERROR" else "ok"


_HEX_FORMATS = {width: (f"%0{width}x", (1 << 4 * width) - 1) for width in (16, 32)}
"""Span and trace ids: printf-style formats (a tenth of `format`'s cost) and their masks."""


def _hex_id(value: Any, width: int) -> str:
    # Always exactly `width` characters: the columns are that wide (oversized OTLP ids).
    if isinstance(value, int):
        text, mask = _HEX_FORMATS[width]
        return text % (value & mask)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()[-width:].rjust(width, "0")
    return _storable(str(value or "")).rjust(width, "0")[:width]


def is_genai(attributes: Mapping[str, Any] | None) -> bool:
    return bool(attributes) and any(
        name in attributes  # type: ignore[operator]
        for name in semconv.GENAI_MARKERS
    )


def _plain(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    """A plain dict of the attributes: the SDK hands out a mappingproxy over BoundedAttributes,
    whose `get` is pure Python and raises KeyError for every absent name (~1 µs each); its own
    `copy()` is one C dict copy. Anything else is read as it is."""
    if type(attributes) is dict:
        return attributes
    copy = getattr(attributes, "copy", None)
    if copy is not None:
        try:
            plain = copy()
        except Exception:
            plain = None
        if type(plain) is dict:
            return plain
    return attributes


def _cut(value: Any, limit: int = MAX_LABEL_LENGTH) -> str | None:
    """A non-empty string, length-capped, not yet made storable (see `span_to_record`)."""
    return value[:limit] if isinstance(value, str) and value else None


def _small_count(value: Any) -> int | None:
    # The common case (a plain int) without a call into `_count`.
    if type(value) is int:
        return value if 0 <= value < 2**53 else None
    return None if value is None else _count(value)


_SERVICES: dict[int, tuple[Any, tuple[str | None, str | None]]] = {}
"""id(resource) -> (that resource, its service name and instance id, cut): a provider's spans
share one Resource, which is read once, not once per span."""


def _service(resource: Any) -> tuple[str | None, str | None]:
    found = _SERVICES.get(id(resource))
    if found is not None and found[0] is resource:  # the same object, not a recycled id
        return found[1]
    attrs = getattr(resource, "attributes", None)
    attrs = _plain(attrs) if attrs else {}
    service = (
        _cut(attrs.get("service.name")),
        _cut(attrs.get("service.instance.id"), MAX_ID_LENGTH),
    )
    if len(_SERVICES) >= 64:
        _SERVICES.clear()
    _SERVICES[id(resource)] = (resource, service)
    return service


def span_to_record(span: SpanLike) -> CallRecord | None:
    """Map a finished GenAI span to a CallRecord; None for non-GenAI or unfinished spans."""
    attrs = span.attributes
    start_time = span.start_time
    end_time = span.end_time
    if not attrs or start_time is None or end_time is None:
        return None
    attrs = _plain(attrs)
    if not (
        semconv.OPERATION_NAME in attrs
        or semconv.PROVIDER_NAME in attrs
        or semconv.LEGACY_SYSTEM in attrs
    ):
        return None
    if semconv.OTELSTATS_DUPLICATE_OF in attrs:  # otelstats' own span of that call is the record
        return None
    get = attrs.get
    context = getattr(span, "context", None)
    service = _service(getattr(span, "resource", None))

    value = get(semconv.USAGE_INPUT_TOKENS)
    input_tokens = _small_count(
        value if value is not None else get(semconv.LEGACY_USAGE_PROMPT_TOKENS)
    )
    value = get(semconv.USAGE_OUTPUT_TOKENS)
    output_tokens = _small_count(
        value if value is not None else get(semconv.LEGACY_USAGE_COMPLETION_TOKENS)
    )
    tokens_source: TokensSource
    if input_tokens is None and output_tokens is None:
        tokens_source = "none"
    elif get(semconv.OTELSTATS_TOKENS_SOURCE) == "counted":
        tokens_source = "counted"
    else:
        tokens_source = "reported"

    # Text is cut first and made storable only when something needs it: one C scan over all
    # of a span's strings replaces a scrub per string (the common span is plain ASCII).
    value = get(semconv.RESPONSE_MODEL)
    response_model = _cut(value if value is not None else get(semconv.LEGACY_OPENAI_RESPONSE_MODEL))
    value = get(semconv.PROVIDER_NAME)
    texts = [
        _cut(get(semconv.OPERATION_NAME)),
        _cut(value if value is not None else get(semconv.LEGACY_SYSTEM)),
        _cut(get(semconv.REQUEST_MODEL)),
        response_model,
        _cut(get(semconv.SERVER_ADDRESS)),
        _cut(get(semconv.ERROR_TYPE)),
        _cut(get(semconv.CONVERSATION_ID), MAX_ID_LENGTH),
        *service,
    ]
    finish_reasons = _finish_reasons(get(semconv.RESPONSE_FINISH_REASONS))
    probe = "".join(filter(None, texts)) + "".join(finish_reasons)
    if not probe.isascii() or "\x00" in probe:
        texts = [None if t is None else _storable(t) for t in texts]
        finish_reasons = tuple(_storable(r) for r in finish_reasons)
    operation, provider, request_model, response_model, address, error_type, conv, *names = texts

    port = _small_count(get(semconv.SERVER_PORT))
    return CallRecord(
        trace_id=_hex_id(getattr(context, "trace_id", 0), 32),
        span_id=_hex_id(getattr(context, "span_id", 0), 16),
        start_ns=int(start_time),
        end_ns=max(int(end_time), int(start_time)),
        operation=operation or semconv.OPERATION_CHAT,
        provider=provider or "unknown",
        request_model=request_model,
        response_model=response_model,
        server_address=address,
        server_port=port if port is not None and port <= 65535 else None,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        tokens_source=tokens_source,
        cached_input_tokens=_small_count(get(semconv.USAGE_CACHE_READ_INPUT_TOKENS)),
        reasoning_tokens=_small_count(get(semconv.USAGE_REASONING_OUTPUT_TOKENS)),
        streaming=get(semconv.REQUEST_STREAM) is True,
        time_to_first_chunk_s=_seconds(get(semconv.RESPONSE_TIME_TO_FIRST_CHUNK)),
        finish_reasons=finish_reasons,
        outcome=_outcome(attrs, span, error_type),
        error_type=error_type,
        conversation_id=conv,
        service_name=names[0],
        service_instance_id=names[1],
    )
