"""The Responses API's WebSocket mode (`client.responses.connect()`, openai 3.x): each
`response.create` sent on a connection is one call, answered by the server's events on it.

No create method runs for these calls and no HTTP request is made, so neither the SDK's resource
methods nor its client's `post` see them. What is watched instead is the connection:

- `send` (and an app's own `send_raw`): a `response.create` starts a call, timed from here.
- `recv` (which iterating over the connection and `dispatch_events` go through; an app's own
  `recv_bytes` too): the server's events. A connection answers one response at a time per lane
  (`stream_id`; FIFO within a lane), so a lane's `response.created` binds the oldest create
  sent on it that is still waiting. One with no create waiting is a response the server started
  itself (a successor after `response.steer`): a call of its own, timed from there. Output
  events time the first chunk; `response.completed` / `incomplete` / `failed` end the call with
  the response's usage, as on an HTTP stream (`ResponsesState`); an `error` ends the oldest
  create still waiting (a refused request), else the lane's response.
- `close`, or the connection lost (`ConnectionClosed` from a read; the SDK's reconnect does not
  bring back what was in flight): every call still open on it ends, stopped by the user or cut
  short.

The connection's server is read from its opening handshake (the `Host` it was sent to).
`Socket` is one connection's calls; `_websocket_wrap` is where the connections are watched (the
SDK's, and websockets' own ones that a library opens itself).
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

from . import semconv
from ._instr_request import RESPONSES, Prepared, omitted
from ._instr_telemetry import Telemetry
from ._responses_state import ResponsesState
from ._usage import JSONObject

_LIFECYCLE = r'"(?:response\.(?:created|completed|incomplete|failed)|error)"'
_MARKERS: dict[type, Callable[[Any], object]] = {
    bytes: re.compile(_LIFECYCLE.encode()).search,
    str: re.compile(_LIFECYCLE).search,
}
"""Raw messages that must be parsed (an output event carries none of these quoted names), by
the message's type (websockets hands out text frames as str, the SDK's `recv_bytes` bytes)."""
_DELTA: dict[type, Any] = {bytes: b'.delta"', str: '.delta"'}


def _server_of(ws: Any) -> Any:
    """A stand-in for the SDK client, for `Prepared`: its base URL, from the handshake of `ws`
    (a websockets client connection)."""
    request = getattr(ws, "request", None)
    headers = getattr(request, "headers", None)
    host = headers.get("Host") if headers is not None else None
    if not isinstance(host, str) or not host:
        return None
    transport = getattr(ws, "transport", None)  # asyncio; the sync client has a socket
    if transport is not None:
        secure = transport.get_extra_info("ssl_object") is not None
    else:
        secure = type(getattr(ws, "socket", None)).__name__ == "SSLSocket"
    path = (getattr(request, "path", "") or "").partition("?")[0].rstrip("/")
    return SimpleNamespace(base_url=_Url(host, secure, path.removesuffix("/responses")))


class _Url:
    """The attributes `_instr_request._server` reads of a base URL."""

    __slots__ = ("host", "path", "port", "scheme", "text")

    def __init__(self, host: str, secure: bool, path: str) -> None:
        name, colon, port = host.rpartition(":")
        if not colon or not port.isdigit() or (":" in name and not name.endswith("]")):
            name, port = host, ""  # no port, or a bare IPv6 address
        self.host = name.strip("[]")
        self.port = int(port) if port else None
        self.scheme = "https" if secure else "http"
        self.path = path
        self.text = f"{self.scheme}://{host}{path}"

    def __str__(self) -> str:
        return self.text


class _Lane:
    __slots__ = ("current", "waiting")

    def __init__(self) -> None:
        self.waiting: deque[ResponsesState] = deque()
        """Creates sent, not answered by a `response.created` yet (oldest first)."""
        self.current: ResponsesState | None = None
        """The response being answered: the lane's output events are its."""


