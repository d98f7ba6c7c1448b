"""The Responses API's WebSocket mode (`client.responses.connect()`): each `response.create` sent
on a connection is one call, answered by the server's events. Against a real WebSocket server
(websockets) scripted per test, with the real SDK; bare and instrumented runs see the same."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from .conftest import Otel, differential, make_otel

websockets_server = pytest.importorskip("websockets.sync.server")
websockets_exceptions = pytest.importorskip("websockets.exceptions")
try:
    from openai.resources.responses import Responses
except ImportError:
    Responses = None
if not hasattr(Responses, "connect"):
    pytest.skip(f"openai {openai.__version__} has no WebSocket mode", allow_module_level=True)

Script = Callable[[dict[str, Any], int], list[Any]]
"""(a client event, how many creates so far) -> what the server sends back: event objects,
raw strings, or CLOSE (a normal close) / DROP (the TCP connection cut)."""
CLOSE, DROP = "close", "drop"
USAGE = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10,
         "input_tokens_details": {"cached_tokens": 2},
         "output_tokens_details": {"reasoning_tokens": 1}}  # fmt: skip


def response(rid: str, status: str, usage: Any = None, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "object": "response", "created_at": 1, "status": status, "model": "m-1",
            "output": [], "usage": usage, "error": None, "incomplete_details": None,
            "instructions": None, "parallel_tool_calls": True, "tool_choice": "auto",
            "tools": [], **extra}  # fmt: skip


def created(rid: str, **extra: Any) -> dict[str, Any]:
    return {"type": "response.created", "sequence_number": 0,
            "response": response(rid, "in_progress", **extra), **_lane(extra)}  # fmt: skip


def delta(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "i",
            "output_index": 0, "content_index": 0, "delta": text, "logprobs": [],
            **extra}  # fmt: skip


def completed(rid: str, usage: Any = USAGE, **extra: Any) -> dict[str, Any]:
    return {"type": "response.completed", "sequence_number": 9,
            "response": response(rid, "completed", usage), **extra}  # fmt: skip


def _lane(extra: dict[str, Any]) -> dict[str, Any]:
    lane = extra.pop("stream_id", None)
    return {} if lane is None else {"stream_id": lane}


def answer(rid: str, words: tuple[str, ...] = ("Hel", "lo"), usage: Any = USAGE) -> list[Any]:
    return [created(rid), *(delta(w) for w in words), completed(rid, usage)]


class Server:
    """A real WebSocket server on a free port, answering each client event by `script`."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.received: list[dict[str, Any]] = []
        self.server = websockets_server.serve(self._handle, "127.0.0.1", 0)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _handle(self, ws: Any) -> None:
        creates = 0
        for message in ws:
            event = json.loads(message)
            self.received.append(event)
            creates += event.get("type") == "response.create"
            for item in self.script(event, creates):
                if item == CLOSE:
                    ws.close()
                    return
                if item == DROP:
                    ws.socket.close()
                    return
                ws.send(item if isinstance(item, str) else json.dumps(item))

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[[Script], Server]]:
    started: list[Server] = []

    def start(script: Script) -> Server:
        started.append(Server(script))
        return started[-1]

    yield start
    for server in started:
        server.close()


def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=0)


def until_done(connection: Any, ends: int = 1) -> list[Any]:
    """Events (as JSON) until `ends` responses have ended."""
    seen = []
    for event in connection:
        seen.append(event.to_dict())
        if event.type in ("response.completed", "response.failed", "response.incomplete", "error"):
            ends -= 1
            if not ends:
                return seen
    return seen


def turns(event: dict[str, Any], n: int) -> list[Any]:
    return answer(f"resp_{n}") if event["type"] == "response.create" else []


