"""Where otelstats watches WebSocket connections of the Responses API (see `_websocket` for
what a connection's messages mean): the SDK's own connections, and under them websockets' client
connections that a library opened itself on a Responses path (the OpenAI Agents SDK's WebSocket
transport). A websockets connection the SDK drives is left to the SDK's layer (`_INSIDE`, and
`_used_by_the_sdk` once per connection), so no call is seen twice.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from ._instr_telemetry import Telemetry
from ._websocket import Socket, json_event

_INSIDE: ContextVar[str | None] = ContextVar("otelstats_socket_method", default=None)
"""The socket method of ours running in this thread or task: `send`'s own `send_raw` is not a
second create, `recv`'s own `recv_bytes` not a second read."""

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
    """websockets' ConnectionClosed (by name: otelstats never imports websockets itself)."""
    return any(c.__name__ == "ConnectionClosed" for c in type(exc).__mro__)


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


Find = Callable[[Any], Socket | None]


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
        """A websockets connection's Socket: one the SDK did not open, on a Responses path
        (asked outside the SDK's own reads and sends only: the wrappers check `_INSIDE`)."""
        try:
            return self.raw[ws]
        except KeyError:
            pass
        except TypeError:
            return None  # not weakly referenceable: not a websockets connection
        found = None
        try:
            if _responses_client(ws) and not _used_by_the_sdk():
                found = Socket(self.telemetry, ws, json_event)
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
        """The SDK's `recv`: its parsed events (its own `recv_bytes` inside is not read again)."""

        def got(socket: Socket, instance: Any, event: Any) -> None:
            self._guarded("reading a socket event", lambda: socket.received(event))

        return self._reader(is_async, self.socket, got)

    def _read(self, is_async: bool, find: Find) -> Wrapper:
        """A raw message read by the app (the SDK's `recv_bytes`, websockets' `recv`)."""

        def outside(instance: Any) -> Socket | None:
            return None if _INSIDE.get() is not None else find(instance)

        def got(socket: Socket, instance: Any, message: Any) -> None:
            try:  # per message: no closure, unlike `_guarded`
                socket.read_bytes(instance, message)
            except Exception:
                self.telemetry.internal_error("reading a socket message")

        return self._reader(is_async, outside, got)

    def _reader(
        self, is_async: bool, find: Find, got: Callable[[Socket, Any, Any], None]
    ) -> Wrapper:
        """A read of the connection `find` names: `got(socket, connection, what was read)`; a
        lost connection ends the calls open on it. Reads inside it are not read again."""
        if is_async:

            async def read_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                socket = find(instance)
                if socket is None:
                    return await wrapped(*args, **kwargs)
                token = _INSIDE.set("recv")
                try:
                    read = await wrapped(*args, **kwargs)
                except BaseException as exc:
                    self._lost(socket, exc)
                    raise
                finally:
                    _INSIDE.reset(token)
                got(socket, instance, read)
                return read

            return read_async

        def read(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            socket = find(instance)
            if socket is None:
                return wrapped(*args, **kwargs)
            token = _INSIDE.set("recv")
            try:
                read = wrapped(*args, **kwargs)
            except BaseException as exc:
                self._lost(socket, exc)
                raise
            finally:
                _INSIDE.reset(token)
            got(socket, instance, read)
            return read

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
