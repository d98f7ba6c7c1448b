"""Every way a stream can end gives exactly one record with the right outcome."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Callable
from typing import Any

import openai
import pytest

from otelstats import semconv
from otelstats._streams import _EndWatch
from otelstats.fake_server import FakeOpenAIServer, Reply

from .conftest import MESSAGES, Otel, needs_responses


def _stream(client: openai.OpenAI) -> openai.Stream[object]:
    return client.chat.completions.create(model="m", messages=MESSAGES, stream=True)


def test_exhausted(otel: Otel, client: openai.OpenAI) -> None:
    with _stream(client) as stream:
        chunks = list(stream)
        assert len(otel.finished()) == 1  # ended when exhausted, before the `with` exit
    assert len(chunks) == 11
    assert otel.record().outcome == "ok"


def test_break_inside_with(otel: Otel, client: openai.OpenAI) -> None:
    with _stream(client) as stream:
        for _chunk in stream:
            break
    record = otel.record()
    assert record.outcome == "cancelled"
    assert record.error_type is None


def test_close_without_iterating(otel: Otel, client: openai.OpenAI) -> None:
    stream = _stream(client)
    stream.close()
    stream.close()
    assert otel.record().outcome == "cancelled"
    assert stream.response.is_closed


def test_users_own_exception_in_the_loop(otel: Otel, client: openai.OpenAI) -> None:
    def loop() -> None:
        with _stream(client) as stream:
            for _chunk in stream:
                raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        loop()
    assert otel.record().outcome == "cancelled"


def test_sdk_error_mid_stream(server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI) -> None:
    server.push(Reply(stream_error_after=3))
    stream = _stream(client)
    for _ in range(3):
        next(stream)
    with pytest.raises(openai.APIError, match="fake error"):
        next(stream)
    record = otel.record()
    assert record.outcome == "error"
    assert record.error_type == "APIError"


def test_connection_reset_by_the_server(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    server.push(Reply(cut_after=4, cut_mode="reset"))
    # The SDK raises APIConnectionError, or (openai 1.x, early 3.x) its HTTP client's own error,
    # httpx's or httpx2's: the user gets the SDK's, and the record names it.
    with pytest.raises(Exception, match=r"peer closed|Connection error") as raised:
        list(_stream(client))
    kinds = {kind.__name__ for kind in type(raised.value).__mro__}
    assert kinds & {"APIConnectionError", "TransportError"}, raised.value
    record = otel.record()
    assert record.outcome == "incomplete"
    assert record.error_type == type(raised.value).__qualname__


def test_stream_ending_without_finish_or_done_is_incomplete(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    server.push(Reply(cut_after=5))
    assert len(list(_stream(client))) == 5
    record = otel.record()
    assert record.outcome == "incomplete"
    assert record.tokens_source == "counted"
    assert record.output_tokens == 4


def _frames(*events: Any, done: bool) -> Reply:
    lines = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
    return Reply(raw_events=(*lines, b"data: [DONE]\n\n") if done else tuple(lines))


def _chat_chunk(content: str) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": None}
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [choice]}  # fmt: skip


def _text_chunk(text: str) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "finish_reason": None, "logprobs": None}
    return {"id": "c1", "object": "text_completion", "created": 1, "model": "m",
            "choices": [choice]}  # fmt: skip


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("operation", ["chat", "completions", "chat-raw"])
@pytest.mark.parametrize("done", [True, False], ids=["done", "cut"])
def test_a_stream_the_server_ends_with_done_is_complete_without_a_finish_reason(
    server: FakeOpenAIServer,
    otel: Otel,
    new_aclient: Callable[[], openai.AsyncOpenAI],
    operation: str,
    aio: bool,
    done: bool,
) -> None:
    """Some servers send no finish reason; `data: [DONE]` still says the answer is complete.
    The SDK reads `[DONE]` itself and hands the user nothing for it: without it the stream was
    cut short (`incomplete`). A raw response dropped once its stream is parsed leaves the call
    to that stream."""
    chunk = _text_chunk if operation == "completions" else _chat_chunk
    server.push(Reply(usage="none"), _frames(chunk("Hel"), chunk("lo"), done=done))

    async def read_async(kwargs: dict[str, Any]) -> int:
        async with new_aclient() as client:
            if operation == "completions":
                stream: Any = await client.completions.create(prompt="hi", **kwargs)
            elif operation == "chat-raw":
                create = client.chat.completions.with_raw_response.create
                stream = (await create(messages=MESSAGES, **kwargs)).parse()  # as the SDK: no await
            else:
                stream = await client.chat.completions.create(messages=MESSAGES, **kwargs)
            return len([chunk async for chunk in stream])

    def read(kwargs: dict[str, Any]) -> int:
        if aio:
            return asyncio.run(read_async(kwargs))
        with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client:
            if operation == "completions":
                return len(list(client.completions.create(prompt="hi", **kwargs)))
            if operation == "chat-raw":  # the raw response is dropped once parsed, as here
                create = client.chat.completions.with_raw_response.create
                return len(list(create(messages=MESSAGES, **kwargs).parse()))
            return len(list(client.chat.completions.create(messages=MESSAGES, **kwargs)))

    read({"model": "m", "stream": True})  # uses the default reply: leaves one scripted
    otel.spans.clear()
    assert read({"model": "m", "stream": True}) == 2
    record = otel.record()
    assert record.outcome == ("ok" if done else "incomplete")
    assert (record.output_tokens, record.tokens_source) == (2, "counted")


def test_the_end_watch_says_done_only_for_a_stream_it_saw_end() -> None:
    """Were an SDK to read its stream some other way, the decoder put in its place would never
    run: that says nothing of `[DONE]`, and the stream's end is judged by finish reasons alone."""
    watch = _EndWatch(decoder=object())
    assert watch.done() is False
    drained = _EndWatch(decoder=_Events("data-1", "[DONE]"))  # openai 1.x reads on to the end
    assert [e.data for e in drained.iter_bytes(None)] == ["data-1", "[DONE]"]
    assert drained.done() is True
    cut = _EndWatch(decoder=_Events("data-1"))
    assert [e.data for e in cut.iter_bytes(None)] == ["data-1"]
    assert cut.done() is False


