"""OTLP/HTTP trace receiver: `POST /v1/traces` (protobuf or JSON, optionally gzip) for `serve`.

Spans are rebuilt as SDK ReadableSpans and mapped by `records.span_to_record`, like any other
source. A request is checked whole before anything is written, and written in one transaction:
a malformed payload is refused with a 4xx and writes nothing. Replies follow the OTLP/HTTP spec
(same content type as the request; `partial_success` when some spans were rejected).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import zlib
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, request
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StorageError
from ..records import span_to_record
from ..web import get_settings, get_store

log = logging.getLogger(__name__)

bp = Blueprint("otlp", __name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
"""Largest body as sent (compressed or not). App config OTLP_MAX_BODY_BYTES overrides it."""
MAX_DECODED_BYTES = 32 * 1024 * 1024
"""Largest body after gzip decompression (defeats zip bombs). Config: OTLP_MAX_DECODED_BYTES."""
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
_STATUS_CODES = {1: StatusCode.OK, 2: StatusCode.ERROR}
_KINDS = {
    ProtoSpan.SPAN_KIND_SERVER: SpanKind.SERVER,
    ProtoSpan.SPAN_KIND_CLIENT: SpanKind.CLIENT,
    ProtoSpan.SPAN_KIND_PRODUCER: SpanKind.PRODUCER,
    ProtoSpan.SPAN_KIND_CONSUMER: SpanKind.CONSUMER,
}


class Refused(Exception):
    """The request as a whole cannot be accepted: (HTTP status, message for the sender)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_GRPC_CODES = {400: 3, 401: 16, 403: 7, 413: 8, 415: 3, 503: 14}
"""HTTP status → google.rpc.Code: INVALID_ARGUMENT, UNAUTHENTICATED, RESOURCE_EXHAUSTED …"""


def _status_proto(status: int, message: str) -> bytes:
    """A google.rpc.Status (code = 1, message = 2) encoded by hand: no extra dependency."""
    text = message.encode()
    code = _GRPC_CODES.get(status, 2)  # 2 = UNKNOWN
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _reply_error(status: int, message: str, proto: bool) -> Response:
    if proto:
        body = _status_proto(status, message)
        resp = Response(body, status=status, mimetype=PROTOBUF)
    else:
        resp = Response(json.dumps({"code": status, "message": message}), status, mimetype=JSON)
    if status in {429, 502, 503, 504}:
        resp.headers["Retry-After"] = "5"  # the spec's retryable codes: the exporter backs off
    return resp


def _authorized(token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def _cross_site() -> str | None:
    """Why this request comes from another site's web page, or None (exporters send neither)."""
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if site in {"cross-site", "same-site"}:
        return f"Sec-Fetch-Site: {site}"
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin.strip()).netloc.lower() != request.host.lower():
        return "Origin " + origin[:100]  # "null" (sandboxed pages) has no netloc: refused too
    return None