def test_each_create_over_the_socket_is_one_call(serve: Callable[[Script], Server]) -> None:
    server = serve(turns)

    def scenario() -> list[Any]:
        with client(server) as sdk, sdk.responses.connect() as connection:
            connection.response.create(model="m", input="hello", instructions="Be brief.")
            first = until_done(connection)
            connection.response.create(model="m", input="more", previous_response_id="resp_1")
            return first + until_done(connection)

    bare, instrumented, otel = differential(scenario)
    assert instrumented == bare
    first, second = sorted(otel.records(), key=lambda r: r.start_ns)
    for record in (first, second):
        assert record.operation == "chat"
        assert record.outcome == "ok"
        assert record.streaming is True
        assert (record.request_model, record.response_model) == ("m", "m-1")
        assert (record.input_tokens, record.output_tokens) == (7, 3)
        assert (record.cached_input_tokens, record.reasoning_tokens) == (2, 1)
        assert record.tokens_source == "reported"
        assert record.time_to_first_chunk_s is not None
        assert 0 < record.time_to_first_chunk_s <= record.duration_s
        assert (record.server_address, record.server_port) == ("127.0.0.1", server.port)
        assert record.finish_reasons == ("completed",)
    assert first.end_ns <= second.start_ns
    assert first.conversation_id
    assert first.conversation_id == second.conversation_id
    spans = {s.attributes["gen_ai.response.id"]: s for s in otel.finished()}
    assert set(spans) == {"resp_1", "resp_2"}


def test_async_connection(serve: Callable[[Script], Server]) -> None:
    server = serve(turns)

    async def talk() -> list[Any]:
        sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
        async with sdk, sdk.responses.connect() as connection:
            seen = []
            for n in (1, 2):
                await connection.response.create(model="m", input=f"turn {n}")
                async for event in connection:
                    seen.append(event.to_dict())
                    if event.type == "response.completed":
                        break
            return seen

    bare, instrumented, otel = differential(lambda: asyncio.run(talk()))
    assert instrumented == bare
    records = otel.records()
    assert len(records) == 2
    assert all(r.outcome == "ok" and r.output_tokens == 3 for r in records)
    assert all(r.time_to_first_chunk_s is not None for r in records)


def test_refused_and_failed_responses_are_errors(serve: Callable[[Script], Server]) -> None:
    """A create the server refuses (an `error`, no response) and a response that fails are
    errors; the connection's next call is recorded as usual."""

    def script(event: dict[str, Any], n: int) -> list[Any]:
        if n == 1:
            return [{"type": "error", "status": 400, "error": {
                "type": "invalid_request_error", "code": "previous_response_not_found",
                "message": "Previous response with id 'resp_x' not found."}}]  # fmt: skip
        if n == 2:
            failed = response("resp_2", "failed", error={"code": "server_error", "message": "x"})
            ended = {"type": "response.failed", "sequence_number": 3, "response": failed}
            return [created("resp_2"), delta("a"), ended]
        return answer(f"resp_{n}")

    server = serve(script)
    with make_otel_for() as otel, client(server) as sdk, sdk.responses.connect() as connection:
        for _ in range(3):
            connection.response.create(model="m", input="hi", previous_response_id="resp_x")
            until_done(connection)
    refused, failed, ok = sorted(otel.records(), key=lambda r: r.start_ns)
    assert (refused.outcome, refused.error_type) == ("error", "previous_response_not_found")
    assert (refused.input_tokens, refused.output_tokens) == (None, None)
    assert (failed.outcome, failed.error_type) == ("error", "server_error")
    assert failed.response_model == "m-1"
    assert (ok.outcome, ok.output_tokens) == ("ok", 3)


def test_a_connection_lost_or_closed_mid_answer_ends_its_call(
    serve: Callable[[Script], Server],
) -> None:
    """The server dropping the connection mid-answer cuts the call short (incomplete); the
    user closing it mid-answer stops it (cancelled). The user sees what they would bare."""

    def script(event: dict[str, Any], n: int) -> list[Any]:
        return [created(f"resp_{n}"), delta("par"), DROP if "drop" in event["input"] else None]

    server = serve(lambda e, n: [i for i in script(e, n) if i is not None])

    def dropped() -> Any:
        with client(server) as sdk, sdk.responses.connect() as connection:
            connection.response.create(model="m", input="drop")
            try:
                until_done(connection)
            except Exception as exc:
                return type(exc).__name__
            return "ended"

    bare, instrumented, otel = differential(dropped)
    assert instrumented == bare
    record = otel.record()
    assert (record.outcome, record.tokens_source, record.output_tokens) == (
        "incomplete",
        "counted",
        1,
    )

    def closed() -> list[Any]:
        with client(server) as sdk, sdk.responses.connect() as connection:
            connection.response.create(model="m", input="stay")
            events = connection
            return [next(iter(events)).type, next(iter(events)).type]

    bare, instrumented, otel = differential(closed)
    assert instrumented == bare == ["response.created", "response.output_text.delta"]
    record = otel.record()
    assert record.outcome == "cancelled"
    assert record.time_to_first_chunk_s is not None


