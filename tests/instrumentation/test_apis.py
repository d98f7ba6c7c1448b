"""Embeddings, legacy completions, the Responses API, raw and streaming-response variants,
conversations, internal failures, and instrument/uninstrument symmetry."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import openai
import pytest
import wrapt
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider

from otelstats import semconv
from otelstats.config import Settings
from otelstats.conversation import conversation
from otelstats.fake_server import FakeOpenAIServer, Reply
from otelstats.instrumentation import OpenAIInstrumentor

from .conftest import HAS_RESPONSES, MESSAGES, Otel, differential, make_otel, needs_responses


def test_embeddings(otel: Otel, client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="fake-embed", input=["a b c", "d e"])
    assert len(result.data) == 2
    record = otel.record()
    assert record.operation == "embeddings"
    assert record.input_tokens == result.usage.prompt_tokens
    assert record.conversation_id is None


def test_legacy_completions_stream_and_not(otel: Otel, client: openai.OpenAI) -> None:
    client.completions.create(model="m", prompt="once upon")
    chunks = list(client.completions.create(model="m", prompt="once upon", stream=True))
    assert len(chunks) == 10  # 9 text chunks + finish; the injected usage chunk is hidden
    records = otel.records()
    assert [r.operation for r in records] == ["text_completion"] * 2
    assert [r.output_tokens for r in records] == [9, 9]
    assert [r.tokens_source for r in records] == ["reported", "reported"]


@needs_responses
def test_responses_create(otel: Otel, client: openai.OpenAI) -> None:
    response = client.responses.create(model="m", input="hello there")
    assert response.output_text
    record = otel.record()
    assert record.output_tokens == response.usage.output_tokens
    assert record.outcome == "ok"
    assert record.finish_reasons == ("completed",)


def test_beta_responses_are_calls(server: FakeOpenAIServer) -> None:
    """The SDK's beta Responses (`client.beta.responses.create`, openai 3.x) post to
    `/responses?beta=true` with no instrumented create method: recorded through the client's
    `post`, an object and a stream, each once, with the server's usage."""

    def scenario() -> tuple[Any, list[str]]:
        with openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=0) as sdk:
            beta = getattr(getattr(sdk, "beta", None), "responses", None)
            if beta is None or not hasattr(beta, "create"):
                pytest.skip(f"openai {openai.__version__} has no beta Responses")
            answer = beta.create(model="m", input="hello")
            events = [e.type for e in beta.create(model="m", input="hello", stream=True)]
            return answer.usage.to_dict(), events

    bare, instrumented, otel = differential(scenario)
    assert instrumented == bare
    usage, events = bare
    assert events[-1] == "response.completed"
    streamed, whole = sorted(otel.records(), key=lambda r: r.streaming, reverse=True)
    for record in (streamed, whole):
        assert record.outcome == "ok"
        assert (record.input_tokens, record.output_tokens) == (
            usage["input_tokens"],
            usage["output_tokens"],
        )
        assert record.tokens_source == "reported"
    assert streamed.streaming
    assert streamed.time_to_first_chunk_s is not None
    assert not whole.streaming


def test_a_compaction_is_a_call(server: FakeOpenAIServer) -> None:
    """`responses.compact` (openai 3.x; the beta one too) runs the model over a conversation and
    is billed by its usage: a call, sync and async, in the conversation it compacts."""
    opening = [{"role": "user", "content": "Tell me about foxes."}]

    def scenario() -> list[Any]:
        async def compact_async() -> Any:
            async with openai.AsyncOpenAI(base_url=server.base_url, api_key="t") as sdk:
                return await sdk.responses.compact(model="m", input=opening)

        with openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=0) as sdk:
            if not hasattr(getattr(sdk, "responses", None), "compact"):
                pytest.skip(f"openai {openai.__version__} has no responses.compact")
            sdk.responses.create(model="m", input=opening)
            compacted = [sdk.responses.compact(model="m", input=opening)]
            beta = getattr(sdk.beta, "responses", None)
            if hasattr(beta, "compact"):
                compacted.append(beta.compact(model="m", input=opening))
        compacted.append(asyncio.run(compact_async()))
        return [c.to_dict() for c in compacted]

    bare, instrumented, otel = differential(scenario)
    assert [c["object"] for c in instrumented] == [c["object"] for c in bare]
    assert all(c["object"] == "response.compaction" for c in bare)
    answer, *compactions = sorted(otel.records(), key=lambda r: r.start_ns)
    assert len(compactions) == len(bare)
    for record, compacted in zip(compactions, instrumented, strict=True):
        assert (record.operation, record.outcome, record.request_model) == ("chat", "ok", "m")
        usage = compacted["usage"]
        assert (record.input_tokens, record.output_tokens) == (
            usage["input_tokens"],
            usage["output_tokens"],
        )
        assert record.conversation_id == answer.conversation_id


