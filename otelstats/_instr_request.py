"""What the wrappers know of one SDK request before it is sent: which endpoint it is
(`Endpoint`), the client's server, and `Prepared` (the call's attributes, its conversation, the
usage request otelstats adds to a stream and the one retry without it).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import get_current
from opentelemetry.trace import get_current_span

from . import semconv
from ._instr_telemetry import Call, Server, Telemetry
from ._long_strings import captured
from ._responses_state import ResponsesState
from ._streams import ChatState, CompletionState, StreamState
from .conversation import resolve as resolve_conversation
from .usage_request import may_refuse_usage, sends_usage_unasked, with_usage

RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
_OMITTED = frozenset({"Omit", "NotGiven"})


def omitted(value: Any) -> bool:
    """An argument the caller left out: the SDK's `omit` / `NOT_GIVEN` default (by class name,
    which every SDK version since 1.0 has kept)."""
    return type(value).__name__ in _OMITTED


@dataclass(frozen=True)
class Endpoint:
    operation: str
    state: type[StreamState] | None
    """How to read its stream (None: never streams)."""
    injects_usage: bool = False
    remember: bool = False


CHAT = Endpoint(semconv.OPERATION_CHAT, ChatState, injects_usage=True)
TEXT_COMPLETION = Endpoint(semconv.OPERATION_TEXT_COMPLETION, CompletionState, injects_usage=True)
EMBEDDINGS = Endpoint(semconv.OPERATION_EMBEDDINGS, None)
RESPONSES = Endpoint(semconv.OPERATION_CHAT, ResponsesState, remember=True)
COMPACTION = Endpoint(semconv.OPERATION_CHAT, None)
"""`responses.compact`: a model pass over the conversation, billed by its usage; never streams."""


def _server(telemetry: Telemetry, client: Any) -> Server:
    """The SDK client's `Server`, parsed once per base URL object."""
    # The attribute behind the SDK's `base_url` property, when it has one: the property imports
    # a module on every read (~0.9 µs a call in openai 3.x).
    url = getattr(client, "__dict__", {}).get("_base_url")
    if url is None:
        url = getattr(client, "base_url", None)
    if url is None:
        return None, None, "", semconv.PROVIDER_OPENAI
    cache = telemetry.servers
    found = cache.get(id(url))
    if found is not None and found[0] is url:  # the same object, not a recycled id
        return found[1]
    host = getattr(url, "host", None)
    port = getattr(url, "port", None)
    if port is None:
        scheme = getattr(url, "scheme", "")
        port = 443 if scheme == "https" else 80 if scheme == "http" else None
    server = (host or None, port, str(url), _provider(client, host, getattr(url, "path", "")))
    if sends_usage_unasked(server[0]):
        telemetry.not_asked_usage.add(server[2])
    if len(cache) >= 64:
        cache.clear()
    cache[id(url)] = (url, server)
    return server


def _provider(client: Any, host: Any, path: Any) -> str:
    """Azure OpenAI for the SDK's Azure clients (whatever their address: an API gateway's
    too), else by the address (`semconv.provider_name`)."""
    azure = sys.modules.get("openai.lib.azure")  # imported if the app made an Azure client
    base = getattr(azure, "BaseAzureClient", None)
    if isinstance(base, type) and isinstance(client, base):
        return semconv.PROVIDER_AZURE_OPENAI
    return semconv.provider_name(
        host if isinstance(host, str) else None, path if isinstance(path, str) else ""
    )


def _model(value: Any) -> str | None:
    """The model as the SDK sends it: a str subclass (an Enum of model names) as its text,
    which is what the server receives; anything else is none."""
    if isinstance(value, str):
        return str.__str__(value) or None
    return None


def _asking_usage(kwargs: Any) -> dict[str, Any] | None:
    """The kwargs to send instead of the caller's `kwargs`, asking a stream for usage; None when
    the caller's must go as they are.

    The ask travels in `extra_body`, which every SDK version sends as it is, merged (shallowly)
    over the request: openai before 1.26 has no `stream_options` argument and would raise
    TypeError on one. A caller's own `stream_options` argument is kept, with `include_usage`
    added (`with_usage`); one in the caller's `extra_body` already wins over any argument, so the
    usage chunk the server may send is one the caller asked for."""
    extra = kwargs.get("extra_body")
    if extra is None:
        extra = {}
    elif not isinstance(extra, Mapping) or "stream_options" in extra:
        return None
    sent = with_usage(kwargs.get("stream_options"))
    if sent is None:
        return None
    return {**kwargs, "extra_body": {**extra, "stream_options": sent}}