def test_a_response_the_server_starts_itself_is_a_call(serve: Callable[[Script], Server]) -> None:
    """After `response.steer`, the server may start a successor response with no create: a
    call of its own, in the conversation of the response it continues."""

    def script(event: dict[str, Any], n: int) -> list[Any]:
        if event["type"] == "response.steer":
            return [created("resp_2", previous_response_id="resp_1"), delta("b"),
                    completed("resp_2")]  # fmt: skip
        return answer("resp_1")

    server = serve(script)
    with make_otel_for() as otel, client(server) as sdk, sdk.responses.connect() as connection:
        connection.response.create(model="m", input="first")
        until_done(connection)
        connection.send({"type": "response.steer", "previous_response_id": "resp_1",
                         "input": [{"role": "user", "content": "also"}]})  # fmt: skip
        until_done(connection)
    first, successor = sorted(otel.records(), key=lambda r: r.start_ns)
    assert [s.attributes["gen_ai.response.id"] for s in otel.finished()] == ["resp_1", "resp_2"]
    assert successor.request_model == "m-1"
    assert successor.output_tokens == 3
    assert successor.conversation_id == first.conversation_id


def test_lanes_answer_their_own_creates(serve: Callable[[Script], Server]) -> None:
    """Two lanes (`stream_id`) interleaved on one connection: each call gets its own answer."""
    big = {**USAGE, "output_tokens": 30, "total_tokens": 37}

    def script(event: dict[str, Any], n: int) -> list[Any]:
        if n < 2:
            return []
        return [created("resp_a", stream_id="a"), created("resp_b", stream_id="b"),
                delta("x", stream_id="b"), delta("y", stream_id="a"),
                completed("resp_b", big, stream_id="b"),
                completed("resp_a", stream_id="a")]  # fmt: skip

    server = serve(script)
    with make_otel_for() as otel, client(server) as sdk, sdk.responses.connect() as connection:
        connection.send({"type": "response.create", "model": "ma", "input": "a", "stream_id": "a"})
        connection.send({"type": "response.create", "model": "mb", "input": "b", "stream_id": "b"})
        until_done(connection, ends=2)
        sockets = otel.instrumentor._sockets
        assert sockets is not None
        assert sockets.open[connection].lanes == {}  # idle named lanes are not kept
    by_model = {r.request_model: r for r in otel.records()}
    assert by_model["ma"].output_tokens == 3
    assert by_model["mb"].output_tokens == 30
    assert by_model["ma"].time_to_first_chunk_s is not None


def test_raw_reads_and_sends(serve: Callable[[Script], Server]) -> None:
    """An app that sends its own JSON (`send_raw`) and reads raw messages (`recv_bytes`): the
    same call, its first chunk and its usage, with nothing parsed for it but the events that
    start and end it."""
    server = serve(lambda e, n: answer(f"resp_{n}", ("a", "b", "c"), None if n == 2 else USAGE))

    def scenario() -> list[Any]:
        seen = []
        with client(server) as sdk, sdk.responses.connect() as connection:
            for n in (1, 2):
                connection.send_raw(json.dumps({"type": "response.create", "model": "m",
                                                "input": f"raw {n}"}))  # fmt: skip
                while True:
                    message = connection.recv_bytes()
                    seen.append(message)
                    if b"response.completed" in message:
                        break
        return seen

    bare, instrumented, otel = differential(scenario)
    assert instrumented == bare
    reported, counted = sorted(otel.records(), key=lambda r: r.start_ns)
    assert (reported.output_tokens, reported.tokens_source) == (3, "reported")
    assert (counted.output_tokens, counted.tokens_source) == (3, "counted")
    assert reported.time_to_first_chunk_s is not None
    assert counted.time_to_first_chunk_s is not None


