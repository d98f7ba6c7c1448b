"""Arguments and clients as apps really pass and make them: whatever the SDK accepts is recorded
as what the SDK sent, and the user's result is the bare SDK's."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import Any

import openai
import pytest

from otelstats import semconv
from otelstats.fake_server import FakeOpenAIServer

from .conftest import MESSAGES, Otel, differential


class Model(str, enum.Enum):
    """How apps often name their models: format() and str() give `Model.SMALL`, the SDK sends
    the text."""

    SMALL = "fake-gpt-4o-mini"


@pytest.mark.parametrize("flag", [1, "yes", [True]], ids=["int", "str", "list"])
def test_any_true_stream_flag_streams_and_is_recorded_as_a_stream(
    server: FakeOpenAIServer, client: openai.OpenAI, flag: Any
) -> None:
    def scenario() -> list[Any]:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=flag)
        return [chunk.choices[0].delta.content for chunk in stream if chunk.choices]

    bare, instrumented, otel = differential(scenario)
    assert instrumented == bare
    assert len(bare) > 2
    record = otel.record()
    assert record.streaming is True
    assert record.time_to_first_chunk_s is not None
    assert record.finish_reasons == ("stop",)
    assert (record.output_tokens, record.tokens_source) == (9, "reported")
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}


def test_an_async_true_stream_flag(new_aclient: Callable[[], openai.AsyncOpenAI]) -> None:
    async def scenario() -> list[Any]:
        async with new_aclient() as client:
            stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=1)
            return [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]

    bare, instrumented, otel = differential(lambda: asyncio.run(scenario()))
    assert instrumented == bare
    record = otel.record()
    assert record.streaming is True
    assert (record.output_tokens, record.tokens_source) == (9, "reported")


@pytest.mark.parametrize("flag", [0, "", None], ids=["zero", "empty", "none"])
def test_a_false_stream_flag_is_a_plain_call(client: openai.OpenAI, otel: Otel, flag: Any) -> None:
    result = client.chat.completions.create(model="m", messages=MESSAGES, stream=flag)
    assert isinstance(result, openai.types.chat.ChatCompletion)
    record = otel.record()
    assert record.streaming is False
    assert record.output_tokens == result.usage.completion_tokens  # type: ignore[union-attr]


def test_a_model_named_by_a_str_enum_is_recorded_by_its_text(
    server: FakeOpenAIServer, client: openai.OpenAI, otel: Otel
) -> None:
    client.chat.completions.create(model=Model.SMALL, messages=MESSAGES)
    assert server.requests[0].body["model"] == "fake-gpt-4o-mini"
    (span,) = otel.finished()
    assert span.name == "chat fake-gpt-4o-mini"
    model = span.attributes[semconv.REQUEST_MODEL]
    assert type(model) is str
    assert model == "fake-gpt-4o-mini"
    assert otel.record().request_model == "fake-gpt-4o-mini"
    (point,) = otel.metrics()[semconv.METRIC_OPERATION_DURATION]
    label = point.attributes[semconv.REQUEST_MODEL]
    assert type(label) is str
    assert label == "fake-gpt-4o-mini"


def _azure(server: FakeOpenAIServer, **kwargs: Any) -> openai.AzureOpenAI:
    endpoint = server.base_url.removesuffix("/v1")
    return openai.AzureOpenAI(
        azure_endpoint=endpoint, api_key="k", api_version="2024-10-21", max_retries=0, **kwargs
    )


def test_azure_clients_are_named_azure_openai(server: FakeOpenAIServer, otel: Otel) -> None:
    with _azure(server) as azure, _azure(server, azure_deployment="prod") as deployed:
        azure.chat.completions.create(model="my-deployment", messages=MESSAGES)
        stream = deployed.chat.completions.create(model="prod", messages=MESSAGES, stream=True)
        assert list(stream)
        azure.embeddings.create(model="my-embeddings", input="hi")
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as plain:
        plain.chat.completions.create(model="m", messages=MESSAGES)
    paths = [request.path for request in server.requests]
    assert paths[0].startswith("/openai/deployments/my-deployment/chat/completions")
    records = otel.records()
    assert [r.provider for r in records] == [semconv.PROVIDER_AZURE_OPENAI] * 3 + ["openai"]
    assert [r.request_model for r in records] == ["my-deployment", "prod", "my-embeddings", "m"]
    labels = {
        point.attributes[semconv.PROVIDER_NAME]
        for point in otel.metrics()[semconv.METRIC_OPERATION_DURATION]
    }
    assert labels == {semconv.PROVIDER_AZURE_OPENAI, "openai"}


@pytest.mark.parametrize(
    ("host", "path", "provider"),
    [
        ("my-resource.openai.azure.com", "/openai/v1/", "azure.ai.openai"),
        ("my-resource.openai.azure.com", "/openai", "azure.ai.openai"),
        ("my-resource.cognitiveservices.azure.com", "/openai/v1", "azure.ai.openai"),
        ("my-project.services.ai.azure.com", "/openai/v1", "azure.ai.openai"),
        ("gov.openai.azure.us", "/openai", "azure.ai.openai"),
        ("china.openai.azure.cn", "/openai/v1", "azure.ai.openai"),
        ("gateway.azure-api.net", "/team/openai", "azure.ai.openai"),
        ("my-project.services.ai.azure.com", "/models", "openai"),
        ("myapp.azurewebsites.net", "/openai/v1", "openai"),
        ("api.openai.com", "/v1", "openai"),
        ("localhost", "/v1", "openai"),
        ("openai.azure.com.example.org", "/openai", "openai"),
        (None, "", "openai"),
    ],
)
def test_the_provider_is_named_by_the_servers_address(
    host: str | None, path: str, provider: str
) -> None:
    assert semconv.provider_name(host, path) == provider


def test_azure_through_the_plain_client_is_named_by_its_address(
    server: FakeOpenAIServer, otel: Otel
) -> None:
    """Azure's v1 API is called with the plain OpenAI client at the resource's address; here that
    address is reached through an HTTP proxy, the fake server, which answers for any host."""
    proxy = server.base_url.removesuffix("/v1")
    url = "http://my-resource.openai.azure.com/openai/v1/"
    http = openai.DefaultHttpxClient(proxy=proxy)
    with openai.OpenAI(base_url=url, api_key="k", max_retries=0, http_client=http) as client:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert server.requests[0].path == url + "chat/completions"
    record = otel.record()
    assert record.provider == semconv.PROVIDER_AZURE_OPENAI
    assert record.server_address == "my-resource.openai.azure.com"


def test_usage_is_asked_beside_the_callers_own_extra_body(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """Local servers' sampling options travel in `extra_body` (llama.cpp's and vLLM's `top_k`);
    otelstats' ask for usage goes beside them, and the caller's dict is left as it was."""
    extra = {"top_k": 40, "repetition_penalty": 1.1}

    def scenario() -> list[Any]:
        stream = client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, extra_body=extra
        )
        return [chunk.to_dict() for chunk in stream]

    bare, instrumented, otel = differential(scenario)
    assert [{k: v for k, v in c.items() if k != "id"} for c in instrumented] == [
        {k: v for k, v in c.items() if k != "id"} for c in bare
    ]
    assert extra == {"top_k": 40, "repetition_penalty": 1.1}
    sent = server.requests[-1].body
    assert (sent["top_k"], sent["repetition_penalty"]) == (40, 1.1)
    assert sent["stream_options"] == {"include_usage": True}
    assert "stream_options" not in server.requests[0].body
    assert otel.record().tokens_source == "reported"
