"""Background responses (`responses.create(background=True)`): one call from the create to the
response's end, read from whichever follow-up shows it (a poll, a resumed stream, a cancel),
against the fake server's background mode and the real SDK."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from otelstats import _parked, semconv
from otelstats.fake_server import FakeOpenAIServer, Reply

from .conftest import Otel, differential, make_otel, needs_responses

pytestmark = needs_responses

TEXT = "Deep research takes a while to finish."


def _poll(client: openai.OpenAI, response: Any) -> list[str]:
    """The documented loop: retrieve until the status is no longer queued or in_progress."""
    seen = [response.status]
    while response.status in {"queued", "in_progress"}:
        response = client.responses.retrieve(response.id)
        seen.append(response.status)
    return [*seen, response.output_text]


def test_a_background_response_polled_to_its_end_is_one_call(server: FakeOpenAIServer) -> None:
    def scenario() -> list[str]:
        # the create (queued), two polls while it runs, the poll that finds it done
        server.push(Reply(), Reply(terminal="queued"), Reply(terminal="in_progress"))
        server.push(Reply(text=TEXT))
        with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
            response = client.responses.create(model="o3", input="research", background=True)
            return _poll(client, response)

    bare, instrumented, otel = differential(scenario)
    assert bare == instrumented == ["queued", "queued", "in_progress", "completed", TEXT]
    record = otel.record()
    assert record.outcome == "ok"
    assert record.finish_reasons == ("completed",)
    assert record.tokens_source == "reported"
    assert record.output_tokens == len(TEXT.split())
    assert record.input_tokens
    (span,) = otel.finished()
    assert span.attributes is not None
    assert str(span.attributes[semconv.RESPONSE_ID]).startswith("resp_")


def test_a_beta_background_response_polled_is_one_call(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    """`client.beta.responses` (openai 3.x): created through the client's post, followed up
    through its own `retrieve`."""
    beta = getattr(client.beta, "responses", None)
    if beta is None:
        pytest.skip(f"openai {openai.__version__} has no beta Responses")
    response = beta.create(model="o3", input="research", background=True)
    assert otel.records() == []
    assert beta.retrieve(response.id).status == "completed"
    record = otel.record()
    assert (record.outcome, record.finish_reasons) == ("ok", ("completed",))
    assert record.output_tokens


def test_the_duration_is_the_servers_not_the_polling_interval(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    """The server took 1 s (`completed_at - created_at`); the app polled after 2.5 s."""
    server.push(Reply(), Reply(server_seconds=1))
    response = client.responses.create(model="o3", input="research", background=True)
    time.sleep(2.5)
    assert client.responses.retrieve(response.id).status == "completed"
    record = otel.record()
    assert 1.0 <= record.duration_s < 1.5
    assert record.tokens_per_second is not None
    assert record.tokens_per_second >= record.output_tokens / 1.5  # not / 2.5


def test_async_background_response_polled_to_its_end(
    server: FakeOpenAIServer, otel: Otel, new_aclient: Callable[[], openai.AsyncOpenAI]
) -> None:
    server.push(Reply(), Reply(terminal="in_progress"), Reply(text=TEXT))

    async def run() -> str:
        async with new_aclient() as client:
            response = await client.responses.create(model="o3", input="go", background=True)
            while response.status in {"queued", "in_progress"}:
                response = await client.responses.retrieve(response.id)
            return response.output_text

    assert asyncio.run(run()) == TEXT
    record = otel.record()
    assert (record.outcome, record.output_tokens) == ("ok", len(TEXT.split()))


@pytest.mark.parametrize(
    ("status", "outcome", "error_type", "reasons"),
    [
        ("failed", "error", "server_error", ()),
        ("incomplete", "ok", None, ("max_output_tokens",)),
    ],
)
def test_a_background_response_that_fails_or_stops_short(
    server: FakeOpenAIServer,
    otel: Otel,
    client: openai.OpenAI,
    status: Any,
    outcome: str,
    error_type: str | None,
    reasons: tuple[str, ...],
) -> None:
    server.push(Reply(), Reply(terminal=status))
    response = client.responses.create(model="o3", input="research", background=True)
    assert client.responses.retrieve(response.id).status == status
    record = otel.record()
    assert (record.outcome, record.error_type) == (outcome, error_type)
    assert record.finish_reasons == reasons


def test_a_cancelled_background_response_is_cancelled(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    response = client.responses.create(model="o3", input="research", background=True)
    assert otel.records() == []  # still going on
    assert client.responses.cancel(response.id).status == "cancelled"
    assert client.responses.retrieve(response.id).status == "completed"  # not a second call
    record = otel.record()
    assert record.outcome == "cancelled"
    assert record.finish_reasons == ("cancelled",)


def _resumed(client: openai.OpenAI, server: FakeOpenAIServer, how: str) -> list[str]:
    """A background stream cut after 5 events, resumed after the last event read."""
    server.push(Reply(text=TEXT, cut_after=5, cut_mode="reset"), Reply(text=TEXT))
    seen: list[Any] = []
    stream = client.responses.create(model="o3", input="go", background=True, stream=True)
    with pytest.raises(openai.APIConnectionError):
        seen.extend(stream)
    response_id = seen[0].response.id
    last = seen[-1].sequence_number
    if how == "retrieve":
        rest = client.responses.retrieve(response_id, stream=True, starting_after=last)
        seen.extend(rest)
    else:  # the SDK's helper, which resumes through `retrieve`
        with client.responses.stream(response_id=response_id, starting_after=last) as rest:
            seen.extend(rest)
    return [e.type for e in seen]


@pytest.mark.parametrize("how", ["retrieve", "stream_helper"])
def test_a_cut_background_stream_resumed_is_one_call(server: FakeOpenAIServer, how: str) -> None:
    def scenario() -> list[str]:
        with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
            return _resumed(client, server, how)

    bare, instrumented, otel = differential(scenario)
    assert bare == instrumented
    assert instrumented[0] == "response.created"
    assert instrumented[-1] == "response.completed"
    record = otel.record()
    assert record.outcome == "ok"
    assert record.tokens_source == "reported"
    assert record.output_tokens == len(TEXT.split())
    assert record.time_to_first_chunk_s is not None


@pytest.mark.parametrize("how", ["retrieve", "stream_helper"])
def test_a_background_stream_resumed_from_the_start_is_counted_once(
    server: FakeOpenAIServer, client: openai.OpenAI, how: str
) -> None:
    """Resumed without a cursor (a page reloaded re-attaches to the response), the server
    replays every event: a server that sends no usage has its output counted once, not the
    first stream's part twice, and the captured answer is the answer, once."""
    otel = make_otel(capture_content=True)
    server.push(
        Reply(text=TEXT, usage="none", cut_after=8, cut_mode="reset"),
        Reply(text=TEXT, usage="none"),
    )
    try:
        seen: list[Any] = []
        with pytest.raises(openai.APIConnectionError):
            seen.extend(
                client.responses.create(model="o3", input="go", background=True, stream=True)
            )
        deltas_before = sum(e.type.endswith(".delta") for e in seen)
        assert deltas_before > 1
        response_id = seen[0].response.id
        if how == "retrieve":
            replay = list(client.responses.retrieve(response_id, stream=True))
        else:
            with client.responses.stream(response_id=response_id) as rest:
                replay = list(rest)
    finally:
        otel.instrumentor.uninstrument()
    assert replay[0].type == "response.created"  # every event again
    record = otel.record()
    assert (record.outcome, record.tokens_source) == ("ok", "counted")
    assert record.output_tokens == len(TEXT.split())
    (span,) = otel.finished()
    assert span.attributes is not None
    assert str(span.attributes[semconv.OUTPUT_MESSAGES]).count("Deep research") == 1


