"""The proxy's follow-ups of stored responses: `GET` / `DELETE /responses/{id}`, `POST
/responses/{id}/cancel`, `GET /responses/{id}/input_items` (and the token count `POST
/responses/input_tokens`). They are forwarded as they are (a stream event by event) and are no
calls themselves: they cost no tokens.

A background response (`background: true`) goes on at the server after its create is answered
`queued`, or after its stream is cut or left: its call waits, parked (`_parked`), for the first
follow-up that shows its end. A `retrieve` or `cancel` answered with the response finished
records it with that answer's usage and outcome; a resumed stream (`?stream=true&starting_after=n`)
is relayed through the call, as the rest of its first stream. One the upstream no longer has (a
follow-up answered 404, or a delete that succeeded) is recorded as it stood when last seen, at
once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from flask import Response, request

from .._parked import WAITING, ParkedResponses
from ._proxy_call import ProxiedCall, error_response
from ._upstream import UpstreamFailure, forward_headers, response_headers

FOLLOW_UP = re.compile(
    r"responses/(?!\.+(?:/|$))([\w.:-]{1,200})(?:/(cancel|input_items))?", re.ASCII
)
"""A path (after `/v1/`) that follows up a stored response (`responses/compact` is a call). An
id is what servers make them of (`resp_` and hex, UUIDs): no `..`, and nothing that would
change the path or the query sent upstream (`?`, `#`, `%`, spaces), which the proxy refuses."""
_METHODS = {None: ("GET", "DELETE"), "cancel": ("POST",), "input_items": ("GET",)}
_COUNT = "input_tokens"
"""`POST /responses/input_tokens`: counts a request's input tokens, no model pass (no call)."""


def forward_follow_up(
    endpoint: str,
    match: re.Match[str],
    make_call: Callable[[], ProxiedCall],
    parked: ParkedResponses,
) -> Response:
    """Forward one follow-up (`match`: of `FOLLOW_UP`) and see what it shows of a parked call."""
    response_id, action = match[1], match[2]
    method = request.method
    methods = ("POST",) if response_id == _COUNT and action is None else _METHODS[action]
    if method not in methods:
        allowed = " or ".join(methods)
        return error_response(405, f"/{endpoint} takes {allowed}", "invalid_request_error")
    streaming = request.args.get("stream") == "true"
    call = make_call()  # records nothing: a follow-up is no call
    try:
        conn, resp = call.send(
            method,
            endpoint,
            request.get_data(cache=False) or None,
            forward_headers(request.headers, streaming),
        )
    except UpstreamFailure as exc:
        return error_response(exc.status, str(exc), exc.error_type)
    shows = method != "DELETE" and action != "input_items"  # how the response stands
    if resp.status < 400 and resp.getheader("Content-Type", "").startswith("text/event-stream"):
        taken = parked.take(response_id) if shows else None
        if taken is not None:  # the rest of a parked response's stream: that call's own
            call = taken.state
            call.resume(replayed="starting_after" not in request.args)
        return Response(
            call.relay(conn, resp, hide_usage_chunk=False),
            status=resp.status,
            headers=response_headers(resp),
            direct_passthrough=True,
        )
    answer = call.whole(conn, resp)
    status, ok = answer.status_code, 200 <= answer.status_code < 300
    if action == "input_items":
        return answer
    if status == 404 or (method == "DELETE" and ok):
        parked.gone(response_id)  # its end will never be seen
    elif ok and (response_id in parked or action == "cancel"):
        # A cancel of one not parked: its stream may be being relayed right now.
        _seen(answer.get_data(), response_id, parked)
    return answer


def _seen(payload: bytes, response_id: str, parked: ParkedResponses) -> None:
    """A retrieved or cancelled response: if it has ended, so has its parked call; one cancelled
    while its stream is being relayed ends cancelled when that stream ends."""
    try:
        response = json.loads(payload)
    except ValueError:
        return
    if not isinstance(response, dict) or response.get("object") != "response":
        return
    if response.get("id") != response_id or response.get("status") in WAITING:
        return
    taken = parked.take(response_id)
    if taken is not None:
        taken.state.settle(response, taken.since)
    elif response.get("status") == "cancelled":
        parked.cancelled(response_id, response)
