"""Background responses through the recording proxy: the follow-ups (retrieve, resumed stream,
cancel) are forwarded, and a background response is one call from its create to its end, as
for an instrumented SDK. Real sockets: the fake upstream, the proxy, the real openai SDK."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from otelstats.fake_server import FakeOpenAIServer, Reply

from .conftest import RunningProxy

TEXT = "Deep research takes a while to finish."

pytestmark = pytest.mark.skipif(
    not hasattr(openai.OpenAI, "responses"),
    reason=f"openai {openai.__version__} has no Responses API",
)


@pytest.fixture
def client_for() -> Iterator[Callable[[str], openai.OpenAI]]:
    """client_for(base_url) -> an SDK client, closed after the test."""
    made: list[openai.OpenAI] = []

    def make(base_url: str) -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_a_background_response_polled_through_the_proxy_is_one_call(
    upstream: FakeOpenAIServer, start_proxy: Any, client_for: Any
) -> None:
    """The server took 1 s by its clock; the app polled twice, the second time after 2.5 s."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    upstream.push(Reply(), Reply(terminal="in_progress"), Reply(text=TEXT, server_seconds=1))
    client = client_for(proxy.base_url)
    response = client.responses.create(model="o3", input="research", background=True)
    assert response.status == "queued"
    assert client.responses.retrieve(response.id).status == "in_progress"
    time.sleep(2.5)
    done = client.responses.retrieve(response.id)
    assert (done.status, done.output_text) == ("completed", TEXT)
    (row,) = proxy.calls(at_least=1)
    assert (row["outcome"], row["finish_reasons"]) == ("ok", "completed")
    assert (row["input_tokens"], row["output_tokens"]) == (
        done.usage.input_tokens,
        done.usage.output_tokens,
    )
    assert row["tokens_source"] == "reported"
    assert 1.0 <= row["duration_s"] < 1.5


def test_a_cancelled_background_response_through_the_proxy(
    upstream: FakeOpenAIServer, start_proxy: Any, client_for: Any
) -> None:
    proxy: RunningProxy = start_proxy(upstream.base_url)
    client = client_for(proxy.base_url)
    response = client.responses.create(model="o3", input="research", background=True)
    assert proxy.calls() == []  # still going on
    assert client.responses.cancel(response.id).status == "cancelled"
    assert client.responses.retrieve(response.id).status == "completed"  # no second call
    (row,) = proxy.calls(at_least=1)
    assert (row["outcome"], row["finish_reasons"]) == ("cancelled", "cancelled")


def _cut_and_resumed(client: openai.OpenAI, upstream: FakeOpenAIServer) -> list[str]:
    upstream.push(Reply(text=TEXT, cut_after=5, cut_mode="reset"), Reply(text=TEXT))
    seen: list[Any] = []
    stream = client.responses.create(model="o3", input="go", background=True, stream=True)
    with stream, pytest.raises(openai.APIConnectionError):  # through the proxy too
        seen.extend(stream)
    assert seen[-1].type == "response.output_item.added" or seen[-1].type.endswith(".delta")
    rest = client.responses.retrieve(
        seen[0].response.id, stream=True, starting_after=seen[-1].sequence_number
    )
    seen.extend(rest)
    return [event.type for event in seen]


def test_a_cut_background_stream_resumed_through_the_proxy_is_one_call(
    upstream: FakeOpenAIServer, start_proxy: Any, client_for: Any
) -> None:
    proxy: RunningProxy = start_proxy(upstream.base_url)
    direct = _cut_and_resumed(client_for(upstream.base_url), upstream)
    proxied = _cut_and_resumed(client_for(proxy.base_url), upstream)
    assert proxied == direct
    assert proxied[-1] == "response.completed"
    (row,) = proxy.calls(at_least=1)
    assert (row["outcome"], row["streaming"], row["tokens_source"]) == ("ok", True, "reported")
    assert row["output_tokens"] == len(TEXT.split())
    assert row["time_to_first_chunk_s"] is not None


def test_a_background_stream_replayed_through_the_proxy_is_counted_once(
    upstream: FakeOpenAIServer, start_proxy: Any, client_for: Any
) -> None:
    """Resumed without a cursor, every event comes again: counted once (no usage sent)."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    upstream.push(
        Reply(text=TEXT, usage="none", cut_after=8, cut_mode="reset"),
        Reply(text=TEXT, usage="none"),
    )
    client = client_for(proxy.base_url)
    seen: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        seen.extend(client.responses.create(model="o3", input="go", background=True, stream=True))
    replay = list(client.responses.retrieve(seen[0].response.id, stream=True))
    assert replay[-1].type == "response.completed"
    (row,) = proxy.calls(at_least=1)
    assert (row["outcome"], row["tokens_source"]) == ("ok", "counted")
    assert row["output_tokens"] == len(TEXT.split())


def test_a_background_response_never_followed_is_recorded_when_the_proxy_stops(
    upstream: FakeOpenAIServer, start_proxy: Any, client_for: Any
) -> None:
    proxy: RunningProxy = start_proxy(upstream.base_url)
    started = time.perf_counter()
    client_for(proxy.base_url).responses.create(model="o3", input="research", background=True)
    returned = time.perf_counter() - started
    time.sleep(0.3)
    assert proxy.calls() == []
    proxy.server.end_open_calls()
    (row,) = proxy.calls(at_least=1)
    assert (row["outcome"], row["finish_reasons"]) == ("ok", "queued")
    assert row["tokens_source"] == "none"
    assert row["duration_s"] <= returned  # the create's own time, not the time until the stop


def test_a_next_turn_before_the_end_is_in_the_same_conversation_through_the_proxy(
    upstream: FakeOpenAIServer, start_proxy: Any, client_for: Any
) -> None:
    proxy: RunningProxy = start_proxy(upstream.base_url)
    client = client_for(proxy.base_url)
    first = client.responses.create(model="o3", input="research foxes", background=True)
    client.responses.create(model="o3", input="and owls?", previous_response_id=first.id)
    proxy.server.end_open_calls()
    rows = proxy.calls(at_least=2)
    assert len(rows) == 2
    assert rows[0]["conversation_id"] is not None
    assert rows[0]["conversation_id"] == rows[1]["conversation_id"]


def test_a_background_stream_cancelled_while_relayed_is_cancelled(
    upstream: FakeOpenAIServer, start_proxy: Any, client_for: Any
) -> None:
    """A stop button: the response cancelled through the proxy while the proxy still relays
    its stream (the upstream sends an event every 0.5 s and ends it, cut, after the cancel).
    One call, cancelled, at once: not parked until a follow-up that will never come."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    upstream.push(Reply(text=TEXT, cut_after=8, cut_mode="eof", token_delay=0.5))
    client = client_for(proxy.base_url)
    stream = client.responses.create(model="o3", input="go", background=True, stream=True)
    events = iter(stream)
    created = next(events)
    while not next(events).type.endswith(".delta"):  # the answer has begun
        pass
    assert client.responses.cancel(created.response.id).status == "cancelled"
    assert proxy.calls() == []  # the stream is still being relayed
    assert [e.type for e in events][-1] != "response.completed"
    (row,) = proxy.calls(at_least=1)
    assert (row["outcome"], row["finish_reasons"]) == ("cancelled", "cancelled")