def test_an_async_cut_background_stream_resumed_is_one_call(
    server: FakeOpenAIServer, otel: Otel, new_aclient: Callable[[], openai.AsyncOpenAI]
) -> None:
    server.push(Reply(text=TEXT, cut_after=5, cut_mode="reset"), Reply(text=TEXT))

    async def run() -> list[str]:
        seen: list[Any] = []
        async with new_aclient() as client:
            stream = await client.responses.create(
                model="o3", input="go", background=True, stream=True
            )

            async def read_all() -> None:
                async for event in stream:
                    seen.append(event)

            with pytest.raises(openai.APIConnectionError):
                await read_all()
            rest = await client.responses.retrieve(
                seen[0].response.id, stream=True, starting_after=seen[-1].sequence_number
            )
            seen.extend([event async for event in rest])
        return [event.type for event in seen]

    events = asyncio.run(run())
    assert events[-1] == "response.completed"
    record = otel.record()
    assert (record.outcome, record.output_tokens) == ("ok", len(TEXT.split()))
    assert record.time_to_first_chunk_s is not None


@pytest.mark.parametrize("then", ["ends", "closed", "exit"])
def test_a_background_stream_cancelled_while_read_is_cancelled(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI, then: str
) -> None:
    """A chat app's stop button: the response cancelled while its stream is being read. The
    stream then ends without the response's end, or the app closes it, or leaves it open until
    it exits: one call, cancelled (not kept open for a follow-up that will never come)."""
    server.push(Reply(text=TEXT, cut_after=5, cut_mode="eof"))  # nothing more after the cancel
    stream = client.responses.create(model="o3", input="go", background=True, stream=True)
    events = iter(stream)
    created = next(events)
    while not next(events).type.endswith(".delta"):  # until the answer has begun
        pass
    assert otel.records() == []
    assert client.responses.cancel(created.response.id).status == "cancelled"
    if then == "ends":
        assert [e.type for e in events][-1] != "response.completed"
    elif then == "closed":
        stream.close()
    else:  # left open until the program exits
        otel.instrumentor.end_unfinished()
        stream.close()
    record = otel.record()
    assert (record.outcome, record.finish_reasons) == ("cancelled", ("cancelled",))
    assert record.time_to_first_chunk_s is not None


