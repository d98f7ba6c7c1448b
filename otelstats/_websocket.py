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
"""

from __future__ import annotations

import json
import re
import sys
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any

from . import semconv
from ._instr_calls import RESPONSES, Prepared
from ._instr_telemetry import Telemetry
from ._streams import ResponsesState

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_LIFECYCLE = r'"(?:response\.(?:created|completed|incomplete|failed)|error)"'
_MARKERS: dict[type, Callable[[Any], object]] = {
    bytes: re.compile(_LIFECYCLE.encode()).search,
    str: re.compile(_LIFECYCLE).search,
}
"""Raw messages that must be parsed (an output event carries none of these quoted names), by
the message's type (websockets hands out text frames as str, the SDK's `recv_bytes` bytes)."""
_DELTA: dict[type, Any] = {bytes: b'.delta"', str: '.delta"'}

_INSIDE: ContextVar[str | None] = ContextVar("otelstats_socket_method", default=None)
"""The socket method of ours running in this thread or task: `send`'s own `send_raw` is not a
second create, `recv`'s own `recv_bytes` not a second read."""
_OMITTED = frozenset({"Omit", "NotGiven"})

CONNECTIONS = (
    ("openai.resources.responses.responses", "ResponsesConnection", False),
    ("openai.resources.responses.responses", "AsyncResponsesConnection", True),
    ("openai.resources.beta.responses.responses", "ResponsesConnection", False),
    ("openai.resources.beta.responses.responses", "AsyncResponsesConnection", True),
)
"""The Responses connections (module, class, is_async); `send`, `recv`, `recv_bytes` are theirs."""
BASES = (("openai._websocket_connection", "WebSocketConnectionBase", False),
         ("openai._websocket_connection", "AsyncWebSocketConnectionBase", True))  # fmt: skip
"""Where `send_raw` and `close` live, shared with the Realtime API's connections (not calls)."""
WEBSOCKETS = (("websockets.sync.connection", "Connection", False),
              ("websockets.asyncio.connection", "Connection", True))  # fmt: skip
"""websockets' own connections (`send`, `recv`, `close`; clients and servers share them)."""


def _closed_connection(exc: BaseException) -> bool:
    """websockets' ConnectionClosed (by name: websockets is imported only by the SDK)."""
    return any(c.__name__ == "ConnectionClosed" for c in type(exc).__mro__)


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
    return SimpleNamespace(_base_url=_Url(host, secure, path.removesuffix("/responses")))


class _Url:
    """The attributes `_instr_calls._server` reads of a base URL."""

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
        event = {k: v for k, v in event.items() if type(v).__name__ not in _OMITTED}
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
        if kind in _TERMINAL:
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


def _json_event(connection: Any, data: Any) -> Any:
    return _JSON(json.loads(data))