def test_a_failing_send_is_the_calls_error(serve: Callable[[Script], Server]) -> None:
    server = serve(turns)
    with make_otel_for() as otel, client(server) as sdk:
        connection = sdk.responses.connect().enter()
        connection.close()
        with pytest.raises(websockets_exceptions.ConnectionClosed) as raised:
            connection.response.create(model="m", input="too late")
    record = otel.record()
    assert record.outcome == "error"
    assert record.error_type == type(raised.value).__qualname__


@contextlib.contextmanager
def make_otel_for() -> Iterator[Otel]:
    """An Otel, uninstrumented at exit."""
    otel = make_otel()
    try:
        yield otel
    finally:
        otel.instrumentor.uninstrument()


def test_realtime_connections_are_left_alone(serve: Callable[[Script], Server]) -> None:
    """The Realtime API's connections share the SDK's WebSocket base (its `send_raw` and
    `close` are wrapped there) and also send `response.create`: they are not Responses calls,
    and nothing of theirs is recorded or held open."""

    def script(event: dict[str, Any], n: int) -> list[Any]:
        if event["type"] != "response.create":
            return []
        return [{"type": "response.created", "event_id": "e1",
                 "response": {"id": "rt_1", "object": "realtime.response", "status": "in_progress",
                              "output": []}},
                {"type": "response.done", "event_id": "e2",
                 "response": {"id": "rt_1", "object": "realtime.response", "status": "completed",
                              "output": [], "usage": {"total_tokens": 3}}}]  # fmt: skip

    server = serve(script)
    with make_otel_for() as otel, client(server) as sdk:
        with sdk.realtime.connect(model="rt") as connection:
            connection.send_raw(json.dumps({"type": "response.create"}))
            connection.response.create()
            kinds = [connection.recv().type for _ in range(4)]
        assert kinds == ["response.created", "response.done"] * 2
        assert otel.records() == []
        assert not otel.instrumentor.telemetry.unfinished  # type: ignore[union-attr]


def test_uninstrument_unwraps_the_connections() -> None:
    import wrapt
    from openai._websocket_connection import WebSocketConnectionBase
    from openai.resources.responses.responses import AsyncResponsesConnection, ResponsesConnection
    from websockets.asyncio.connection import Connection as AsyncConnection
    from websockets.sync.connection import Connection

    owners = {ResponsesConnection: ("send", "recv", "recv_bytes"),
              AsyncResponsesConnection: ("send", "recv", "recv_bytes"),
              WebSocketConnectionBase: ("send_raw", "close"),
              Connection: ("send", "recv", "close"),
              AsyncConnection: ("send", "recv", "close")}  # fmt: skip
    with make_otel_for() as otel:
        for owner, methods in owners.items():
            assert all(isinstance(vars(owner)[m], wrapt.FunctionWrapper) for m in methods)
        otel.instrumentor.uninstrument()
        for owner, methods in owners.items():
            assert not any(isinstance(vars(owner)[m], wrapt.ObjectProxy) for m in methods)
        otel.instrumentor.instrument()