def test_an_input_token_count_is_no_call(otel: Otel, client: openai.OpenAI) -> None:
    """`responses.input_tokens.count` posts to `/responses/input_tokens`: it counts tokens with
    no model pass and costs none, so it is not a call (while `/responses/compact` is)."""
    counter = getattr(getattr(client, "responses", None), "input_tokens", None)
    if counter is None:
        pytest.skip(f"openai {openai.__version__} has no responses.input_tokens")
    counted = counter.count(model="m", input="Tell me about foxes.")
    assert counted.input_tokens > 0
    assert otel.records() == []


@needs_responses
def test_a_responses_error_answered_with_200_is_a_failure(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    """OpenRouter answers an error met mid-answer with 200 and `{"error": {...}}`: the SDK
    raises nothing and hands back a Response without a status; the call failed."""
    failed = {"error": {"code": 502, "message": "Provider returned error"}}
    server.push(Reply(raw_body=json.dumps(failed).encode()))
    response = client.responses.create(model="m", input="hello there")
    assert response.status is None
    record = otel.record()
    assert (record.outcome, record.error_type) == ("error", "502")


@needs_responses
@pytest.mark.parametrize(
    ("terminal", "outcome", "error_type"),
    [
        ("completed", "ok", None),
        ("incomplete", "ok", None),
        ("failed", "error", "server_error"),
        ("error", "error", "server_error"),
    ],
)
def test_responses_streaming_terminal_events(
    server: FakeOpenAIServer,
    otel: Otel,
    client: openai.OpenAI,
    terminal: Any,
    outcome: str,
    error_type: str | None,
) -> None:
    server.push(Reply(terminal=terminal))
    events = [e.type for e in client.responses.create(model="m", input="hi", stream=True)]
    assert events[-1] == ("error" if terminal == "error" else f"response.{terminal}")
    record = otel.record()
    assert (record.outcome, record.error_type) == (outcome, error_type)
    assert record.time_to_first_chunk_s is not None


@needs_responses
def test_responses_stream_helper_and_previous_response_id(
    otel: Otel, client: openai.OpenAI
) -> None:
    with client.responses.stream(model="m", input=[{"role": "user", "content": "hi"}]) as stream:
        for _event in stream:
            pass
        first = stream.get_final_response()
    client.responses.create(model="m", input="and then?", previous_response_id=first.id)
    records = otel.records()
    assert len(records) == 2
    assert records[0].conversation_id is not None
    assert records[1].conversation_id == records[0].conversation_id
    assert records[0].tokens_source == "reported"


def test_with_raw_response(otel: Otel, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.headers["content-type"] == "application/json"
    completion = raw.parse()
    assert completion.usage.completion_tokens == 9
    assert otel.record().output_tokens == 9


def test_with_streaming_response_user_reads_lines(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    streaming = client.chat.completions.with_streaming_response
    with streaming.create(model="m", messages=MESSAGES, stream=True) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert "stream_options" not in server.requests[0].body  # the body is the user's
    record = otel.record()
    assert record.outcome == "ok"
    assert record.tokens_source == "none"


def test_with_streaming_response_parse(otel: Otel, client: openai.OpenAI) -> None:
    streaming = client.chat.completions.with_streaming_response
    with streaming.create(model="m", messages=MESSAGES, stream=True) as response:
        chunks = list(response.parse())
    assert len(chunks) == 11
    record = otel.record()
    assert record.tokens_source == "counted"
    assert record.outcome == "ok"


def test_async_raw_response(otel: Otel, new_aclient: Callable[[], openai.AsyncOpenAI]) -> None:
    async def run() -> int:
        async with new_aclient() as aclient:
            streaming = aclient.embeddings.with_streaming_response
            async with streaming.create(model="e", input="x") as response:
                parsed = await response.parse()
        return len(parsed.data)

    assert asyncio.run(run()) == 1
    assert otel.record().operation == "embeddings"


def test_conversation_ids(otel: Otel, client: openai.OpenAI) -> None:
    turn2 = [
        *MESSAGES,
        {"role": "assistant", "content": "Foxes."},
        {"role": "user", "content": "?"},
    ]
    client.chat.completions.create(model="m", messages=MESSAGES)
    client.chat.completions.create(model="m", messages=turn2)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "other"}])
    with conversation("chat-42"):
        client.chat.completions.create(model="m", messages=MESSAGES)
    ids = [r.conversation_id for r in otel.records()]
    assert ids[0] == ids[1]
    assert ids[0] is not None
    assert ids[0].startswith("fp-")
    assert ids[2] != ids[0]
    assert ids[3] == "chat-42"
    attrs = otel.finished()[0].attributes
    assert "gen_ai.input.messages" not in attrs  # content is never recorded by default
    assert all("fox" not in str(v).lower() for v in attrs.values())


