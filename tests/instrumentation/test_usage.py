"""Usage on streams in every server dialect: injected, rejected, absent, continuous, on the
finish chunk (llama.cpp, with timings), and the setting that turns injection off."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import openai
import pytest

from otelstats import semconv
from otelstats.fake_server import FakeOpenAIServer, Reply

from .conftest import MESSAGES, Otel, make_otel, needs_responses


def _chunks(client: openai.OpenAI) -> list[object]:
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    return [chunk.to_dict() for chunk in stream]


def test_server_rejecting_stream_options_is_retried_once_and_remembered(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    server.reject_stream_options = True
    first = _chunks(client)
    second = _chunks(client)
    assert len(first) == len(second) == 11
    bodies = [r.body for r in server.requests]
    assert ["stream_options" in b for b in bodies] == [True, False, False]
    records = otel.records()
    assert [r.outcome for r in records] == ["ok", "ok"]
    assert {r.tokens_source for r in records} == {"counted"}
    assert {r.output_tokens for r in records} == {9}


MISTRAL_422 = (
    b'{"object":"error","message":{"detail":[{"type":"extra_forbidden","loc":["body",'
    b'"stream_options","include_usage"],"msg":"Extra inputs are not permitted","input":true}]},'
    b'"type":"invalid_request_error","param":null,"code":null}'
)
"""Mistral's API refuses the option with 422 (its users' reports: avante.nvim, openai-agents)."""


def test_mistrals_refusal_is_retried_once_and_remembered(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    server.push(Reply(status=422, raw_body=MISTRAL_422))
    first = _chunks(client)
    second = _chunks(client)
    assert len(first) == len(second) == 11
    assert ["stream_options" in r.body for r in server.requests] == [True, False, False]
    assert [r.outcome for r in otel.records()] == ["ok", "ok"]


def test_a_refusal_that_does_not_name_the_option_is_retried_too(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    """A proxy in front of the server answers 400 with its own HTML page: nothing says which
    field it refused, but the same request without otelstats' option goes through."""
    server.push(Reply(status=400, html_error=True))
    first = _chunks(client)
    second = _chunks(client)
    assert len(first) == len(second) == 11
    bodies = [r.body for r in server.requests]
    assert ["stream_options" in b for b in bodies] == [True, False, False]
    assert [r.outcome for r in otel.records()] == ["ok", "ok"]


@pytest.mark.parametrize(
    "refusal",
    [
        Reply(status=400, error_message="maximum context length is 4096 tokens"),
        # llama.cpp's and Ollama's shape: the error is a string.
        Reply(
            status=400,
            raw_body=b'{"error": "maximum context length is 4096 tokens"}',
            content_type="application/json",
        ),
        # Gemini's OpenAI-compatible endpoint: Google's error object, inside a list.
        Reply(
            status=400,
            raw_body=b'[{"error": {"code": 400, "message": "Invalid JSON payload received. '
            b'Unknown name \\"reasoning\\": Cannot find field.", "status": "INVALID_ARGUMENT"}}]',
            content_type="application/json",
        ),
    ],
    ids=["openai", "string", "gemini-list"],
)
def test_a_json_error_about_something_else_is_not_sent_twice(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI, refusal: Reply
) -> None:
    """The user's own bad request (a prompt over the context length): one request, the user's
    error, and the server is still asked for usage next time."""
    server.push(refusal)
    with pytest.raises(openai.BadRequestError):
        _chunks(client)
    assert len(_chunks(client)) == 11
    assert ["stream_options" in r.body for r in server.requests] == [True, True]
    records = sorted(otel.records(), key=lambda r: r.start_ns)
    assert [r.outcome for r in records] == ["error", "ok"]
    assert records[1].tokens_source == "reported"