def test_an_async_background_stream_cancelled_while_read_is_cancelled(
    server: FakeOpenAIServer, otel: Otel, new_aclient: Callable[[], openai.AsyncOpenAI]
) -> None:
    """The stop button in an async app: the cancel awaited while another task reads."""
    server.push(Reply(text=TEXT, cut_after=8, cut_mode="eof", token_delay=0.05))

    async def run() -> list[str]:
        async with new_aclient() as client:
            stream = await client.responses.create(
                model="o3", input="go", background=True, stream=True
            )
            types: list[str] = []
            ids: list[str] = []
            begun = asyncio.Event()

            async def read() -> None:
                async for event in stream:
                    types.append(event.type)
                    if event.type == "response.created":
                        ids.append(event.response.id)
                    elif event.type.endswith(".delta"):
                        begun.set()

            reader = asyncio.create_task(read())
            await begun.wait()
            await client.responses.cancel(ids[0])
            await reader
            return types

    types = asyncio.run(run())
    assert types[-1] != "response.completed"
    record = otel.record()
    assert (record.outcome, record.finish_reasons) == ("cancelled", ("cancelled",))


def test_a_background_stream_cancelled_too_late_ends_as_the_server_says(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    """The cancel came after the server had finished the answer: the stream's own end wins."""
    server.push(Reply(text=TEXT))
    stream = client.responses.create(model="o3", input="go", background=True, stream=True)
    events = iter(stream)
    created = next(events)
    client.responses.cancel(created.response.id)
    assert [e.type for e in events][-1] == "response.completed"
    record = otel.record()
    assert (record.outcome, record.finish_reasons) == ("ok", ("completed",))
    assert record.tokens_source == "reported"


def _polled_to_its_end(client: openai.OpenAI, otel: Otel, response_id: str) -> Any:
    """Nothing recorded while the response goes on; the poll that finds it done records it,
    whole: the record."""
    assert otel.records() == []
    assert client.responses.retrieve(response_id).status == "completed"
    record = otel.record()
    assert (record.outcome, record.output_tokens) == ("ok", len(TEXT.split()))
    return record


def test_a_background_stream_left_then_polled_is_one_call(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    server.push(Reply(text=TEXT), Reply(text=TEXT))
    with client.responses.create(model="o3", input="go", background=True, stream=True) as stream:
        for event in stream:
            if event.type == "response.created":
                response_id = event.response.id
            if event.type == "response.output_text.delta":
                break  # the user stops reading; the response goes on at the server
    record = _polled_to_its_end(client, otel, response_id)
    assert record.time_to_first_chunk_s is not None


def test_a_cut_background_stream_collected_before_its_poll_is_one_call(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    server.push(Reply(text=TEXT, cut_after=5, cut_mode="reset"), Reply(text=TEXT))
    seen: list[Any] = []
    stream = client.responses.create(model="o3", input="go", background=True, stream=True)
    with pytest.raises(openai.APIConnectionError):
        seen.extend(stream)
    response_id = seen[0].response.id
    del stream, seen
    gc.collect()  # the stream's proxy is freed: the response still goes on
    _polled_to_its_end(client, otel, response_id)


def test_a_background_response_never_followed_is_recorded_at_exit(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    started = time.perf_counter()
    client.responses.create(model="o3", input="research", background=True)
    returned = time.perf_counter() - started
    time.sleep(0.3)
    assert otel.records() == []
    otel.instrumentor.end_unfinished()
    record = otel.record()
    assert record.outcome == "ok"
    assert record.finish_reasons == ("queued",)  # as it stood when last seen
    assert record.tokens_source == "none"
    assert record.duration_s <= returned  # the create's own time, not the time until exit


def test_a_cut_background_stream_never_followed_is_cut_short_at_exit(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    """As a cut stream was recorded before background responses were followed."""
    server.push(Reply(text=TEXT, cut_after=5, cut_mode="reset"))
    with pytest.raises(openai.APIConnectionError):
        list(client.responses.create(model="o3", input="go", background=True, stream=True))
    assert otel.records() == []
    otel.instrumentor.end_unfinished()
    record = otel.record()
    assert (record.outcome, record.error_type) == ("incomplete", "APIConnectionError")
    assert record.time_to_first_chunk_s is not None
    (span,) = otel.finished()
    assert span.status.description  # the connection error's message


def test_a_background_response_created_during_exit_is_recorded_at_once(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    """Once the exit has recorded what was open, nothing more is kept open: a background create
    then is recorded as it was answered, whole."""
    otel.instrumentor.end_unfinished()
    response = client.responses.create(model="o3", input="research", background=True)
    (span,) = otel.finished()
    assert span.attributes is not None
    assert span.attributes[semconv.RESPONSE_MODEL] == response.model
    assert span.attributes[semconv.RESPONSE_ID] == response.id
    assert otel.record().finish_reasons == ("queued",)


def test_a_next_turn_before_the_end_is_in_the_same_conversation(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    """A turn chained onto a background response (`previous_response_id`) that this process
    has not seen end (another process polls it) continues its conversation."""
    first = client.responses.create(model="o3", input="research foxes", background=True)
    client.responses.create(model="o3", input="and owls?", previous_response_id=first.id)
    otel.instrumentor.end_unfinished()
    records = otel.records()
    assert len(records) == 2
    assert records[0].conversation_id is not None
    assert records[0].conversation_id == records[1].conversation_id


def test_a_parked_call_is_given_up_after_its_age(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_parked, "MAX_AGE_S", 0.5)
    first = client.responses.create(model="o3", input="research", background=True)
    time.sleep(0.6)
    client.responses.create(model="o3", input="more research", background=True)
    (span,) = otel.finished()
    assert span.attributes is not None
    assert span.attributes[semconv.RESPONSE_ID] == first.id
    assert otel.record().finish_reasons == ("queued",)


def test_a_background_response_the_server_no_longer_has_is_recorded_at_once(
    server: FakeOpenAIServer,
) -> None:
    """A poll answered 404 (the response expired, or another process deleted it): its end will
    never be seen, so the call is recorded as it stood then, not an hour later; the user gets
    the SDK's own error."""

    def scenario() -> tuple[str, int, str]:
        server.push(Reply(), Reply(status=404, error_message="Response not found"))
        with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
            response = client.responses.create(model="o3", input="research", background=True)
            with pytest.raises(openai.NotFoundError) as caught:
                client.responses.retrieve(response.id)
            return type(caught.value).__name__, caught.value.status_code, caught.value.message

    bare, instrumented, otel = differential(scenario)
    assert bare == instrumented
    record = otel.record()  # before any exit
    assert (record.outcome, record.finish_reasons) == ("ok", ("queued",))
    assert record.tokens_source == "none"


@pytest.mark.parametrize("how", ["cancel", "stream"])
def test_an_async_follow_up_answered_404_gives_the_call_up(
    server: FakeOpenAIServer,
    otel: Otel,
    new_aclient: Callable[[], openai.AsyncOpenAI],
    how: str,
) -> None:
    server.push(Reply(), Reply(status=404))

    async def run() -> None:
        async with new_aclient() as client:
            response = await client.responses.create(model="o3", input="go", background=True)
            follow_up = (
                client.responses.cancel(response.id)
                if how == "cancel"
                else client.responses.retrieve(response.id, stream=True, starting_after=3)
            )
            with pytest.raises(openai.NotFoundError):
                await follow_up

    asyncio.run(run())
    assert otel.record().finish_reasons == ("queued",)


def test_a_background_response_deleted_is_recorded_at_once(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    if not hasattr(client.responses, "delete"):
        pytest.skip("this SDK has no responses.delete")
    response = client.responses.create(model="o3", input="research", background=True)
    other = client.responses.create(model="o3", input="more research", background=True)
    assert client.responses.delete(response.id) is None
    (span,) = otel.finished()
    assert span.attributes is not None
    assert span.attributes[semconv.RESPONSE_ID] == response.id
    assert otel.record().finish_reasons == ("queued",)
    client.responses.retrieve(other.id)  # the other one is still followed
    assert [r.finish_reasons for r in otel.records()] == [("queued",), ("completed",)]


def test_a_follow_up_that_fails_otherwise_leaves_the_call_parked(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    """A 500 or a 429 to a poll says nothing of the response: the app polls again."""
    server.push(Reply(), Reply(status=500), Reply(status=429))
    response = client.responses.create(model="o3", input="research", background=True)
    with pytest.raises(openai.InternalServerError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.RateLimitError):
        client.responses.retrieve(response.id)
    assert otel.records() == []
    assert client.responses.retrieve(response.id).status == "completed"
    assert otel.record().finish_reasons == ("completed",)


def test_follow_ups_of_other_responses_are_not_calls(
    server: FakeOpenAIServer, otel: Otel, client: openai.OpenAI
) -> None:
    """A retrieve of a response this process did not leave going on (a finished one, another
    process's) records nothing; a raw retrieve leaves the body to the user."""
    done = client.responses.create(model="m", input="hi")
    assert client.responses.retrieve(done.id).status == "completed"
    assert client.responses.retrieve("resp_elsewhere").id == "resp_elsewhere"
    assert len(otel.records()) == 1
    pending = client.responses.create(model="o3", input="research", background=True)
    raw = client.responses.with_raw_response.retrieve(pending.id)
    assert raw.parse().status == "completed"
    assert len(otel.records()) == 1  # still going on, as far as otelstats read
    client.responses.retrieve(pending.id)
    assert len(otel.records()) == 2


def test_uninstrumented_follow_ups_are_the_sdks(server: FakeOpenAIServer) -> None:
    otel = make_otel()
    assert hasattr(openai.resources.responses.Responses.retrieve, "__wrapped__")
    assert hasattr(openai.resources.responses.AsyncResponses.cancel, "__wrapped__")
    otel.instrumentor.uninstrument()
    assert openai.resources.responses.Responses.retrieve.__qualname__ == "Responses.retrieve"
    assert openai.resources.responses.Responses.cancel.__qualname__ == "Responses.cancel"
    assert not hasattr(openai.resources.responses.Responses.retrieve, "__wrapped__")