def test_a_picture_conversation_groups_by_its_picture(otel: Otel, client: openai.OpenAI) -> None:
    """A chat client that opens with a picture (a data URL of megabytes) resends it every turn:
    the turns share one conversation, another picture of the same size starts another."""

    def opening(picture: str) -> list[dict[str, Any]]:
        url = "data:image/png;base64," + picture
        parts = [
            {"type": "text", "text": "What?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        return [{"role": "user", "content": parts}]

    picture = "iVBORw0KGgo" + "QUJD" * 500_000
    other = picture[:1_000_000] + "QUJE" + picture[1_000_004:]
    turn2 = [
        *opening(picture),
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "?"},
    ]
    for messages in (opening(picture), turn2, opening(other)):
        client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    ids = [r.conversation_id for r in otel.records()]
    assert ids[0] is not None
    assert ids[0].startswith("fp-")
    assert ids[1] == ids[0]
    assert ids[2] != ids[0]
    assert all(len(str(v)) < 200 for v in otel.finished()[0].attributes.values())


def test_a_clock_in_the_system_prompt_keeps_one_conversation(
    otel: Otel, client: openai.OpenAI
) -> None:
    """Open WebUI's `{{CURRENT_DATETIME}}` and many agents rewrite the current time into the
    system prompt every turn: the turns stay one conversation. Another opening question, or
    another instruction (digits and dates included), is another conversation."""

    def turns(now: str, question: str = "Plan my day.", persona: str = "1") -> list[Any]:
        system = f"You are assistant {persona}. Current date and time: {now}. Be brief."
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]

    chat = turns("2026-12-06 09:15:02")
    second = [*turns("2026-12-06 09:16:40"), {"role": "assistant", "content": "Sure."},
              {"role": "user", "content": "And lunch?"}]  # fmt: skip
    third = [*turns("2026-12-06 12:01:09"), *second[2:], {"role": "assistant", "content": "Noon."},
             {"role": "user", "content": "Thanks."}]  # fmt: skip
    for messages in (chat, second, third):
        client.chat.completions.create(model="m", messages=messages)
    others = (
        turns("2026-12-06 09:17:00", question="Plan my week."),
        turns("2026-12-06 09:17:00", persona="2"),
        turns("2026-12-07 09:15:02"),  # another day's opening
        [{"role": "user", "content": "Meet at 09:15?"}],
        [{"role": "user", "content": "Meet at 09:16?"}],  # the user's own words are exact
    )
    for messages in others:
        client.chat.completions.create(model="m", messages=messages)
    ids = [r.conversation_id for r in otel.records()]
    assert ids[0] is not None
    assert ids[0].startswith("fp-")
    assert ids[1] == ids[0]
    assert ids[2] == ids[0]
    assert len(set(ids[3:])) == len(others)
    assert ids[0] not in ids[3:]