class _Event:
    def __init__(self, data: str) -> None:
        self.data = data


class _Events:
    """A decoder of fixed events, as the SDK's SSE decoders yield them."""

    def __init__(self, *data: str) -> None:
        self.events = [_Event(d) for d in data]

    def iter_bytes(self, _chunks: object) -> Any:
        return iter(self.events)


def test_dropped_stream_is_ended_by_garbage_collection(otel: Otel, client: openai.OpenAI) -> None:
    stream = _stream(client)
    next(stream)
    stream.__wrapped__.response.close()  # free the socket without telling the proxy
    assert otel.finished() == []
    del stream
    gc.collect()
    assert otel.record().outcome == "cancelled"


def test_a_stream_collected_during_another_call_is_its_own_record(
    otel: Otel, server: FakeOpenAIServer
) -> None:
    """A stream dropped in a reference cycle ends when the garbage collector next runs, which
    may be in the middle of another call (here: a hook the SDK runs while sending it). It is
    recorded as its own call, not taken for another tool's span of the call that is running."""
    http = openai.DefaultHttpxClient(event_hooks={"request": [lambda _: gc.collect()]})
    with openai.OpenAI(
        base_url=server.base_url, api_key="test", max_retries=0, http_client=http
    ) as client:
        for _ in range(3):
            stream = _stream(client)
            next(stream)
            holder: dict[str, Any] = {"stream": stream}
            holder["self"] = holder  # a cycle: only the collector frees it
            del stream, holder
        client.chat.completions.create(model="last", messages=MESSAGES)
    gc.collect()
    records = otel.records()
    assert sorted((r.request_model, r.outcome) for r in records) == [
        ("last", "ok"),
        ("m", "cancelled"),
        ("m", "cancelled"),
        ("m", "cancelled"),
    ]
    assert all(semconv.OTELSTATS_DUPLICATE_OF not in (s.attributes or {}) for s in otel.finished())


def test_async_exit_paths(otel: Otel, new_aclient: Callable[[], openai.AsyncOpenAI]) -> None:
    async def run() -> None:
        async with new_aclient() as aclient:
            stream = await aclient.chat.completions.create(
                model="m", messages=MESSAGES, stream=True
            )
            async with stream:
                async for _chunk in stream:
                    break
            unread = await aclient.chat.completions.create(
                model="m", messages=MESSAGES, stream=True
            )
            await unread.close()
            full = await aclient.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            assert len([c async for c in full]) == 11

    asyncio.run(run())
    outcomes = sorted(r.outcome for r in otel.records())
    assert outcomes == ["cancelled", "cancelled", "ok"]


def test_stream_consumed_by_another_task(
    otel: Otel, new_aclient: Callable[[], openai.AsyncOpenAI]
) -> None:
    async def consume(stream: openai.AsyncStream[object]) -> int:
        return len([chunk async for chunk in stream])

    async def run() -> int:
        async with new_aclient() as aclient:
            stream = await asyncio.create_task(
                aclient.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            )
            return await asyncio.create_task(consume(stream))

    assert asyncio.run(run()) == 11
    record = otel.record()
    assert record.outcome == "ok"
    assert record.output_tokens == 9