class Prepared:
    """A call about to run: its Call and the kwargs to send (maybe with usage requested)."""

    __slots__ = ("base_url", "call", "endpoint", "hide_usage", "kwargs", "raw", "stream")

    def __init__(
        self,
        telemetry: Telemetry,
        endpoint: Endpoint,
        client: Any,
        kwargs: Any,
        request: Any = None,
    ) -> None:
        """`kwargs`: the wrapped method's; `request`: the request they make, in the names of a
        create method's arguments, when they are not those (`posted`)."""
        self.endpoint = endpoint
        self.kwargs = kwargs
        self.hide_usage = False
        if request is None:
            request = kwargs
        options = telemetry.options
        model = request.get("model")
        if type(model) is not str:
            model = _model(model)
        host, port, self.base_url, provider = _server(telemetry, client)
        headers = request.get("extra_headers")
        self.raw = (  # `is not None` first: an ABC check costs more than the rest of this line
            headers is not None
            and isinstance(headers, Mapping)
            and bool(headers.get(RAW_RESPONSE_HEADER))
        )
        stream = request.get("stream")
        # The SDK streams on any true value (`stream or False`); its NOT_GIVEN / omit are false.
        self.stream = stream is True or (
            stream is not None and stream is not False and bool(stream)
        )
        attrs: dict[str, Any] = {
            semconv.OPERATION_NAME: endpoint.operation,
            semconv.PROVIDER_NAME: provider,
        }
        if self.stream:  # absent reads as not streamed (one attribute less per call)
            attrs[semconv.REQUEST_STREAM] = True
        if model:
            attrs[semconv.REQUEST_MODEL] = model
        if host:
            attrs[semconv.SERVER_ADDRESS] = host
        if port is not None:
            attrs[semconv.SERVER_PORT] = port
        n = request.get("n")
        if isinstance(n, int) and not isinstance(n, bool) and n != 1:
            attrs[semconv.REQUEST_CHOICE_COUNT] = n
        context = get_current()
        current = get_current_span(context)
        if endpoint is not EMBEDDINGS:
            chains = telemetry.response_chains if endpoint.remember else None
            conv = resolve_conversation(
                request, options.conversation_salt, chains, current, context
            )
            if conv:
                attrs[semconv.CONVERSATION_ID] = conv
        if options.capture_content:
            messages = request.get("messages", request.get("input", request.get("prompt")))
            if isinstance(messages, (list, tuple, str)):
                attrs[semconv.INPUT_MESSAGES] = captured(messages)
        if (
            request is kwargs  # a create method's: the request is sent as its arguments say
            and endpoint.injects_usage
            and self.stream
            and not self.raw
            and options.stream_usage
            and self.base_url not in telemetry.not_asked_usage
        ):
            asking = _asking_usage(kwargs)
            if asking is not None:
                self.kwargs = asking
                self.hide_usage = True
        self.call: Call = telemetry.start(endpoint.operation, model, attrs, context, current)
        self.call.remember = endpoint.remember


def retry_without_usage(prepared: Prepared, exc: BaseException) -> bool:
    """True when the server may have refused the `stream_options` otelstats added (a 400 or 422,
    `usage_request.may_refuse_usage`): the call is then sent once more exactly as the user
    asked. Only if the retry succeeds was it the option the server refused, and only then is the
    server remembered (`refused_usage`); otherwise the user gets their request's error."""
    if not (prepared.hide_usage and getattr(exc, "status_code", None) in (400, 422)):
        return False
    try:
        body = exc.response.text  # type: ignore[attr-defined]
    except Exception:
        body = ""  # unreadable: it names nothing
    if not may_refuse_usage(body):
        return False
    prepared.hide_usage = False
    return True


def refused_usage(telemetry: Telemetry, prepared: Prepared) -> None:
    """The request went through without the `stream_options` otelstats added: never ask that
    server again."""
    telemetry.not_asked_usage.add(prepared.base_url)
