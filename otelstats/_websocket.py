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
_MARKERS = re.compile(rb'"(?:response\.(?:created|completed|incomplete|failed)|error)"')
"""Events `recv_bytes` must parse (an output event carries none of these quoted names)."""

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


def _closed_connection(exc: BaseException) -> bool:
    """websockets' ConnectionClosed (by name: websockets is imported only by the SDK)."""
    return any(c.__name__ == "ConnectionClosed" for c in type(exc).__mro__)


def _server_of(connection: Any) -> Any:
    """A stand-in for the SDK client, for `Prepared`: its base URL, from the handshake."""
    ws = getattr(connection, "_connection", None)
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

    __slots__ = ("client", "lanes", "live", "telemetry")

    def __init__(self, telemetry: Telemetry, connection: Any) -> None:
        self.telemetry = telemetry
        self.client = _server_of(connection)
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
        """A message the app read with `recv_bytes`: parsed only when it starts or ends a
        response (or when content is captured); an output event of a lane is counted as it is."""
        data = message.encode() if isinstance(message, str) else message
        if (
            len(self.lanes) != 1
            or _MARKERS.search(data) is not None
            or self.telemetry.options.capture_content
        ):
            self.received(connection.parse_event(data))
            return
        for lane in self.lanes.values():
            if lane.current is not None and b'.delta"' in data:
                lane.current.delta()

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


Wrapper = Callable[[Any, Any, Any, Any], Any]


class Sockets:
    """The wrappers of one `instrument()`: the connections they watch, by connection."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.open: weakref.WeakKeyDictionary[Any, Socket] = weakref.WeakKeyDictionary()
        self.classes: tuple[type, ...] = ()
        """The Responses connection classes wrapped (the bases' methods serve others too)."""

    def socket(self, connection: Any) -> Socket | None:
        """The connection's Socket (made on first sight); None for another kind of connection."""
        found = self.open.get(connection)
        if found is None and isinstance(connection, self.classes):
            try:
                found = self.open[connection] = Socket(self.telemetry, connection)
            except Exception:
                self.telemetry.internal_error("watching a socket")
        return found

    def _guarded(self, where: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception:
            self.telemetry.internal_error(where)
            return None

    def wrapper(self, method: str, is_async: bool) -> Wrapper:
        make = getattr(self, f"_{method}")
        return make(is_async)  # type: ignore[no-any-return]

    def _send(self, is_async: bool) -> Wrapper:
        def start(instance: Any, args: Any, kwargs: Any) -> tuple[Socket | None, Any]:
            socket = self.socket(instance)
            if socket is None or _INSIDE.get() is not None:
                return None, None
            event = args[0] if args else kwargs.get("event", kwargs.get("data"))
            return socket, self._guarded("starting a socket call", lambda: socket.sent(event))

        def failed(socket: Socket | None, state: Any, exc: BaseException) -> None:
            if socket is not None and state is not None:
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

    _send_raw = _send

    def _lost(self, socket: Socket, exc: BaseException) -> None:
        if _closed_connection(exc):
            self._guarded("ending socket calls", lambda: socket.closed(exc))

    def _recv(self, is_async: bool) -> Wrapper:
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
                self._guarded("reading a socket event", lambda: socket.received(event))
                return event

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
            self._guarded("reading a socket event", lambda: socket.received(event))
            return event

        return recv

    def _recv_bytes(self, is_async: bool) -> Wrapper:
        def read(socket: Socket, instance: Any, message: Any) -> None:
            try:  # per message: no closure, unlike `_guarded`
                socket.read_bytes(instance, message)
            except Exception:
                self.telemetry.internal_error("reading a socket message")

        if is_async:

            async def recv_bytes_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                socket = self.socket(instance)
                if socket is None or _INSIDE.get() is not None:
                    return await wrapped(*args, **kwargs)
                try:
                    message = await wrapped(*args, **kwargs)
                except BaseException as exc:
                    self._lost(socket, exc)
                    raise
                read(socket, instance, message)
                return message

            return recv_bytes_async

        def recv_bytes(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            socket = self.socket(instance)
            if socket is None or _INSIDE.get() is not None:
                return wrapped(*args, **kwargs)
            try:
                message = wrapped(*args, **kwargs)
            except BaseException as exc:
                self._lost(socket, exc)
                raise
            read(socket, instance, message)
            return message

        return recv_bytes

    def _close(self, is_async: bool) -> Wrapper:
        def closed(instance: Any) -> None:
            socket = self.open.pop(instance, None)
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
