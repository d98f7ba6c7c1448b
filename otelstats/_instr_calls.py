"""The wrappers around the SDK's request methods: start a call, run the user's request, hand back
the same object (streams and raw responses proxied), end the call.

Every piece of otelstats' own work runs inside `try/except Exception` and falls back to calling the
SDK untouched; the user's own exceptions pass through as the very same object.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import wrapt
from opentelemetry.context import get_current
from opentelemetry.trace import get_current_span

from . import semconv
from ._background import park_answer
from ._instr_telemetry import Call, Server, Telemetry, timings_attributes, usage_attributes
from ._long_strings import captured
from ._parked import WAITING
from ._responses_state import ResponsesState, response_outcome
from ._stream_proxies import AsyncStreamProxy, SyncStreamProxy
from ._streams import ChatState, CompletionState, StreamState
from .conversation import resolve as resolve_conversation
from .records import Outcome
from .usage_request import may_refuse_usage, sends_usage_unasked, with_usage

RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
_ACTIVE: ContextVar[Call | None] = ContextVar("otelstats_active_call", default=None)
"""Our call while a wrapped call runs: an SDK method calling another wrapped one is not a second
call, and another instrumentation's span started inside it is a duplicate (`_coexist`)."""


def active_call() -> Call | None:
    return _ACTIVE.get()


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


def _retry_without_usage(prepared: Prepared, exc: BaseException) -> bool:
    """True when the server may have refused the `stream_options` otelstats added (a 400 or 422,
    `usage_request.may_refuse_usage`): the call is then sent once more exactly as the user
    asked. Only if the retry succeeds was it the option the server refused, and only then is the
    server remembered (`_refused_usage`); otherwise the user gets their request's error."""
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


def _refused_usage(telemetry: Telemetry, prepared: Prepared) -> None:
    """The request went through without the `stream_options` otelstats added: never ask that
    server again."""
    telemetry.not_asked_usage.add(prepared.base_url)


_NOT_OBJECTS = (str, bytes, list, int, float)
"""What the SDK returns in place of a model for a 200 body that is not a JSON object: the body's
text (a web page, an empty body), or the JSON value as it came."""


def finish_object(call: Call, endpoint: Endpoint, result: Any, capture: bool) -> None:
    """End a non-streamed call from the SDK's parsed object."""
    if result is None or isinstance(result, _NOT_OBJECTS):
        # Not the API's object: what the SDK hands back for a body that was not one.
        call.end("error", {semconv.ERROR_TYPE: semconv.NOT_AN_ANSWER})
        return
    attrs = usage_attributes(getattr(result, "usage", None))
    extra = getattr(result, "__pydantic_extra__", None)
    if extra:  # fields beyond the SDK's: the server's JSON as it came
        if "timings" in extra:  # llama.cpp's server-measured speeds
            attrs.update(timings_attributes(extra["timings"]))
        if "error" in extra:  # a failure reported in a 200 answer (OpenRouter)
            error_type = semconv.answered_error(extra["error"])
            if error_type is not None:
                attrs[semconv.ERROR_TYPE] = error_type
    model = getattr(result, "model", None)
    if isinstance(model, str) and model:
        attrs[semconv.RESPONSE_MODEL] = model
    rid = getattr(result, "id", None)
    if isinstance(rid, str) and rid:
        attrs[semconv.RESPONSE_ID] = rid
    if endpoint is RESPONSES:
        attrs.update(response_outcome(result))
        if capture:
            attrs[semconv.OUTPUT_MESSAGES] = captured([getattr(result, "output_text", None)])
    else:
        choices = getattr(result, "choices", None) or ()
        reasons = [c.finish_reason for c in choices if getattr(c, "finish_reason", None)]
        if reasons:
            attrs[semconv.RESPONSE_FINISH_REASONS] = reasons
        if capture and choices:
            attrs[semconv.OUTPUT_MESSAGES] = captured([_answer(c) for c in choices])
    if semconv.ERROR_TYPE in attrs:
        call.end("error", attrs)
    elif not (
        endpoint is RESPONSES
        and getattr(result, "status", None) in WAITING
        and park_answer(call, result, attrs)
    ):
        call.end("ok", attrs)