@needs_responses
def test_responses_instructions_open_the_conversation(otel: Otel, client: openai.OpenAI) -> None:
    """A Responses call's `instructions` are its system message: two agents whose users open
    alike are two conversations; an agent's later turns (its whole input resent, as the OpenAI
    Agents SDK sends it) stay its first turn's; the same opening as a chat call is the same."""
    first = [{"role": "user", "content": "hi"}]
    later = [*first, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "?"}]
    client.responses.create(model="m", instructions="You are a pirate.", input="hi")
    client.responses.create(model="m", instructions="You are a pirate.", input=later)  # type: ignore[arg-type]
    client.responses.create(model="m", instructions="You are a lawyer.", input=first)  # type: ignore[arg-type]
    client.responses.create(model="m", input=first)  # type: ignore[arg-type]
    system = {"role": "system", "content": "You are a pirate."}
    client.chat.completions.create(model="m", messages=[system, *first])  # type: ignore[list-item]
    ids = [r.conversation_id for r in otel.records()]
    assert ids[0] is not None
    assert ids[1] == ids[0]
    assert len({ids[0], ids[2], ids[3]}) == 3
    assert ids[4] == ids[0]


def test_conversation_ids_set_by_the_app(otel: Otel, client: openai.OpenAI) -> None:
    """An id on the app's current span or in its baggage wins over the fingerprint; with no
    span current the fingerprint is used again."""
    app = TracerProvider().get_tracer("app")
    with app.start_as_current_span("turn", attributes={semconv.CONVERSATION_ID: "span-7"}):
        client.chat.completions.create(model="m", messages=MESSAGES)
    with app.start_as_current_span("turn without an id"):
        client.chat.completions.create(model="m", messages=MESSAGES)
    token = otel_context.attach(baggage.set_baggage(semconv.CONVERSATION_ID, "baggage-3"))
    try:
        client.chat.completions.create(model="m", messages=MESSAGES)
    finally:
        otel_context.detach(token)
    client.chat.completions.create(model="m", messages=MESSAGES)
    ids = [r.conversation_id for r in otel.records()]
    assert ids[0] == "span-7"
    assert ids[1] is not None
    assert ids[1].startswith("fp-")
    assert ids[2] == "baggage-3"
    assert ids[3] == ids[1]