def test_beta_connection_lanes_from_typed_creates(serve: Callable[[Script], Server]) -> None:
    """The beta connection (`client.beta.responses.connect()`), whose typed create names its lane:
    the second lane's answer arrives first, each call still gets its own."""
    big = {**USAGE, "output_tokens": 30, "total_tokens": 37}

    def script(event: dict[str, Any], n: int) -> list[Any]:
        if n < 2:
            return []
        return [created("resp_b", stream_id="b"), delta("x", stream_id="b"),
                completed("resp_b", big, stream_id="b"), created("resp_a", stream_id="a"),
                delta("y", stream_id="a"), completed("resp_a", stream_id="a")]  # fmt: skip

    server = serve(script)

    def scenario() -> list[Any]:
        with client(server) as sdk:
            beta = getattr(sdk.beta, "responses", None)
            if not hasattr(beta, "connect"):
                pytest.skip(f"openai {openai.__version__} has no beta WebSocket mode")
            with beta.connect() as connection:
                connection.response.create(model="ma", input="a", stream_id="a")
                connection.response.create(model="mb", input="b", stream_id="b")
                return until_done(connection, ends=2)

    bare, instrumented, otel = differential(scenario)
    assert instrumented == bare
    assert [e.get("stream_id") for e in server.received] == ["a", "b", "a", "b"]
    by_model = {r.request_model: r for r in otel.records()}
    assert (by_model["ma"].output_tokens, by_model["mb"].output_tokens) == (3, 30)
    assert by_model["ma"].start_ns < by_model["mb"].start_ns
    assert by_model["mb"].end_ns < by_model["ma"].end_ns


def test_content_capture_over_the_socket(serve: Callable[[Script], Server]) -> None:
    """With content capture on, a socket call's input and streamed answer are on its span, as
    for a streamed `responses.create`; raw reads are parsed then to read the text."""
    server = serve(lambda e, n: answer(f"resp_{n}", ("The quick ", "brown fox.")))
    otel = make_otel(capture_content=True)
    try:
        with client(server) as sdk, sdk.responses.connect() as connection:
            connection.response.create(model="m", input="Say something about foxes.")
            until_done(connection)
            connection.send({"type": "response.create", "model": "m", "input": "Again."})
            while b"response.completed" not in connection.recv_bytes():
                pass
    finally:
        otel.instrumentor.uninstrument()
    typed, raw = (s.attributes for s in otel.finished())
    assert "foxes" in typed["gen_ai.input.messages"]
    assert "Again." in raw["gen_ai.input.messages"]
    for attributes in (typed, raw):
        assert "The quick brown fox." in attributes["gen_ai.output.messages"]


def test_a_reconnect_cuts_what_was_in_flight_and_goes_on(serve: Callable[[Script], Server]) -> None:
    """The SDK reconnects by itself (`on_reconnecting`) when the connection drops: the answer
    in flight is lost with it (cut short), and the calls sent after it are recorded as usual."""

    def script(event: dict[str, Any], n: int) -> list[Any]:
        if event.get("input") == "first":
            return [created("resp_1"), delta("par"), DROP]
        return answer("resp_2")

    server = serve(script)
    reconnects: list[int] = []

    def scenario() -> list[Any]:
        with client(server) as sdk:
            manager = sdk.responses.connect(
                on_reconnecting=lambda event: reconnects.append(event.attempt),
                initial_delay=0.01,
            )
            with manager as connection:
                connection.response.create(model="m", input="first")

                def second() -> None:
                    connection.response.create(model="m", input="second")

                later = threading.Timer(0.5, second)
                later.start()
                seen = until_done(connection)
                later.join()
                return [e["type"] for e in seen]

    bare, instrumented, otel = differential(scenario)
    assert instrumented == bare
    assert reconnects == [1, 1]  # once bare, once instrumented
    cut, second = sorted(otel.records(), key=lambda r: r.start_ns)
    assert (cut.outcome, cut.output_tokens, cut.tokens_source) == ("incomplete", 1, "counted")
    assert (second.outcome, second.output_tokens) == ("ok", 3)


def test_async_raw_reads(serve: Callable[[Script], Server]) -> None:
    server = serve(lambda e, n: answer(f"resp_{n}", ("a", "b")))

    async def talk() -> list[bytes]:
        sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
        seen = []
        async with sdk, sdk.responses.connect() as connection:
            await connection.send_raw(json.dumps({"type": "response.create", "model": "m",
                                                  "input": "raw"}))  # fmt: skip
            while b"response.completed" not in (message := await connection.recv_bytes()):
                seen.append(message)
        return seen

    bare, instrumented, otel = differential(lambda: asyncio.run(talk()))
    assert instrumented == bare
    record = otel.record()
    assert (record.outcome, record.output_tokens, record.tokens_source) == ("ok", 3, "reported")
    assert record.time_to_first_chunk_s is not None