def _read_body() -> bytes:
    limit = int(current_app.config.get("OTLP_MAX_BODY_BYTES", MAX_BODY_BYTES))
    decoded_limit = int(current_app.config.get("OTLP_MAX_DECODED_BYTES", MAX_DECODED_BYTES))
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, f"request body of {request.content_length} bytes exceeds {limit}")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise Refused(413, f"request body exceeds {limit} bytes")
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in {"", "identity"}:
        return body
    if encoding != "gzip":
        raise Refused(415, f"unsupported Content-Encoding {encoding[:40]!r}: use gzip or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, decoded_limit + 1)
    except zlib.error as exc:
        raise Refused(400, f"body is not valid gzip: {exc}") from None
    if len(data) > decoded_limit:
        raise Refused(413, f"decompressed body exceeds {decoded_limit} bytes")
    if not inflater.eof:
        raise Refused(400, "gzip body is truncated")
    return data


def _hex_to_base64(value: Any) -> Any:
    """OTLP/JSON ids are hex (not protobuf-JSON base64); a bad id becomes empty → span rejected."""
    if not isinstance(value, str):
        return value
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        return ""


def _decode(body: bytes, proto: bool) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    if proto:
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            raise Refused(400, f"body is not an OTLP ExportTraceServiceRequest: {exc}") from None
        return message
    try:
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise Refused(400, "OTLP/JSON body must be a JSON object")
        for resource_spans in payload.get("resourceSpans") or ():
            for scope_spans in resource_spans.get("scopeSpans") or ():
                for span in scope_spans.get("spans") or ():
                    for name in _ID_FIELDS:
                        if name in span:
                            span[name] = _hex_to_base64(span[name])
        json_format.ParseDict(payload, message, ignore_unknown_fields=True)
    except (ValueError, AttributeError, TypeError, RecursionError, json_format.ParseError) as exc:
        raise Refused(400, f"body is not OTLP/JSON: {str(exc)[:300]}") from None
    return message


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind in {"string_value", "bool_value", "int_value", "double_value"}:
        return getattr(value, kind)
    if kind == "array_value":
        items = [_value(v) for v in value.array_value.values]
        return tuple(v for v in items if isinstance(v, (str, bool, int, float)))
    return None  # kvlist and bytes have no place in span attributes; ignored


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for pair in pairs:
        value = _value(pair.value)
        if pair.key and value is not None:
            attrs[pair.key] = value
    return attrs


def _problem(span: ProtoSpan) -> str | None:
    if len(span.trace_id) != 16 or not any(span.trace_id):
        return "invalid trace_id"
    if len(span.span_id) != 8 or not any(span.span_id):
        return "invalid span_id"
    if span.start_time_unix_nano == 0 or span.end_time_unix_nano < span.start_time_unix_nano:
        return "invalid start/end time"
    return None


def rebuild_spans(message: ExportTraceServiceRequest) -> tuple[list[ReadableSpan], int, str]:
    """(spans, number rejected, why the first was rejected) of one export request."""
    spans: list[ReadableSpan] = []
    rejected = 0
    reason = ""
    for resource_spans in message.resource_spans:
        resource = Resource(_attributes(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                problem = _problem(span)
                if problem is not None:
                    rejected += 1
                    reason = reason or problem
                    continue
                status = _STATUS_CODES.get(span.status.code, StatusCode.UNSET)
                spans.append(
                    ReadableSpan(
                        name=span.name[:256],
                        context=SpanContext(
                            int.from_bytes(span.trace_id, "big"),
                            int.from_bytes(span.span_id, "big"),
                            is_remote=True,
                        ),
                        attributes=_attributes(span.attributes),
                        resource=resource,
                        status=Status(
                            status,
                            span.status.message[:256] if status is StatusCode.ERROR else None,
                        ),
                        start_time=span.start_time_unix_nano,
                        end_time=span.end_time_unix_nano,
                        kind=_KINDS.get(span.kind, SpanKind.INTERNAL),
                    )
                )
    return spans, rejected, reason


def _reply(proto: bool, rejected: int, reason: str) -> Response:
    answer = ExportTraceServiceResponse()
    if rejected:
        answer.partial_success.rejected_spans = rejected
        answer.partial_success.error_message = f"{rejected} span(s) rejected: {reason}"
    if proto:
        return Response(answer.SerializeToString(), 200, mimetype=PROTOBUF)
    body: Mapping[str, Any] = json_format.MessageToDict(answer)
    return Response(json.dumps(body), 200, mimetype=JSON)


@bp.post("/v1/traces")
def traces() -> Response:
    mimetype = request.mimetype
    proto = mimetype == PROTOBUF
    if mimetype not in {PROTOBUF, JSON}:
        # Only these two: a cross-site form cannot send them without a CORS preflight.
        return _reply_error(415, f"Content-Type must be {PROTOBUF} or {JSON}", False)
    why = _cross_site()
    if why is not None:
        # A page on another site (or another local port) must not write statistics.
        return _reply_error(403, f"cross-site request refused ({why})", proto)
    token = get_settings().token
    if token and not _authorized(token):
        return _reply_error(401, "missing or wrong bearer token (OTELSTATS_TOKEN)", proto)
    try:
        message = _decode(_read_body(), proto)
    except Refused as exc:
        return _reply_error(exc.status, str(exc), proto)
    spans, rejected, reason = rebuild_spans(message)
    records = [r for r in map(span_to_record, spans) if r is not None]
    if records:
        store = get_store()
        try:
            store.write(records)
        except (StorageError, SQLAlchemyError) as exc:
            log.error("OTLP: cannot write to %s: %s", store.describe(), exc.__class__.__name__)
            return _reply_error(503, "the database is unavailable; retry later", proto)
    return _reply(proto, rejected, reason)