def test_the_users_own_bad_request_fails_as_it_would_and_is_not_remembered(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    """A page that names nothing, with and without otelstats' option: the request itself was
    wrong. The user gets the error of their own request (not chained to the first), and the
    server is still asked for usage next time."""
    server.push(Reply(status=400, html_error=True))
    server.push(Reply(status=400, html_error=True))
    with pytest.raises(openai.BadRequestError) as info:
        _chunks(client)
    # The SDK's own context (its HTTP status error) is there, as without otelstats; the first
    # attempt's error is not.
    assert not isinstance(info.value.__context__, openai.APIError)
    assert len(_chunks(client)) == 11
    bodies = [r.body for r in server.requests]
    assert ["stream_options" in b for b in bodies] == [True, False, True]
    records = sorted(otel.records(), key=lambda r: r.start_ns)
    assert [r.outcome for r in records] == ["error", "ok"]
    assert records[0].error_type == "BadRequestError"
    assert records[1].tokens_source == "reported"


def test_no_usage_at_all_is_counted_not_zero(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    server.push(Reply(usage="none"))
    _chunks(client)
    record = otel.record()
    assert record.tokens_source == "counted"
    assert record.output_tokens == 9
    assert record.input_tokens is None
    # Counted tokens are not reported usage: no token metric is emitted for them.
    assert semconv.METRIC_TOKEN_USAGE not in otel.metrics()


def test_continuous_usage_takes_the_last_chunk(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    server.push(Reply(usage="continuous"))
    _chunks(client)
    record = otel.record()
    assert record.tokens_source == "reported"
    assert record.output_tokens == 9  # not the sum 0+1+...+9


def test_usage_on_the_finish_chunk_and_llama_cpp_timings(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    server.push(Reply(usage="on_finish", prompt_tokens=21))
    chunks = _chunks(client)
    assert len(chunks) == 11  # the usage chunk the server adds for include_usage is hidden
    record = otel.record()
    assert (record.input_tokens, record.output_tokens) == (21, 9)
    attrs = otel.finished()[0].attributes
    assert attrs["llama_cpp.timings.predicted_per_second"] == 9 / 0.04
    assert attrs["llama_cpp.timings.prompt_n"] == 21


def test_cached_and_reasoning_tokens_are_breakdowns(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    server.push(Reply(prompt_tokens=100, cached_tokens=64, reasoning_tokens=5))
    client.chat.completions.create(model="m", messages=MESSAGES)
    record = otel.record()
    assert (record.input_tokens, record.cached_input_tokens) == (100, 64)
    assert (record.output_tokens, record.reasoning_tokens) == (9, 5)


@needs_responses
@pytest.mark.parametrize(
    ("reasoning", "total", "expected"),
    [(94, 135, (103, 94)), (5, 41, (9, 5)), (None, 135, (103, 94)), (94, None, (9, 94))],
    ids=["beside", "inside", "unreported", "no-total"],
)
def test_responses_reasoning_left_out_of_the_output_is_output(
    server: FakeOpenAIServer,
    otel: Otel,
    client: openai.OpenAI,
    reasoning: int | None,
    total: int | None,
    expected: tuple[int, int],
) -> None:
    """The Responses API's names: reasoning left out of `output_tokens`, reported beside it
    (xAI) or not at all (the total holds it), is added to the output once; inside it (OpenAI:
    the total is input + output), or with no total to tell, the output is as reported."""
    usage: dict[str, object] = {"input_tokens": 32, "output_tokens": 9}
    if reasoning is not None:
        usage["output_tokens_details"] = {"reasoning_tokens": reasoning}
    if total is not None:
        usage["total_tokens"] = total
    answer = {"id": "resp_1", "object": "response", "created_at": 1753000000, "model": "grok-4",
              "status": "completed", "output": [], "usage": usage}  # fmt: skip
    server.push(Reply(raw_body=json.dumps(answer).encode()))
    got = client.responses.create(model="grok-4", input="hi").usage
    assert got is not None
    assert got.to_dict() == usage
    record = otel.record()
    assert record.input_tokens == 32
    assert (record.output_tokens, record.reasoning_tokens) == expected


def test_stream_usage_setting_off(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    otel = make_otel(stream_usage=False)
    try:
        _chunks(client)
    finally:
        otel.instrumentor.uninstrument()
    assert "stream_options" not in server.requests[0].body
    assert otel.record().tokens_source == "counted"


def test_async_calls_retry_and_fail_as_sync_ones_do(
    server: FakeOpenAIServer, otel: Otel, new_aclient: Callable[[], openai.AsyncOpenAI]
) -> None:
    """The async wrapper: a refused option is retried once and remembered; a request refused
    with and without it fails with its own error, not chained to the first attempt's."""

    async def stream(aclient: openai.AsyncOpenAI) -> int:
        chunks = await aclient.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        return len([chunk async for chunk in chunks])

    async def scenario() -> BaseException:
        async with new_aclient() as aclient:
            server.push(Reply(status=400, html_error=True))
            server.push(Reply(status=400, html_error=True))
            with pytest.raises(openai.BadRequestError) as info:
                await stream(aclient)
            server.reject_stream_options = True
            assert await stream(aclient) == 11
            assert await stream(aclient) == 11
            return info.value

    error = asyncio.run(scenario())
    assert not isinstance(error.__context__, openai.APIError)
    bodies = [r.body for r in server.requests]
    assert ["stream_options" in b for b in bodies] == [True, False, True, False, False]
    records = sorted(otel.records(), key=lambda r: r.start_ns)
    assert [r.outcome for r in records] == ["error", "ok", "ok"]
