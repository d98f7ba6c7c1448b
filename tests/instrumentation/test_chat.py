"""chat.completions against the real SDK and a real HTTP server: spans, records, metrics, and
differential checks that the user sees exactly what the bare SDK gives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai
import pytest
from opentelemetry.trace import SpanKind

from otelstats import semconv
from otelstats.fake_server import FakeOpenAIServer, Reply

from .conftest import MESSAGES, Otel, chat_helpers, differential, make_otel


def _strip(obj: Any) -> Any:
    """Dump without the ids the fake server numbers per request."""
    data = obj.to_dict()
    data.pop("id", None)
    return data


def test_non_streaming_call_is_one_record_with_usage(otel: Otel, client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model="fake-gpt-4o-mini", messages=MESSAGES)
    (span,) = otel.finished()
    assert span.name == "chat fake-gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    record = otel.record()
    assert record.outcome == "ok"
    assert record.input_tokens == result.usage.prompt_tokens
    assert record.output_tokens == result.usage.completion_tokens == 9
    assert record.tokens_source == "reported"
    assert record.streaming is False
    assert record.finish_reasons == ("stop",)
    assert record.server_address == "127.0.0.1"
    assert record.request_model == record.response_model == "fake-gpt-4o-mini"
    assert span.attributes[semconv.RESPONSE_ID] == result.id
    metrics = otel.metrics()
    tokens = metrics[semconv.METRIC_TOKEN_USAGE]
    assert sorted(p.sum for p in tokens) == sorted([record.input_tokens, 9])
    assert tokens[0].explicit_bounds == semconv.TOKEN_USAGE_BUCKETS
    assert metrics[semconv.METRIC_OPERATION_DURATION][0].explicit_bounds == (
        semconv.DURATION_BUCKETS
    )


def test_the_record_follows_a_base_url_changed_by_the_app(
    otel: Otel, server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    with FakeOpenAIServer() as other:
        client.chat.completions.create(model="m", messages=MESSAGES)
        client.base_url = other.base_url  # type: ignore[assignment]
        client.chat.completions.create(model="m", messages=MESSAGES)
        assert len(other.requests) == 1
    ports = [r.server_port for r in otel.records()]
    assert ports == [server.port, other.port]
    assert ports[0] != ports[1]


def test_streaming_usage_is_requested_and_the_extra_chunk_hidden(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    def scenario() -> list[Any]:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        return [_strip(chunk) for chunk in stream]

    bare, instrumented, otel = differential(scenario)
    assert instrumented == bare
    assert "stream_options" not in server.requests[0].body
    assert server.requests[1].body["stream_options"] == {"include_usage": True}
    record = otel.record()
    assert record.tokens_source == "reported"
    assert record.output_tokens == 9
    assert record.time_to_first_chunk_s is not None
    assert record.outcome == "ok"
    (per_chunk,) = otel.metrics()[semconv.METRIC_TIME_PER_OUTPUT_CHUNK]
    assert per_chunk.count == 1
    assert 0 <= per_chunk.sum <= record.duration_s - record.time_to_first_chunk_s


@pytest.mark.parametrize(
    "asking",
    [
        {"stream_options": {"include_usage": True}},
        # The SDK merges `extra_body` over the request: the user's own `stream_options` wins
        # over any otelstats would add, so the usage chunk is the user's.
        {"extra_body": {"stream_options": {"include_usage": True}}},
    ],
    ids=["stream_options", "extra_body"],
)
def test_user_requested_usage_chunk_is_kept(
    server: FakeOpenAIServer, client: openai.OpenAI, asking: dict[str, Any]
) -> None:
    def scenario() -> list[Any]:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True, **asking)
        return [_strip(chunk) for chunk in stream]

    bare, instrumented, otel = differential(scenario)
    assert instrumented == bare
    assert bare[-1]["usage"]["completion_tokens"] == 9
    assert otel.record().output_tokens == 9
    assert otel.record().tokens_source == "reported"
    assert server.requests[1].body["stream_options"] == server.requests[0].body["stream_options"]


def test_usage_refused_in_extra_body_is_not_asked_for(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """`extra_body` saying no usage goes to the server as it is: the output is counted."""

    def scenario() -> list[Any]:
        stream = client.chat.completions.create(
            model="m",
            messages=MESSAGES,
            stream=True,
            extra_body={"stream_options": {"include_usage": False}},
        )
        return [_strip(chunk) for chunk in stream]

    bare, instrumented, otel = differential(scenario)
    assert instrumented == bare
    assert all(chunk.get("usage") is None for chunk in bare)
    assert server.requests[1].body["stream_options"] == {"include_usage": False}
    record = otel.record()
    assert record.tokens_source == "counted"
    assert record.output_tokens == 9


async def _async_stream(aclient: openai.AsyncOpenAI) -> list[Any]:
    stream = await aclient.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    return [_strip(chunk) async for chunk in stream]


def test_async_streaming_and_non_streaming(new_aclient: Callable[[], openai.AsyncOpenAI]) -> None:
    def scenario() -> list[Any]:
        async def both() -> list[Any]:
            async with new_aclient() as aclient:
                return await calls(aclient)

        async def calls(aclient: openai.AsyncOpenAI) -> list[Any]:
            full = await aclient.chat.completions.create(model="m", messages=MESSAGES)
            return [_strip(full), *await _async_stream(aclient)]

        return asyncio.run(both())

    bare, instrumented, otel = differential(scenario)
    assert instrumented == bare
    records = sorted(otel.records(), key=lambda r: r.streaming)
    assert [r.streaming for r in records] == [False, True]
    assert all(r.outcome == "ok" and r.output_tokens == 9 for r in records)


def test_a_loop_left_and_resumed_sees_what_the_bare_sdk_gives(client: openai.OpenAI) -> None:
    """Leaving a `for` loop does not close an SDK stream: a later loop or `next()` goes on
    where it stopped. Neither ends the call; exhausting the stream does."""

    def scenario(otel: Otel | None) -> list[Any]:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        seen = []
        for chunk in stream:
            seen.append(_strip(chunk))
            if len(seen) == 3:
                break
        seen.append(_strip(next(iter(stream))))  # a throwaway iterator
        seen.append(_strip(next(stream)))
        for chunk in stream:
            seen.append(_strip(chunk))
            if len(seen) == 7:
                break
        if otel is not None:
            assert otel.finished() == []  # not ended by the loops left
        while (chunk := next(stream, None)) is not None:  # to the end (usage stays hidden)
            seen.append(_strip(chunk))
        return [iter(stream) is stream, *seen]

    bare = scenario(None)
    otel = make_otel()
    try:
        instrumented = scenario(otel)
    finally:
        otel.instrumentor.uninstrument()
    assert instrumented == bare
    assert len(bare) == 12  # `iter(stream) is stream`, then the 11 chunks
    record = otel.record()
    assert record.outcome == "ok"
    assert (record.tokens_source, record.output_tokens) == ("reported", 9)


def test_an_async_loop_left_and_resumed(new_aclient: Callable[[], openai.AsyncOpenAI]) -> None:
    def scenario() -> list[Any]:
        async def run() -> list[Any]:
            async with new_aclient() as aclient:
                stream = await aclient.chat.completions.create(
                    model="m", messages=MESSAGES, stream=True
                )
                seen = []
                async for chunk in stream:
                    seen.append(_strip(chunk))
                    if len(seen) == 2:
                        break
                await asyncio.sleep(0)  # the left loop's generators are closed by now
                seen.append(_strip(await stream.__anext__()))
                async for chunk in stream:
                    seen.append(_strip(chunk))
                    if len(seen) == 6:
                        break
                while True:
                    try:
                        seen.append(_strip(await stream.__anext__()))
                    except StopAsyncIteration:
                        return seen

        return asyncio.run(run())

    bare, instrumented, otel = differential(scenario)
    assert instrumented == bare
    assert len(bare) == 11
    record = otel.record()
    assert record.outcome == "ok"
    assert record.output_tokens == 9


def test_tool_call_fragments_and_n_choices(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    def scenario() -> list[Any]:
        server.push(Reply(tool_call=True))
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True, n=2)
        return [_strip(chunk) for chunk in stream]

    bare, instrumented, otel = differential(scenario)
    assert instrumented == bare
    record = otel.record()
    assert record.finish_reasons == ("tool_calls", "tool_calls")
    assert record.output_tokens == 2 * 4
    assert otel.finished()[0].attributes[semconv.REQUEST_CHOICE_COUNT] == 2


@pytest.mark.parametrize(
    ("reply", "exc_type", "error_type"),
    [
        (Reply(status=429, error_code=429), openai.RateLimitError, "RateLimitError"),
        (Reply(status=400, error_code="context_length_exceeded"), openai.BadRequestError, None),
        (Reply(status=502, html_error=True), openai.InternalServerError, "InternalServerError"),
    ],
)
def test_errors_reach_the_user_unchanged(
    server: FakeOpenAIServer,
    client: openai.OpenAI,
    reply: Reply,
    exc_type: type[Exception],
    error_type: str | None,
) -> None:
    def scenario() -> tuple[Any, ...]:
        server.push(reply)
        with pytest.raises(exc_type) as caught:
            client.chat.completions.create(model="m", messages=MESSAGES)
        exc: Any = caught.value
        return type(exc), str(exc), exc.status_code, exc.body, exc.code

    bare, instrumented, otel = differential(scenario)
    assert instrumented == bare
    record = otel.record()
    assert record.outcome == "error"
    assert record.error_type == (error_type or exc_type.__name__)


def test_sdk_retries_are_one_call(server: FakeOpenAIServer, otel: Otel) -> None:
    server.push(Reply(status=503), Reply(status=500))
    with openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=2) as retrying:
        retrying.with_options(timeout=10).chat.completions.create(model="m", messages=MESSAGES)
    assert len(server.requests) == 3
    record = otel.record()
    assert record.outcome == "ok"
    assert record.output_tokens == 9


def test_parse_helper_is_recorded_once(otel: Otel, client: openai.OpenAI) -> None:
    parsed = chat_helpers(client).parse(model="m", messages=MESSAGES)
    assert parsed.choices[0].message.content
    assert otel.record().output_tokens == 9


def test_stream_helper_is_recorded_once(otel: Otel, client: openai.OpenAI) -> None:
    with chat_helpers(client).stream(model="m", messages=MESSAGES) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "content.done" in events
    assert final.choices[0].message.content == "The quick brown fox jumps over the lazy dog."
    record = otel.record()
    assert record.outcome == "ok"
    assert record.tokens_source == "reported"


def test_stream_helper_left_early_ends_the_span(otel: Otel, client: openai.OpenAI) -> None:
    with chat_helpers(client).stream(model="m", messages=MESSAGES) as stream:
        for _event in stream:
            break
        assert otel.finished() == []
    assert otel.record().outcome == "cancelled"


def test_async_stream_helper(otel: Otel, new_aclient: Callable[[], openai.AsyncOpenAI]) -> None:
    async def run() -> str | None:
        async with (
            new_aclient() as aclient,
            chat_helpers(aclient).stream(model="m", messages=MESSAGES) as stream,
        ):
            async for _event in stream:
                pass
            final = await stream.get_final_completion()
        return final.choices[0].message.content

    assert asyncio.run(run()) == "The quick brown fox jumps over the lazy dog."
    assert otel.record().outcome == "ok"
