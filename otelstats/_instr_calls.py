"""The wrappers around the SDK's request methods: start a call, run the user's request, hand back
the same object (streams and raw responses proxied), end the call.

Every piece of otelstats' own work runs inside `try/except Exception` and falls back to calling the
SDK untouched; the user's own exceptions pass through as the very same object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

import wrapt

from . import semconv
from ._background import park_answer
from ._instr_request import (
    CHAT,
    COMPACTION,
    EMBEDDINGS,
    RESPONSES,
    TEXT_COMPLETION,
    Endpoint,
    Prepared,
    refused_usage,
    retry_without_usage,
)
from ._instr_telemetry import Call, Telemetry
from ._long_strings import captured
from ._parked import WAITING
from ._responses_state import response_outcome
from ._stream_proxies import AsyncStreamProxy, SyncStreamProxy
from ._usage import timings_attributes, usage_attributes
from .records import Outcome

_ACTIVE: ContextVar[Call | None] = ContextVar("otelstats_active_call", default=None)
"""Our call while a wrapped call runs: an SDK method calling another wrapped one is not a second
call, and another instrumentation's span started inside it is a duplicate (`_coexist`)."""


def active_call() -> Call | None:
    return _ACTIVE.get()


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
                if not retry_without_usage(prepared, exc):
                    raise
                retry = True
            if retry:
                # Outside the `except`: an error of the retry is not chained to the first one.
                result = wrapped(*args, **kwargs)  # once more, exactly as the user asked
                refused_usage(telemetry, prepared)
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
                if not retry_without_usage(prepared, exc):
                    raise
                retry = True
            if retry:
                result = await wrapped(*args, **kwargs)
                refused_usage(telemetry, prepared)
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