class Socket:
    """The calls open on one connection."""

    __slots__ = ("client", "lanes", "live", "parse", "telemetry")

    def __init__(
        self, telemetry: Telemetry, ws: Any, parse: Callable[[Any, Any], Any] | None = None
    ) -> None:
        """`ws`: the websockets connection; `parse(connection, data)`: one message as an event
        (default: the SDK connection's own `parse_event`)."""
        self.telemetry = telemetry
        self.client = _server_of(ws)
        self.parse = parse or _sdk_event
        self.lanes: dict[Any, _Lane] = {}
        self.live: dict[str, ResponsesState] = {}
        """Responses created and not ended, by response id."""

    def lane(self, stream_id: Any) -> _Lane:
        lane = self.lanes.get(stream_id)
        if lane is None:
            lane = self.lanes[stream_id] = _Lane()
        return lane

    def _start(self, request: Mapping[str, Any]) -> ResponsesState:
        # Every answer over the socket is streamed, whatever the request says.
        request = {**request, "stream": True}
        prepared = Prepared(self.telemetry, RESPONSES, self.client, request)
        prepared.call.remember = True
        return ResponsesState(prepared.call)

    def sent(self, event: Any) -> ResponsesState | None:
        """A client event about to be sent: a `response.create` starts a call."""
        if isinstance(event, str):  # `send_raw`: parsed only for a create
            event = event.encode()
        if isinstance(event, (bytes, bytearray)):
            if b"response.create" not in event:
                return None
            event = json.loads(event)
        elif not isinstance(event, Mapping):
            to_dict = getattr(event, "to_dict", None)
            if getattr(event, "type", None) != "response.create" or to_dict is None:
                return None
            event = to_dict()
        if not isinstance(event, Mapping) or event.get("type") != "response.create":
            return None
        # The SDK's `connection.response.create` passes every argument, the ones not given as
        # its `omit` sentinel (dropped when it sends the event).
        event = {k: v for k, v in event.items() if not omitted(v)}
        state = self._start(event)
        self.lane(event.get("stream_id")).waiting.append(state)
        return state

    def unsent(self, state: ResponsesState, exc: BaseException) -> None:
        """The create could not be sent: the call ends with the SDK's error."""
        for lane in self.lanes.values():
            if state in lane.waiting:
                lane.waiting.remove(state)
        state.failed(exc)

    def received(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        stream_id = getattr(event, "stream_id", None)
        if kind == "response.created":
            self._created(self.lane(stream_id), event)
            return
        lane = self.lanes.get(stream_id)
        if kind in semconv.RESPONSE_TERMINAL_EVENTS:
            self._ended(lane, event)
        elif kind == "error":
            if lane is not None:
                self._error(lane, event)
        elif lane is not None and lane.current is not None:
            lane.current.feed(event)  # output: the first chunk, the count, captured text
            return
        if stream_id is not None and lane is not None and lane.current is None and not lane.waiting:
            del self.lanes[stream_id]  # a named lane idle again (an app may name one per task)

    def _created(self, lane: _Lane, event: Any) -> None:
        response = event.response
        # None waiting: the server started it itself (a successor), a call from now.
        state = lane.waiting.popleft() if lane.waiting else self._start(_request_of(response))
        lane.current = state
        if isinstance(response.id, str):
            self.live[response.id] = state
        state.feed(event)

    def _ended(self, lane: _Lane | None, event: Any) -> None:
        response_id = getattr(event.response, "id", None)
        state = self.live.pop(response_id, None) if isinstance(response_id, str) else None
        if state is None and lane is not None:
            state = lane.current
        if state is None:
            return
        if lane is not None and lane.current is state:
            lane.current = None
        state.feed(event)
        state.exhausted()

    def _error(self, lane: _Lane, event: Any) -> None:
        """An `error`: the oldest create still waiting was refused, else the lane's response
        failed (a `response.failed` after it finds the call ended)."""
        if lane.waiting:
            state = lane.waiting.popleft()
        elif lane.current is not None:
            state, lane.current = lane.current, None
            self.live.pop(state.response_id or "", None)
        else:
            return
        state.finished = True
        state.extra[semconv.ERROR_TYPE] = _error_type(event)
        state.end("error")

    def read_bytes(self, connection: Any, message: Any) -> None:
        """A raw message the app read: an output event of the one lane is counted as it is;
        only a message that may start or end a response is parsed (every one with several lanes
        to tell apart, or with content captured)."""
        kind = type(message)
        if kind is not bytes and kind is not str:
            if not isinstance(message, (bytes, bytearray, memoryview)):
                return  # nothing a server sends
            message, kind = bytes(message), bytes
        simple = len(self.lanes) == 1 and not self.telemetry.options.capture_content
        if simple and _DELTA[kind] in message:  # the common case: one scan, no regex
            # An output event's type is the only place `.delta"` appears unescaped.
            current = next(iter(self.lanes.values())).current
            if current is not None:
                current.delta()
            return
        if not simple or _MARKERS[kind](message) is not None:
            self.received(self.parse(connection, message))

    def closed(self, exc: BaseException | None) -> None:
        """The connection closed: by the user (`exc` None) or lost."""
        states = {id(s): s for s in self.live.values()}
        for lane in self.lanes.values():
            states.update((id(s), s) for s in lane.waiting)
            if lane.current is not None:
                states[id(lane.current)] = lane.current
        self.live.clear()
        self.lanes.clear()
        for state in states.values():
            if exc is None:
                state.stopped()
            else:
                state.end("ok" if state.finished else "incomplete", exc)


def _request_of(response: Any) -> dict[str, Any]:
    """What a response the server started itself was asked for, as far as it tells."""
    request: dict[str, Any] = {"model": getattr(response, "model", None)}
    for name in ("previous_response_id", "instructions", "conversation"):
        value = getattr(response, name, None)
        if value is not None:
            request[name] = value.to_dict() if hasattr(value, "to_dict") else value
    return request


def _error_type(event: Any) -> str:
    error = getattr(event, "error", None)
    code = getattr(error, "code", None) or getattr(event, "code", None)
    if code is None:
        code = getattr(error, "type", None)
    return str(code)[:64] if code not in (None, "") else "error"


def _sdk_event(connection: Any, data: Any) -> Any:
    return connection.parse_event(data)


def json_event(connection: Any, data: Any) -> Any:
    return JSONObject(json.loads(data))
