"""Background responses (`responses.create(background=True)`): one call, from the create to the
response's end, whichever way the app learns of that end.

A background create returns at once, the response `queued` or `in_progress`, with no output and no
usage; or its stream may be cut, or left, while the response goes on at the server. The app
then polls (`responses.retrieve(id)`), resumes the stream (`responses.retrieve(id, stream=True,
starting_after=n)` or `responses.stream(response_id=id)`) or cancels (`responses.cancel(id)`).
The call stays open meanwhile (`_parked`); the first follow-up that shows the response finished
ends it with the response's usage and outcome, and a resumed stream is read as the rest of the
first one. One the server no longer has (a follow-up answered 404: expired, or deleted by
another process; or deleted by this app) will never be seen to end: its call is recorded as it
stood when last seen, at once. The follow-ups themselves are not calls: they cost no tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import semconv
from ._instr_request import omitted
from ._instr_telemetry import Call, Telemetry
from ._parked import WAITING
from ._responses_state import ResponsesState
from ._stream_proxies import AsyncStreamProxy, SyncStreamProxy

FOLLOW_UPS = (
    ("openai.resources.responses.responses", "Responses", False),
    ("openai.resources.responses.responses", "AsyncResponses", True),
    ("openai.resources.beta.responses.responses", "Responses", False),
    ("openai.resources.beta.responses.responses", "AsyncResponses", True),
)
"""(module, class, is_async): the SDK's Responses resources, whose `retrieve`, `cancel` and
`delete` are followed (the `responses.stream(response_id=...)` helper resumes through
`retrieve`)."""
FOLLOWED = ("retrieve", "cancel", "delete")


def park_answer(call: Call, response: Any, attributes: dict[str, Any]) -> bool:
    """A background create's answer, the response still to come: keep the call open under the
    response's id, as it stands (`attributes`). False: not kept (no id, or at exit)."""
    response_id = attributes.get(semconv.RESPONSE_ID)
    if not isinstance(response_id, str):
        return False
    state = ResponsesState(call)
    state.background = True
    state.response_id = response_id
    extra = state.extra
    extra.update(attributes)
    state.model = extra.pop(semconv.RESPONSE_MODEL, None)
    extra.pop(semconv.OUTPUT_MESSAGES, None)  # no output yet
    telemetry = call.telemetry
    telemetry.unfinished.pop(id(state), None)  # open as a parked call, or not at all
    if telemetry.parked.park(response_id, state, "ok"):
        # Its conversation is known now: a next turn on it (`previous_response_id`) may come
        # before this process sees its end, or without it (another process polls).
        conversation_id = call.attributes.get(semconv.CONVERSATION_ID)
        if call.remember and isinstance(conversation_id, str):
            telemetry.response_chains.remember(response_id, conversation_id)
        return True
    return False


def _followed(telemetry: Telemetry, args: Any, kwargs: Any, result: Any) -> Any:
    """What a `retrieve` / `cancel` returned, seen: it may end, or resume, a parked call."""
    response_id = _response_id(args, kwargs)
    parked_calls = telemetry.parked
    if type(response_id) is not str or response_id not in parked_calls:
        return result
    try:
        if hasattr(result, "__next__") or hasattr(result, "__anext__"):
            parked = parked_calls.take(response_id)
            if parked is None:
                return result
            state: ResponsesState = parked.state
            if _from_the_start(kwargs.get("starting_after")):
                state.replayed()
            telemetry.unfinished[id(state)] = state
            if hasattr(result, "__anext__"):
                return AsyncStreamProxy(result, state)
            return SyncStreamProxy(result, state)
        if getattr(result, "object", None) != "response":
            return result  # a raw response: its body is the user's to read
        if getattr(result, "status", None) in WAITING:
            return result
        parked = parked_calls.take(response_id)
        if parked is not None:
            parked.state.settle(result, parked.since)
    except Exception:
        telemetry.internal_error("following a background response")
    return result


def _from_the_start(starting_after: Any) -> bool:
    """A resumed stream without a cursor (None, or the SDK's omitted value) replays every
    event."""
    return starting_after is None or omitted(starting_after)


def _response_id(args: Any, kwargs: Any) -> Any:
    return args[0] if args else kwargs.get("response_id")


def _gone(telemetry: Telemetry, args: Any, kwargs: Any, error: BaseException | None) -> None:
    """A follow-up answered 404 (`error`: the response expired or was deleted at the server), or
    a delete succeeded (`error` None): that response's end will never be seen."""
    if error is not None and getattr(error, "status_code", None) != 404:
        return
    response_id = _response_id(args, kwargs)
    if type(response_id) is str and response_id in telemetry.parked:
        try:
            telemetry.parked.gone(response_id)
        except Exception:
            telemetry.internal_error("giving up a background response")


def _cancelled_while_read(telemetry: Telemetry, args: Any, kwargs: Any, result: Any) -> None:
    """A cancel of a background response that is not parked: its stream may be being read here
    (a chat app's stop button), and then ends cancelled (`ParkedResponses.cancelled`)."""
    if getattr(result, "object", None) != "response":
        return  # a raw response: its body is the user's to read
    response_id = _response_id(args, kwargs)
    if (
        getattr(result, "status", None) == "cancelled"
        and type(response_id) is str
        and response_id not in telemetry.parked
    ):
        telemetry.parked.cancelled(response_id, result)


def _seen(telemetry: Telemetry, method: str, args: Any, kwargs: Any, result: Any) -> Any:
    if method == "delete":
        if telemetry.parked:
            _gone(telemetry, args, kwargs, None)
        return result
    if method == "cancel":
        _cancelled_while_read(telemetry, args, kwargs, result)
    if not telemetry.parked:
        return result
    return _followed(telemetry, args, kwargs, result)


def follow_up(telemetry: Telemetry, is_async: bool, method: str) -> Callable[..., Any]:
    """A wrapper of `retrieve` / `cancel` / `delete`: the SDK's call as it is, then what it
    returned (or raised) seen. With nothing parked it costs one check."""
    if is_async:

        async def async_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            try:
                result = await wrapped(*args, **kwargs)
            except Exception as exc:
                if telemetry.parked:
                    _gone(telemetry, args, kwargs, exc)
                raise
            return _seen(telemetry, method, args, kwargs, result)

        return async_wrapper

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            result = wrapped(*args, **kwargs)
        except Exception as exc:
            if telemetry.parked:
                _gone(telemetry, args, kwargs, exc)
            raise
        return _seen(telemetry, method, args, kwargs, result)

    return wrapper
