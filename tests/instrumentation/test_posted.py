"""Calls made through the SDK client's own `post`, without a create method: LiteLLM sends every
OpenAI chat call this way (`client.post("/chat/completions", body=..., options=<raw response
header>, stream=..., stream_cls=...)`, then `.parse()`). The real SDK, against FakeOpenAIServer,
called exactly so; bare and instrumented."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import openai
import pytest
from openai._base_client import make_request_options
from openai._constants import RAW_RESPONSE_HEADER
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from otelstats.fake_server import FakeOpenAIServer, Reply

from .conftest import MESSAGES, Otel, differential


def _plain(value: Any) -> Any:
    """What the caller gets, as data, without the server's per-answer id."""
    data = value.to_dict()
    data.pop("id", None)
    return data


def _request(stream: bool, raw: bool, stream_cls: Any) -> dict[str, Any]:
    """`post`'s arguments for a chat call, as LiteLLM passes them (raw: with the SDK's
    raw-response header, the response then parsed by the caller)."""
    headers = {RAW_RESPONSE_HEADER: "true"} if raw else None
    return {
        "body": {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream},
        "cast_to": ChatCompletion,
        "options": make_request_options(extra_headers=headers),
        "stream": stream,
        "stream_cls": stream_cls[ChatCompletionChunk],
    }


def post_chat(client: Any, *, stream: bool, raw: bool, path: str = "/chat/completions") -> Any:
    result = client.post(path, **_request(stream, raw, openai.Stream))
    if raw:
        assert result.headers["content-type"]  # the raw response is the caller's
        result = result.parse()
    return [_plain(c) for c in result] if stream else _plain(result)


async def apost_chat(client: Any, *, stream: bool, raw: bool) -> Any:
    result = await client.post("/chat/completions", **_request(stream, raw, openai.AsyncStream))
    if raw:
        result = result.parse()  # the legacy raw response parses without awaiting
    return [_plain(c) async for c in result] if stream else _plain(result)


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("raw", [False, True], ids=["parsed", "raw"])
@pytest.mark.parametrize("stream", [False, True], ids=["object", "stream"])
def test_a_chat_call_posted_without_a_create_method_is_one_call(
    server: FakeOpenAIServer, stream: bool, raw: bool, aio: bool
) -> None:
    """The caller gets what it gets bare; the call is recorded once, and its body goes to the
    server as the caller wrote it (no usage asked for: the body is the caller's)."""

    def scenario() -> Any:
        if aio:

            async def run() -> Any:
                async with openai.AsyncOpenAI(
                    base_url=server.base_url, api_key="k", max_retries=0
                ) as client:
                    return await apost_chat(client, stream=stream, raw=raw)

            return asyncio.run(run())
        with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
            return post_chat(client, stream=stream, raw=raw)

    plain, seen, otel = differential(scenario)
    assert seen == plain
    bare_body, instrumented_body = (r.body for r in server.requests)
    assert instrumented_body == bare_body
    assert "stream_options" not in instrumented_body
    record = otel.record()
    assert (record.operation, record.request_model, record.streaming) == (
        "chat",
        "gpt-4o-mini",
        stream,
    )
    assert record.outcome == "ok"
    assert record.output_tokens == (
        len(plain) - 2 if stream else plain["usage"]["completion_tokens"]
    )
    assert record.tokens_source == ("counted" if stream else "reported")
    assert record.server_address == "127.0.0.1"
    assert record.conversation_id is not None


def test_a_create_call_is_recorded_once_though_it_posts(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    """A create method posts through the same `post`: still one call, the create method's."""
    client.chat.completions.create(model="m", messages=MESSAGES)
    list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES).parse()
    records = otel.records()
    assert [r.streaming for r in records] == [False, True, False]
    assert [r.tokens_source for r in records] == ["reported", "reported", "reported"]
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    "path",
    ["/chat/completions/", "/chat/completions?api-version=2024-10-21",
     "/deployments/gpt-4o-mini/chat/completions"],
)  # fmt: skip
def test_the_path_names_the_api(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI, path: str
) -> None:
    """A trailing slash, a query, an Azure deployment's prefix: still a chat call."""
    server.push(Reply())
    # The fake server serves the plain path only; the call is recorded either way.
    with contextlib.suppress(openai.NotFoundError):
        post_chat(client, stream=False, raw=False, path=path)
    assert otel.record().operation == "chat"


def test_other_posts_and_embeddings(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    """Posts to the APIs otelstats does not count are no calls; embeddings posted are."""
    client.post(
        "/embeddings",
        body={"model": "text-embedding-3-small", "input": "foxes"},
        cast_to=CreateEmbeddingResponse,
    )
    with pytest.raises(openai.NotFoundError):
        client.post("/moderations", body={"input": "foxes"}, cast_to=object)
    with pytest.raises(openai.NotFoundError):
        client.post("/files", body=None, cast_to=object)
    (record,) = otel.records()
    assert (record.operation, record.request_model) == ("embeddings", "text-embedding-3-small")


def test_a_posted_call_that_fails_is_recorded_and_raises_as_it_would(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    server.push(Reply(status=500))
    with pytest.raises(openai.InternalServerError) as raised:
        post_chat(client, stream=False, raw=True)
    record = otel.record()
    assert (record.outcome, record.error_type) == ("error", type(raised.value).__qualname__)