def test_dispatched_events(serve: Callable[[Script], Server]) -> None:
    """An app that registers handlers and lets `dispatch_events` run them."""
    server = serve(lambda e, n: answer(f"resp_{n}"))
    with make_otel_for() as otel, client(server) as sdk, sdk.responses.connect() as connection:
        texts: list[str] = []
        connection.on("response.output_text.delta", lambda event: texts.append(event.delta))
        connection.on("response.completed", lambda event: connection.close())
        connection.response.create(model="m", input="hi")
        connection.dispatch_events()
    assert texts == ["Hel", "lo"]
    record = otel.record()
    assert (record.outcome, record.output_tokens) == ("ok", 3)


def test_a_socket_the_sdk_did_not_open(serve: Callable[[Script], Server]) -> None:
    """A library that opens its own WebSocket to `/v1/responses` with websockets (the OpenAI
    Agents SDK's WebSocket transport does, asyncio) or its sync client: its calls are recorded
    as the SDK's are; a socket to another path is not read."""
    from websockets.asyncio.client import connect as connect_async
    from websockets.sync.client import connect

    server = serve(lambda e, n: answer(f"resp_{n}") if "model" in e else [])
    url = f"ws://127.0.0.1:{server.port}/v1/responses"
    create = {"type": "response.create", "model": "m", "input": "hi"}

    async def agent() -> list[Any]:
        seen = []
        async with connect_async(url, additional_headers={"Authorization": "Bearer t"}) as ws:
            for _ in range(2):
                await ws.send(json.dumps(create))
                while '"response.completed"' not in (frame := await ws.recv()):
                    seen.append(json.loads(frame)["type"])
        return seen

    def script() -> list[Any]:
        with connect(url) as ws:
            ws.send(json.dumps({**create, "model": "sync"}))
            frames = [json.loads(ws.recv()) for _ in range(4)]
        with connect(f"ws://127.0.0.1:{server.port}/v1/other") as ws:
            ws.send(json.dumps({**create, "model": "other"}))
            frames += [json.loads(ws.recv()) for _ in range(4)]
        return [f["type"] for f in frames]

    bare, instrumented, otel = differential(lambda: (asyncio.run(agent()), script()))
    assert instrumented == bare
    records = sorted(otel.records(), key=lambda r: r.start_ns)
    assert [r.request_model for r in records] == ["m", "m", "sync"]
    for record in records:
        assert (record.outcome, record.output_tokens, record.tokens_source) == (
            "ok",
            3,
            "reported",
        )
        assert record.streaming
        assert record.time_to_first_chunk_s is not None
        assert (record.server_address, record.server_port) == ("127.0.0.1", server.port)
    # A call started on the other path would have ended, and been recorded, at its close.


def test_a_create_queued_while_the_sdk_reconnects_is_one_call(
    serve: Callable[[Script], Server],
) -> None:
    """A create sent while the SDK reconnects waits in its queue and goes out on the new socket
    from the SDK's own code, not from the app's `send`: still one call (not a second one seen
    on the new websockets connection)."""

    def script(event: dict[str, Any], n: int) -> list[Any]:
        if event.get("input") == "first":
            return [created("resp_1"), delta("par"), DROP]
        return answer("resp_2")

    server = serve(script)

    def scenario() -> list[Any]:
        with client(server) as sdk:
            holder: list[Any] = []

            def reconnecting(event: Any) -> None:
                holder[0].response.create(model="m", input="second")  # queued by the SDK

            manager = sdk.responses.connect(on_reconnecting=reconnecting, initial_delay=0.01)
            with manager as connection:
                holder.append(connection)
                connection.response.create(model="m", input="first")
                return [e["type"] for e in until_done(connection)]

    bare, instrumented, otel = differential(scenario)
    assert instrumented == bare
    assert [e.get("input") for e in server.received] == ["first", "second"] * 2
    cut, second = sorted(otel.records(), key=lambda r: r.start_ns)
    assert (cut.outcome, second.outcome, second.output_tokens) == ("incomplete", "ok", 3)