class _JSON:
    """A JSON object read as the SDK's models are (a missing member is None): the events of a
    connection the SDK did not open."""

    __slots__ = ("_data",)

    def __init__(self, data: Any) -> None:
        self._data = data if isinstance(data, dict) else {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        value = self._data.get(name)
        return _JSON(value) if isinstance(value, dict) else value

    def to_dict(self) -> dict[str, Any]:
        return self._data


def _used_by_the_sdk() -> bool:
    """Whether the SDK's own code is using the websockets connection first seen now: a
    connection of its `responses.connect()`, watched at the SDK's layer. Asked once per
    connection; the SDK's reconnect makes a new one and sends what it queued on it from its own
    code, outside the app's `send`."""
    frame = sys._getframe(2)
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith("openai."):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _responses_client(ws: Any) -> bool:
    """A websockets client connection opened on a Responses API path (`…/responses`)."""
    if not any(c.__name__ == "ClientConnection" for c in type(ws).__mro__):
        return False  # a server's side, or another kind
    path = getattr(getattr(ws, "request", None), "path", None)
    return isinstance(path, str) and path.partition("?")[0].rstrip("/").endswith("/responses")


Wrapper = Callable[[Any, Any, Any, Any], Any]


Find = Callable[[Any], "Socket | None"]


class Sockets:
    """The wrappers of one `instrument()`: the connections they watch.

    Two layers: the SDK's Responses connections (its parsed events are read, not parsed again),
    and under them any websockets client connection on a Responses path that the SDK did not
    open (a library's own, such as the OpenAI Agents SDK's WebSocket transport). A websockets
    connection the SDK drives is watched at the SDK's layer only (`_INSIDE`, `raw`)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.open: weakref.WeakKeyDictionary[Any, Socket] = weakref.WeakKeyDictionary()
        self.raw: weakref.WeakKeyDictionary[Any, Socket | None] = weakref.WeakKeyDictionary()
        """websockets connections seen: their Socket, or None (not ours to read)."""
        self.classes: tuple[type, ...] = ()
        """The Responses connection classes wrapped (the bases' methods serve others too)."""

    def socket(self, connection: Any) -> Socket | None:
        """The SDK connection's Socket (made on first sight); None for another kind."""
        found = self.open.get(connection)
        if found is None and isinstance(connection, self.classes):
            ws = getattr(connection, "_connection", None)
            try:
                found = self.open[connection] = Socket(self.telemetry, ws)
                if ws is not None:
                    self.raw[ws] = None  # read at the SDK's layer
            except Exception:
                self.telemetry.internal_error("watching a socket")
        return found

    def raw_socket(self, ws: Any) -> Socket | None:
        """A websockets connection's Socket: one the SDK did not open, on a Responses path."""
        if _INSIDE.get() is not None:
            return None  # the SDK's own reads and sends, watched there
        try:
            return self.raw[ws]
        except KeyError:
            pass
        except TypeError:
            return None  # not weakly referenceable: not a websockets connection
        found = None
        try:
            if _responses_client(ws) and not _used_by_the_sdk():
                found = Socket(self.telemetry, ws, _json_event)
        except Exception:
            self.telemetry.internal_error("watching a socket")
        self.raw[ws] = found
        return found

    def _guarded(self, where: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception:
            self.telemetry.internal_error(where)
            return None

    def wrapper(self, method: str, is_async: bool) -> Wrapper:
        """For a method of the SDK's connections (and their bases)."""
        if method == "recv":
            return self._recv(is_async)
        if method == "close":
            return self._close(is_async, self.open)
        return (self._send if method != "recv_bytes" else self._read)(is_async, self.socket)

    def ws_wrapper(self, method: str, is_async: bool) -> Wrapper:
        """For a method of websockets' connections (`send`, `recv`, `close`)."""
        if method == "close":
            return self._close(is_async, self.raw)
        return (self._send if method == "send" else self._read)(is_async, self.raw_socket)

    def _send(self, is_async: bool, find: Find) -> Wrapper:
        """`send` / `send_raw` of a client event: a `response.create` starts a call."""

        def start(instance: Any, args: Any, kwargs: Any) -> tuple[Socket | None, Any]:
            if _INSIDE.get() is not None:
                return None, None
            socket = find(instance)
            if socket is None:
                return None, None
            event = args[0] if args else kwargs.get("event", kwargs.get("message"))
            return socket, self._guarded("starting a socket call", lambda: socket.sent(event))

        def failed(socket: Socket, state: Any, exc: BaseException) -> None:
            if state is not None:
                self._guarded("recording a socket error", lambda: socket.unsent(state, exc))

        if is_async:

            async def send_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                socket, state = start(instance, args, kwargs)
                if socket is None:
                    return await wrapped(*args, **kwargs)
                token = _INSIDE.set("send")
                try:
                    return await wrapped(*args, **kwargs)
                except BaseException as exc:
                    failed(socket, state, exc)
                    raise
                finally:
                    _INSIDE.reset(token)

            return send_async

        def send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            socket, state = start(instance, args, kwargs)
            if socket is None:
                return wrapped(*args, **kwargs)
            token = _INSIDE.set("send")
            try:
                return wrapped(*args, **kwargs)
            except BaseException as exc:
                failed(socket, state, exc)
                raise
            finally:
                _INSIDE.reset(token)

        return send

    def _lost(self, socket: Socket, exc: BaseException) -> None:
        if _closed_connection(exc):
            self._guarded("ending socket calls", lambda: socket.closed(exc))

    def _recv(self, is_async: bool) -> Wrapper:
        """The SDK's `recv`: its parsed events."""

        def got(socket: Socket, event: Any) -> Any:
            self._guarded("reading a socket event", lambda: socket.received(event))
            return event

        if is_async:

            async def recv_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                socket = self.socket(instance)
                if socket is None:
                    return await wrapped(*args, **kwargs)
                token = _INSIDE.set("recv")
                try:
                    event = await wrapped(*args, **kwargs)
                except BaseException as exc:
                    self._lost(socket, exc)
                    raise
                finally:
                    _INSIDE.reset(token)
                return got(socket, event)

            return recv_async

        def recv(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            socket = self.socket(instance)
            if socket is None:
                return wrapped(*args, **kwargs)
            token = _INSIDE.set("recv")
            try:
                event = wrapped(*args, **kwargs)
            except BaseException as exc:
                self._lost(socket, exc)
                raise
            finally:
                _INSIDE.reset(token)
            return got(socket, event)

        return recv

    def _read(self, is_async: bool, find: Find) -> Wrapper:
        """A raw message read by the app (the SDK's `recv_bytes`, websockets' `recv`)."""

        def got(socket: Socket, instance: Any, message: Any) -> Any:
            try:  # per message: no closure, unlike `_guarded`
                socket.read_bytes(instance, message)
            except Exception:
                self.telemetry.internal_error("reading a socket message")
            return message

        if is_async:

            async def read_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                socket = None if _INSIDE.get() is not None else find(instance)
                if socket is None:
                    return await wrapped(*args, **kwargs)
                token = _INSIDE.set("recv")
                try:
                    message = await wrapped(*args, **kwargs)
                except BaseException as exc:
                    self._lost(socket, exc)
                    raise
                finally:
                    _INSIDE.reset(token)
                return got(socket, instance, message)

            return read_async

        def read(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            socket = None if _INSIDE.get() is not None else find(instance)
            if socket is None:
                return wrapped(*args, **kwargs)
            token = _INSIDE.set("recv")
            try:
                message = wrapped(*args, **kwargs)
            except BaseException as exc:
                self._lost(socket, exc)
                raise
            finally:
                _INSIDE.reset(token)
            return got(socket, instance, message)

        return read

    def _close(self, is_async: bool, sockets: weakref.WeakKeyDictionary[Any, Any]) -> Wrapper:
        def closed(instance: Any) -> None:
            try:
                socket = sockets.pop(instance, None)
            except TypeError:  # not weakly referenceable: none of ours
                return
            if socket is not None:
                self._guarded("ending socket calls", lambda: socket.closed(None))

        if is_async:

            async def close_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                try:
                    return await wrapped(*args, **kwargs)
                finally:
                    closed(instance)

            return close_async

        def close(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            try:
                return wrapped(*args, **kwargs)
            finally:
                closed(instance)

        return close