class _BrokenTracerProvider(TracerProvider):
    """A tracer provider whose spans cannot start: an internal failure of otelstats (met as a
    call ends, when otelstats starts the call's span)."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        tracer = super().get_tracer(*args, **kwargs)

        def start_span(*a: Any, **k: Any) -> Any:
            raise RuntimeError("injected failure")

        tracer.start_span = start_span  # type: ignore[method-assign]
        return tracer


def test_internal_failure_is_logged_once_and_swallowed(
    client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=_BrokenTracerProvider())
    try:
        with caplog.at_level(logging.WARNING, logger="otelstats.instrumentation"):
            first = client.chat.completions.create(model="m", messages=MESSAGES)
            chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    finally:
        instrumentor.uninstrument()
    assert first.choices[0].message.content
    assert len(chunks) == 11
    assert [r.message for r in caplog.records].count(
        "otelstats: internal error in ending a span (call unaffected)"
    ) == 1


def test_instrument_uninstrument_symmetry(server: FakeOpenAIServer, otel: Otel) -> None:
    chat = openai.resources.chat.completions.Completions
    embeddings = openai.resources.embeddings.AsyncEmbeddings
    posts = (openai._base_client.SyncAPIClient, openai._base_client.AsyncAPIClient)
    assert isinstance(vars(chat)["create"], wrapt.FunctionWrapper)
    assert isinstance(vars(embeddings)["create"], wrapt.FunctionWrapper)
    assert all(isinstance(vars(client)["post"], wrapt.FunctionWrapper) for client in posts)
    otel.instrumentor.uninstrument()
    assert not isinstance(vars(chat)["create"], wrapt.ObjectProxy)
    assert not isinstance(vars(embeddings)["create"], wrapt.ObjectProxy)
    assert not any(isinstance(vars(client)["post"], wrapt.ObjectProxy) for client in posts)
    with openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=0) as bare:
        bare.chat.completions.create(model="m", messages=MESSAGES)
    assert otel.records() == []
    # A fresh construction (the same singleton) still knows what to unwrap; wraps once.
    OpenAIInstrumentor().instrument(tracer_provider=TracerProvider())
    assert not isinstance(vars(chat)["create"].__wrapped__, wrapt.ObjectProxy)


def _captured(client: openai.OpenAI, messages: Any) -> Any:
    """The span attributes of one chat call made with content capture switched on."""
    otel = make_otel(settings=Settings(capture_content=True))
    try:
        client.chat.completions.create(model="m", messages=messages)
    finally:
        otel.instrumentor.uninstrument()
    return otel.finished()[0].attributes


def test_capture_content_from_settings(client: openai.OpenAI) -> None:
    attrs = _captured(client, MESSAGES)
    assert "foxes" in attrs["gen_ai.input.messages"]
    assert "quick brown fox" in attrs["gen_ai.output.messages"]


def test_captured_content_is_valid_json_with_long_strings_cut(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """Opted-in content capture of a picture (megabytes of data URL) and of a long answer: each
    attribute is JSON a reader can parse, every message and part is there, only the long
    strings are cut, and each says how long it was."""
    picture = "data:image/png;base64," + "QUJD" * 500_000
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": picture}},
    ]
    messages: Any = [*MESSAGES, {"role": "user", "content": parts}]
    answer = "word " * 20_000
    server.push(Reply(text=answer))
    attrs = _captured(client, messages)
    sent = json.loads(attrs["gen_ai.input.messages"])
    assert sent[: len(MESSAGES)] == MESSAGES
    assert sent[-1]["content"][0] == parts[0]
    url = sent[-1]["content"][1]["image_url"]["url"]
    assert url.startswith(picture[:1000])
    assert url.endswith(f"[{len(picture)} characters]")
    assert len(url) < 20_000
    (received,) = json.loads(attrs["gen_ai.output.messages"])
    assert received.startswith("word word")
    assert received.endswith(f"[{len(answer)} characters]")


def test_captured_content_of_streamed_answers(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """With content capture on, a streamed answer is captured as a non-streamed one is: the
    whole text the user saw (chat, legacy completions, Responses)."""
    otel = make_otel(settings=Settings(capture_content=True))
    try:
        chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
        client.chat.completions.create(model="m", messages=MESSAGES)
        legacy = list(client.completions.create(model="m", prompt="Say it", stream=True))
        legacy_whole = client.completions.create(model="m", prompt="Say it")
        if HAS_RESPONSES:
            events = list(client.responses.create(model="m", input="Say it", stream=True))
            response_whole = client.responses.create(model="m", input="Say it")
    finally:
        otel.instrumentor.uninstrument()
    seen = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    legacy_seen = "".join(c.choices[0].text for c in legacy if c.choices)
    captured = [json.loads(s.attributes["gen_ai.output.messages"]) for s in otel.finished()]
    assert seen
    assert captured[:2] == [[seen], [seen]]
    assert captured[2:4] == [[legacy_seen], [legacy_whole.choices[0].text]]
    assert legacy_seen
    if HAS_RESPONSES:
        said = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert captured[4:] == [[said], [response_whole.output_text]]
        assert said
    else:
        assert len(captured) == 4


def test_the_users_objects_print_as_the_sdks(server: FakeOpenAIServer) -> None:
    """What a user prints while debugging (a stream, its HTTP response, a raw response) reads
    as the SDK's own object, not as otelstats' proxy of it."""

    def printed() -> list[str]:
        # A client per run: the SDK caches `with_raw_response` per client, with the `create`
        # it found then (see test_raw_response_accessor_cached_before_instrument).
        with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
            stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
            seen = [repr(stream), repr(stream.response), repr(raw), str(stream)]
            stream.close()
            raw.parse()
        return [re.sub(r"0x[0-9a-f]+", "0x", text) for text in seen]

    bare, instrumented, otel = differential(printed)
    assert instrumented == bare
    assert bare[0].startswith("<openai.Stream object")
    assert len(otel.records()) == 2


def test_raw_response_accessor_cached_before_instrument(server: FakeOpenAIServer) -> None:
    """A known limit, shared with every instrumentation that wraps the SDK's methods: a client
    whose `with_raw_response` was first used before `instrument()` keeps the `create` it cached
    then, so its raw calls are not recorded (README: instrument before the first call)."""
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as early:
        early.chat.completions.with_raw_response.create(model="m", messages=MESSAGES).parse()
        otel = make_otel()
        try:
            early.chat.completions.with_raw_response.create(model="m", messages=MESSAGES).parse()
            early.chat.completions.create(model="m", messages=MESSAGES)
        finally:
            otel.instrumentor.uninstrument()
    assert [r.streaming for r in otel.records()] == [False]  # the plain call only