@pytest.mark.parametrize("gone", ["expired", "deleted"])
def test_a_background_response_the_upstream_no_longer_has_is_recorded_at_once(
    upstream: FakeOpenAIServer, start_proxy: Any, client_for: Any, gone: str
) -> None:
    """A poll answered 404, or a delete: its end will never be seen through the proxy, so the
    call is recorded as it stood, not when the proxy stops. A 500 to a poll says nothing."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    client = client_for(proxy.base_url)
    response = client.responses.create(model="o3", input="research", background=True)
    upstream.push(Reply(status=500))
    with pytest.raises(openai.InternalServerError):
        client.responses.retrieve(response.id)
    time.sleep(0.2)
    assert proxy.calls() == []
    if gone == "expired":
        upstream.push(Reply(status=404, error_message="Response not found"))
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response.id)
    else:
        if not hasattr(client.responses, "delete"):
            pytest.skip(f"openai {openai.__version__} has no responses.delete")
        client.responses.delete(response.id)
        assert upstream.requests[-1].method == "DELETE"
    (row,) = proxy.calls(at_least=1)
    assert (row["outcome"], row["finish_reasons"]) == ("ok", "queued")
    assert row["tokens_source"] == "none"


def test_follow_ups_of_other_responses_pass_through_unrecorded(
    upstream: FakeOpenAIServer, start_proxy: Any, client_for: Any
) -> None:
    proxy: RunningProxy = start_proxy(upstream.base_url)
    client = client_for(proxy.base_url)
    done = client.responses.create(model="m", input="hi")
    assert client.responses.retrieve(done.id).output_text == done.output_text
    with pytest.raises(openai.NotFoundError):  # the upstream's own answer, passed through
        client.responses.input_items.list(done.id)
    assert [r.method for r in upstream.requests][-1] == "GET"
    request = urllib.request.Request(f"{proxy.base_url}/responses/{done.id}", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert refused.value.code == 405
    assert len(proxy.calls(at_least=1)) == 1


def test_an_input_token_count_passes_through_uncounted(
    upstream: FakeOpenAIServer, start_proxy: Any, client_for: Any
) -> None:
    """`POST /v1/responses/input_tokens` counts tokens with no model pass: forwarded (it
    answered a misleading 405 before), not a call."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    counter = getattr(client_for(proxy.base_url).responses, "input_tokens", None)
    if counter is None:
        pytest.skip(f"openai {openai.__version__} has no responses.input_tokens")
    assert counter.count(model="m", input="Tell me about foxes.").input_tokens > 0
    assert upstream.requests[-1].path.endswith("/responses/input_tokens")
    time.sleep(0.1)
    assert proxy.calls() == []


@pytest.mark.parametrize("stream", [False, True])
def test_an_incomplete_response_is_read_as_the_sdk_reads_it(
    upstream: FakeOpenAIServer, start_proxy: Any, client_for: Any, stream: bool
) -> None:
    """Stopped by the request's own limit (`max_output_tokens`): a complete call whose finish
    reason says why, as for an instrumented call and as chat's `length`."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    upstream.push(Reply(terminal="incomplete"))
    answer = client_for(proxy.base_url).responses.create(model="m", input="hi", stream=stream)
    if stream:
        assert [event.type for event in answer][-1] == "response.incomplete"
    (row,) = proxy.calls(at_least=1)
    assert (row["outcome"], row["finish_reasons"]) == ("ok", "max_output_tokens")


@pytest.mark.parametrize("path", ["responses/..", "responses/a%3Fb", "responses/%C3%A9t%C3%A9"])
def test_a_follow_up_path_that_is_no_response_id_is_refused(
    upstream: FakeOpenAIServer, start_proxy: Any, path: str
) -> None:
    """What would change the path or the query sent upstream, or cannot be sent as a path, is
    no response id: refused with a clear error, never forwarded."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{proxy.base_url}/{path}", timeout=10)
    body = refused.value.read()
    refused.value.close()
    assert refused.value.code == 404
    assert b"does not forward" in body
    assert upstream.requests == []