def test_cancelled_task_ends_as_cancelled(
    server: FakeOpenAIServer, otel: Otel, new_aclient: Callable[[], openai.AsyncOpenAI]
) -> None:
    server.push(Reply(token_delay=0.05))

    async def run() -> None:
        async with new_aclient() as aclient:
            stream = await aclient.chat.completions.create(
                model="m", messages=MESSAGES, stream=True
            )

            async def consume() -> None:
                async for _chunk in stream:
                    pass

            task = asyncio.create_task(consume())
            await asyncio.sleep(0.12)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await stream.close()

    asyncio.run(run())
    assert otel.record().outcome == "cancelled"


@pytest.mark.parametrize("api", ["chat", pytest.param("responses", marks=needs_responses)])
@pytest.mark.parametrize("how", ["timeout", "nursery"])
def test_a_stream_cancelled_under_trio_ends_as_cancelled(
    server: FakeOpenAIServer, otel: Otel, api: str, how: str
) -> None:
    """The SDK runs on trio too (through anyio). Trio cancels a stream mid-way by raising its
    own `Cancelled` (a BaseException, not asyncio's) from inside the SDK's read: the user
    stopped it, so it is cancelled, not an error."""
    trio = pytest.importorskip("trio")
    server.push(Reply(token_delay=0.05))
    seen: list[object] = []

    async def consume(aclient: openai.AsyncOpenAI) -> None:
        if api == "chat":
            stream: Any = await aclient.chat.completions.create(
                model="m", messages=MESSAGES, stream=True
            )
        else:
            stream = await aclient.responses.create(model="m", input="hi", stream=True)
        async for chunk in stream:
            seen.append(chunk)

    async def run() -> None:
        async with openai.AsyncOpenAI(
            base_url=server.base_url, api_key="test", max_retries=0
        ) as aclient:
            if how == "timeout":
                with trio.move_on_after(0.2):
                    await consume(aclient)
            else:  # the stream is read in a task of its own, cancelled from outside it
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(consume, aclient)
                    await trio.sleep(0.2)
                    nursery.cancel_scope.cancel()

    trio.run(run)
    gc.collect()
    assert 0 < len(seen) < 10  # cancelled mid-stream
    record = otel.record()
    assert (record.outcome, record.error_type) == ("cancelled", None)


_BASE = {"id": "chatcmpl-u", "object": "chat.completion.chunk", "created": 1, "model": "m"}
UNREADABLE = [
    {**_BASE, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {**_BASE, "choices": [{"index": 0, "delta": {"content": "Hi"}}]},
    {**_BASE, "choices": ["?"]},  # not a choice: otelstats cannot read this chunk
    {**_BASE, "choices": ["?"]},  # nor this one (logged once all the same)
    {**_BASE, "choices": [{"index": 0, "delta": {"content": "!"}}]},
    {**_BASE, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    # The usage-only chunk otelstats asked for: the caller did not, so it never sees it.
    {**_BASE, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
]


def _unreadable_reply() -> Reply:
    events = tuple(f"data: {json.dumps(e)}\n\n".encode() for e in UNREADABLE)
    return Reply(raw_events=(*events, b"data: [DONE]\n\n"))


@pytest.mark.parametrize("consume", ["for", "next", "async for"])
def test_a_chunk_otelstats_cannot_read(
    server: FakeOpenAIServer,
    otel: Otel,
    client: openai.OpenAI,
    new_aclient: Callable[[], openai.AsyncOpenAI],
    caplog: pytest.LogCaptureFixture,
    consume: str,
) -> None:
    """The call ends at the first chunk otelstats cannot read, logged once; the user still
    gets every chunk the server sent for them, and still not the usage chunk otelstats asked
    for. Nothing of the stream is read after that chunk."""
    server.push(_unreadable_reply())

    async def consume_async() -> list[Any]:
        async with new_aclient() as aclient:
            stream = await aclient.chat.completions.create(
                model="m", messages=MESSAGES, stream=True
            )
            return [chunk async for chunk in stream]

    with caplog.at_level(logging.WARNING, logger="otelstats.instrumentation"):
        if consume == "async for":
            chunks = asyncio.run(consume_async())
        elif consume == "next":
            stream = _stream(client)
            chunks = []
            while (chunk := next(stream, None)) is not None:  # the proxy's own __next__
                chunks.append(chunk)
        else:
            chunks = list(_stream(client))

    assert server.requests[-1].body["stream_options"] == {"include_usage": True}
    sent = [event["choices"] for event in UNREADABLE[:-1]]
    seen = [[c if isinstance(c, str) else c.model_dump(exclude_unset=True) for c in chunk.choices]
            for chunk in chunks]  # fmt: skip
    assert seen == sent
    record = otel.record()
    assert record.outcome == "incomplete"  # no finish reason had been read
    assert (record.output_tokens, record.tokens_source) == (1, "counted")  # "Hi" only
    errors = [r for r in caplog.records if "reading a stream chunk" in r.getMessage()]
    assert len(errors) == 1