def _answer(choice: Any) -> Any:
    """A choice's text: a chat message's content, or a legacy completion's text."""
    message = getattr(choice, "message", None)
    return (
        getattr(message, "content", None) if message is not None else getattr(choice, "text", None)
    )


class RawResponseProxy(wrapt.ObjectProxy[Any]):
    """`with_raw_response` / `with_streaming_response`: the body is the user's. Usage is read
    only from what the user's own `.parse()` returns; otherwise the call ends on close."""

    def __init__(self, wrapped: Any, prepared: Prepared, endpoint: Endpoint, telemetry: Telemetry):
        super().__init__(wrapped)
        self._self_prepared = prepared
        self._self_endpoint = endpoint
        self._self_telemetry = telemetry
        self._self_streamed = False
        """A stream was parsed from it: that stream's end is the call's, not this object's."""

    def _self_parsed(self, parsed: Any) -> Any:
        call = self._self_prepared.call
        if call.done:
            return parsed
        try:
            endpoint = self._self_endpoint
            if self._self_prepared.stream and endpoint.state is not None:
                state = endpoint.state(call)
                if hasattr(parsed, "__anext__"):
                    self._self_streamed = True
                    return AsyncStreamProxy(parsed, state)
                if hasattr(parsed, "__next__"):
                    self._self_streamed = True
                    return SyncStreamProxy(parsed, state)
            finish_object(call, endpoint, parsed, self._self_telemetry.options.capture_content)
        except Exception:
            self._self_telemetry.internal_error("reading a raw response")
        return parsed

    def __repr__(self) -> str:
        return repr(self.__wrapped__)

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        parsed = self.__wrapped__.parse(*args, **kwargs)
        if hasattr(parsed, "__await__"):
            return self._self_parse_async(parsed)
        return self._self_parsed(parsed)

    async def _self_parse_async(self, pending: Awaitable[Any]) -> Any:
        return self._self_parsed(await pending)

    def _self_closed(self) -> None:
        call = self._self_prepared.call
        if not call.done and not self._self_streamed:
            call.end("ok", {semconv.OTELSTATS_TOKENS_SOURCE: "none"})

    def close(self) -> Any:
        try:
            return self.__wrapped__.close()
        finally:
            self._self_closed()

    def __del__(self) -> None:
        self._self_closed()


def wrap_result(telemetry: Telemetry, endpoint: Endpoint, prepared: Prepared, result: Any) -> Any:
    """What the user gets back: the SDK's own object, or a proxy that forwards everything."""
    try:
        call = prepared.call
        if prepared.raw:
            return RawResponseProxy(result, prepared, endpoint, telemetry)
        if prepared.stream and endpoint.state is not None:
            state = endpoint.state(call, hide_usage=prepared.hide_usage)
            if hasattr(result, "__anext__"):
                return AsyncStreamProxy(result, state)
            if hasattr(result, "__next__"):
                return SyncStreamProxy(result, state)
        finish_object(call, endpoint, result, telemetry.options.capture_content)
    except Exception:
        telemetry.internal_error("wrapping a result")
    return result


Describe = Callable[[Any, Any, Any], "Prepared | None"]
"""What a wrapped method's call is: (instance, args, kwargs) -> the call prepared, or None when
it is no call of ours (`resource_call`, `posted`)."""


def resource_call(telemetry: Telemetry, endpoint: Endpoint) -> Describe:
    """A create / parse method of an SDK resource: every call is one of `endpoint`."""

    def describe(instance: Any, args: Any, kwargs: Any) -> Prepared:
        return Prepared(telemetry, endpoint, getattr(instance, "_client", None), kwargs)

    return describe


_POSTED = (
    ("/chat/completions", CHAT),
    ("/completions", TEXT_COMPLETION),
    ("/embeddings", EMBEDDINGS),
    ("/responses", RESPONSES),
    ("/responses/compact", COMPACTION),
)
"""The posted paths that are calls (the SDK's `responses.compact`, stable and beta, has no
create method of its own to wrap: its post is the call)."""


