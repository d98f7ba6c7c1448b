"""The call's span is recorded when the call ends (all attributes at once), yet it spans the whole
call and keeps the parent the call started under, as a span started at the call's start would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan

from otelstats.fake_server import FakeOpenAIServer

from .conftest import MESSAGES, Otel

TOKEN_DELAY = 0.02


@pytest.fixture
def slow_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(token_delay=TOKEN_DELAY) as fake:
        yield fake


def _ours(otel: Otel) -> list[ReadableSpan]:
    return [
        s
        for s in otel.finished()
        if s.instrumentation_scope and "otelstats" in s.instrumentation_scope.name
    ]


def test_stream_span_runs_from_the_request_to_the_last_chunk(
    otel: Otel, slow_server: FakeOpenAIServer
) -> None:
    with openai.OpenAI(base_url=slow_server.base_url, api_key="k", max_retries=0) as client:
        before = time.time_ns()
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        returned = time.time_ns()
        chunks = 0
        for _chunk in stream:
            chunks += 1
            last_chunk = time.time_ns()
        after = time.time_ns()
    (span,) = _ours(otel)
    assert span.start_time is not None
    assert span.end_time is not None
    assert before <= span.start_time <= returned
    assert last_chunk <= span.end_time <= after
    # Every chunk after the first waits TOKEN_DELAY on the server: all of it is inside the span.
    assert span.end_time - span.start_time >= (chunks - 2) * TOKEN_DELAY * 1e9


def test_span_keeps_the_parent_the_call_started_under(otel: Otel, server: FakeOpenAIServer) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
        with tracer.start_as_current_span("turn") as turn:
            stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        with tracer.start_as_current_span("elsewhere"):
            for _chunk in stream:  # read under another span: the call's parent stays "turn"
                pass
        client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    streamed, plain = _ours(otel)
    assert streamed.parent is not None
    assert streamed.parent.span_id == turn.get_span_context().span_id
    assert streamed.context.trace_id == turn.get_span_context().trace_id
    assert plain.parent is None  # no span was current: a root span of a new trace
    assert plain.context.trace_id != turn.get_span_context().trace_id


def test_async_stream_read_in_another_task_keeps_its_parent(
    otel: Otel, server: FakeOpenAIServer
) -> None:
    tracer = otel.tracer_provider.get_tracer("app")

    async def main() -> int:
        async with openai.AsyncOpenAI(
            base_url=server.base_url, api_key="k", max_retries=0
        ) as client:
            with tracer.start_as_current_span("turn") as turn:
                stream = await client.chat.completions.create(
                    model="m", messages=MESSAGES, stream=True
                )  # type: ignore[arg-type]

            async def read() -> None:
                async for _chunk in stream:
                    pass

            await asyncio.create_task(read())
            return turn.get_span_context().span_id

    turn_id = asyncio.run(main())
    (span,) = _ours(otel)
    assert span.parent is not None
    assert span.parent.span_id == turn_id