def posted(telemetry: Telemetry) -> Describe:
    """The SDK client's own `post`, called without a create method, as LiteLLM calls it
    (`client.post("/chat/completions", body=..., options=..., stream=...)`): a call when its
    path is one of the instrumented APIs. Its body is the caller's, sent as it is (no usage is
    asked for); a call made through a create method is that method's (`_ACTIVE`)."""

    def describe(instance: Any, args: Any, kwargs: Any) -> Prepared | None:
        path = args[0] if args else kwargs.get("path")
        body = kwargs.get("body")
        if type(path) is not str or not isinstance(body, Mapping):
            return None
        path = path.partition("?")[0].rstrip("/")
        endpoint = next((e for suffix, e in _POSTED if path.endswith(suffix)), None)
        if endpoint is None:
            return None
        options = kwargs.get("options")
        headers = options.get("headers") if isinstance(options, Mapping) else None
        request = {**body, "stream": kwargs.get("stream", False), "extra_headers": headers}
        return Prepared(telemetry, endpoint, instance, kwargs, request)

    return describe


def _prepare(
    telemetry: Telemetry, describe: Describe, instance: Any, args: Any, kwargs: Any
) -> Any:
    if _ACTIVE.get() is not None:
        return None
    try:
        return describe(instance, args, kwargs)
    except Exception:
        telemetry.internal_error("starting a call")
        return None


def _failed(telemetry: Telemetry, prepared: Prepared, exc: BaseException) -> None:
    try:
        outcome: Outcome = "error" if isinstance(exc, Exception) else "cancelled"
        prepared.call.end(outcome, {}, error=exc)
    except Exception:
        telemetry.internal_error("recording an error")


def sync_wrapper(telemetry: Telemetry, describe: Describe) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        prepared = _prepare(telemetry, describe, instance, args, kwargs)
        if prepared is None:
            return wrapped(*args, **kwargs)
        token = _ACTIVE.set(prepared.call)
        try:
            retry = False
            try:
                result = wrapped(*args, **prepared.kwargs)
            except Exception as exc:
                if not _retry_without_usage(prepared, exc):
                    raise
                retry = True
            if retry:
                # Outside the `except`: an error of the retry is not chained to the first one.
                result = wrapped(*args, **kwargs)  # once more, exactly as the user asked
                _refused_usage(telemetry, prepared)
        except BaseException as exc:
            _failed(telemetry, prepared, exc)
            raise
        finally:
            _ACTIVE.reset(token)
        return wrap_result(telemetry, prepared.endpoint, prepared, result)

    return wrapper


def async_wrapper(telemetry: Telemetry, describe: Describe) -> Callable[..., Any]:
    async def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        prepared = _prepare(telemetry, describe, instance, args, kwargs)
        if prepared is None:
            return await wrapped(*args, **kwargs)
        token = _ACTIVE.set(prepared.call)
        try:
            retry = False
            try:
                result = await wrapped(*args, **prepared.kwargs)
            except Exception as exc:
                if not _retry_without_usage(prepared, exc):
                    raise
                retry = True
            if retry:
                result = await wrapped(*args, **kwargs)
                _refused_usage(telemetry, prepared)
        except BaseException as exc:
            _failed(telemetry, prepared, exc)
            raise
        finally:
            _ACTIVE.reset(token)
        return wrap_result(telemetry, prepared.endpoint, prepared, result)

    return wrapper


def outside_calls(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """`wrapper`, skipped without a frame of ours while a call of ours runs: the SDK's own
    `post` of a create method's call (every call's) goes straight to the SDK. For the async
    `post` this decides when the coroutine is made, as the SDK awaits it at once: the create
    call's own post is then the SDK's coroutine itself, with no coroutine of ours around it."""

    def skipping(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if _ACTIVE.get() is not None:
            return wrapped(*args, **kwargs)
        return wrapper(wrapped, instance, args, kwargs)

    return skipping
