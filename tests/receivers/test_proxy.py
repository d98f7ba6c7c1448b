"""The recording proxy, end to end: real clients → proxy → a real local upstream → the store."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest

from otelstats._fake_wire import render
from otelstats.conversation import fingerprint
from otelstats.fake_server import FakeOpenAIServer, Reply

from .conftest import RunningProxy

SECRET = "sk-test-Zq8c1s3cr3tvalue"
MESSAGES = [{"role": "user", "content": "hello"}]


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    event = {"model": "gated", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(event)}\n\n".encode()


class GatedUpstream:
    """An upstream that sends the first stream chunk, then waits for `release` before the rest.

    With `hold_headers` it waits before answering at all (a slow upstream).
    """

    def __init__(self, *, hold_headers: bool = False) -> None:
        self.release = threading.Event()
        self.finished = threading.Event()
        """Set once the upstream has written its whole answer."""
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if hold_headers:
                    gate.release.wait(10)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(_chunk("first"))
                self.wfile.flush()
                gate.release.wait(10)
                for event in (_chunk(" second"), _chunk(None, "stop"), b"data: [DONE]\n\n"):
                    self.wfile.write(event)
                self.wfile.flush()
                gate.finished.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def gated() -> Iterator[GatedUpstream]:
    server = GatedUpstream()
    yield server
    server.close()


def _post(url: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    return urllib.request.urlopen(request, timeout=10)


def _error(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    with pytest.raises(urllib.error.HTTPError) as info:
        _post(url, body, headers)
    return info.value.code, json.loads(info.value.read())


def test_openai_sdk_through_proxy_records_every_operation(
    upstream: FakeOpenAIServer, start_proxy: Any
) -> None:
    proxy: RunningProxy = start_proxy(upstream.base_url)
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)

    reply = client.chat.completions.create(model="fake-gpt-4o-mini", messages=MESSAGES)
    chunks = list(
        client.chat.completions.create(model="fake-gpt-4o-mini", messages=MESSAGES, stream=True)
    )
    client.embeddings.create(model="fake-embed", input="hello")
    client.responses.create(model="fake-llama-3-8b", input="hello")
    list(client.responses.create(model="fake-llama-3-8b", input="hello", stream=True))
    client.completions.create(model="fake-llama-3-8b", prompt="hello")
    models = client.models.list()

    assert reply.choices[0].message.content
    # The usage the proxy asked for on the client's behalf never reaches the client.
    assert all(chunk.choices for chunk in chunks)
    assert "fake-embed" in [m.id for m in models.data]
    rows = proxy.calls()
    assert [(r["operation"], r["streaming"], r["outcome"]) for r in rows] == [
        ("chat", False, "ok"),
        ("chat", True, "ok"),
        ("embeddings", False, "ok"),
        ("chat", False, "ok"),
        ("chat", True, "ok"),
        ("text_completion", False, "ok"),
    ]  # GET /models is forwarded, not an inference call
    assert reply.usage is not None
    assert rows[0]["input_tokens"] == reply.usage.prompt_tokens
    assert rows[0]["output_tokens"] == reply.usage.completion_tokens
    assert rows[1]["tokens_source"] == "reported"
    assert rows[1]["output_tokens"] == 9
    assert rows[1]["time_to_first_chunk_s"] is not None
    assert rows[4]["output_tokens"] == 9
    assert rows[4]["time_to_first_chunk_s"] is not None
    assert all(r["provider"] == "openai" for r in rows)


def test_a_compaction_through_the_proxy_is_a_call(
    upstream: FakeOpenAIServer, start_proxy: Any
) -> None:
    """`POST /v1/responses/compact` (the SDK's `responses.compact`) is forwarded and recorded
    with its usage, in the conversation of the opening it compacts."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)
    if not hasattr(getattr(client, "responses", None), "compact"):
        pytest.skip(f"openai {openai.__version__} has no responses.compact")
    opening = [{"role": "user", "content": "Tell me about foxes."}]
    client.responses.create(model="fake-llama-3-8b", input=opening)
    compacted = client.responses.compact(model="fake-llama-3-8b", input=opening)
    assert compacted.object == "response.compaction"
    answer, row = proxy.calls()
    assert (row["operation"], row["outcome"], row["streaming"]) == ("chat", "ok", False)
    assert (row["input_tokens"], row["output_tokens"]) == (
        compacted.usage.input_tokens,
        compacted.usage.output_tokens,
    )
    assert row["conversation_id"] == answer["conversation_id"]


def test_stream_reaches_client_before_upstream_finishes(
    gated: GatedUpstream, start_proxy: Any
) -> None:
    proxy: RunningProxy = start_proxy(gated.base_url, stream_usage=False)
    body = {"model": "gated", "messages": MESSAGES, "stream": True}
    with _post(f"{proxy.base_url}/chat/completions", body) as response:
        first = response.readline()
        # The upstream has not finished (it waits for release): the chunk was not held back.
        assert not gated.finished.is_set()
        assert b'"first"' in first
        gated.release.set()
        rest = response.read()
    assert b"[DONE]" in rest
    (row,) = proxy.calls()
    assert row["outcome"] == "ok"
    assert row["streaming"]
    # No usage in this stream: the two content chunks are counted, and flagged so.
    assert (row["output_tokens"], row["tokens_source"]) == (2, "counted")
    assert row["time_to_first_chunk_s"] is not None


def test_openai_sdk_stream_is_incremental(gated: GatedUpstream, start_proxy: Any) -> None:
    proxy: RunningProxy = start_proxy(gated.base_url)
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)
    stream = client.chat.completions.create(model="gated", messages=MESSAGES, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.content == "first"
    assert not gated.finished.is_set()
    gated.release.set()
    assert [c.choices[0].delta.content for c in stream] == [" second", None]


def test_authorization_and_headers_are_forwarded_never_stored(
    upstream: FakeOpenAIServer, start_proxy: Any, caplog: pytest.LogCaptureFixture
) -> None:
    proxy: RunningProxy = start_proxy(upstream.base_url)
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)
    client.chat.completions.create(
        model="fake-gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Conversation-Id": "conv-42"}
    )
    # Azure-style clients put the key in the query string: forwarded, not logged.
    with urllib.request.urlopen(f"{proxy.base_url}/models?api-key={SECRET}", timeout=10) as resp:
        assert resp.status == 200
    assert upstream.requests[-1].path.endswith(f"api-key={SECRET}")
    upstream.push(Reply(status=401, error_message="bad key"))
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="fake-gpt-4o-mini", messages=MESSAGES)

    assert upstream.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    rows = proxy.calls()
    assert rows[0]["conversation_id"] == "conv-42"
    assert rows[1]["conversation_id"].startswith("fp-")  # the header wins over the fingerprint
    assert all(SECRET not in repr(dict(r)) for r in rows)
    proxy.store.dispose()  # checkpoint nothing away: read the raw file and its WAL as they are
    path = proxy.store.path
    assert path is not None
    for file in path.parent.iterdir():
        assert SECRET.encode() not in file.read_bytes(), file
    assert "/v1/models" in caplog.text  # the request was logged ...
    assert SECRET not in caplog.text  # ... without the key


def test_upstream_error_is_passed_through_and_recorded_failed(
    upstream: FakeOpenAIServer, start_proxy: Any
) -> None:
    proxy: RunningProxy = start_proxy(upstream.base_url)
    upstream.push(Reply(status=429, error_message="slow down", error_code="rate_limit_exceeded"))
    status, body = _error(f"{proxy.base_url}/chat/completions", {"model": "m", "messages": []})
    assert status == 429
    assert body["error"]["message"] == "slow down"
    (row,) = proxy.calls()
    assert (row["outcome"], row["error_type"]) == ("error", "429")


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_an_answer_compressed_against_the_ask_is_still_read(
    upstream: FakeOpenAIServer, start_proxy: Any, encoding: str
) -> None:
    """The proxy asks the upstream for identity, so that it can read the usage; one that
    compresses its answer all the same is read through its encoding, not taken for a failure."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    ask = {"model": "m", "messages": MESSAGES}
    answer = render("POST", "/v1/chat/completions", ask, Reply(), 1).body  # the fake's own
    usage = json.loads(answer)["usage"]
    packed = gzip.compress(answer) if encoding == "gzip" else zlib.compress(answer)
    upstream.push(Reply(raw_body=packed, headers={"Content-Encoding": encoding}))
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)
    reply = client.chat.completions.create(**ask)
    assert reply.to_dict() == json.loads(answer)
    (row,) = proxy.calls()
    assert (row["outcome"], row["input_tokens"], row["output_tokens"]) == (
        "ok",
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )


def test_a_compressed_answer_is_read_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """gzip, zlib-wrapped and raw deflate are read; anything else, and an answer that would
    inflate beyond the bound (a small body that expands to gigabytes), is not read at all."""
    from otelstats.receivers import _proxy_call as proxy

    answer = json.dumps({"usage": {"prompt_tokens": 1}}).encode()
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = deflater.compress(answer) + deflater.flush()
    for packed in (gzip.compress(answer), zlib.compress(answer), raw):
        assert proxy.inflated(packed) == answer
    assert proxy.inflated(answer) is None  # not compressed (or brotli, zstd)
    monkeypatch.setattr(proxy, "INFLATED_MAX_BYTES", 1000)
    assert proxy.inflated(gzip.compress(b" " * 1000)) == b" " * 1000
    assert proxy.inflated(gzip.compress(b" " * 1001)) is None


def test_an_upstream_redirect_is_passed_through_and_recorded_failed(
    upstream: FakeOpenAIServer, start_proxy: Any
) -> None:
    """An upstream that moved (`http://` to `https://`, a new path) answers with a redirect and
    no completion: the client gets it as it came; the call is no success."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    moved = {"Location": "https://api.example.com/v1/chat/completions"}
    upstream.push(Reply(status=308, raw_body=b"{}", headers=moved))
    status, _ = _error(f"{proxy.base_url}/chat/completions", {"model": "m", "messages": []})
    assert status == 308
    (row,) = proxy.calls()
    assert (row["outcome"], row["error_type"]) == ("error", "308")


def test_an_error_reported_in_a_200_answer_is_recorded_failed(
    upstream: FakeOpenAIServer, start_proxy: Any
) -> None:
    """OpenRouter answers 200 with `{"error": {...}}` when the model failed mid-answer: the body
    goes to the client as it came, and the record says the call failed."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    failed = {"error": {"code": 502, "message": "Provider returned error"}}
    upstream.push(Reply(raw_body=json.dumps(failed).encode()), Reply())
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)
    answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert answer.choices is None
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    rows = proxy.calls(at_least=2)
    assert [(r["outcome"], r["error_type"]) for r in rows] == [("error", "502"), ("ok", None)]


def test_a_200_answer_that_is_not_the_apis_object_is_recorded_failed(
    upstream: FakeOpenAIServer, start_proxy: Any
) -> None:
    """An upstream that answers 200 with a web page (a web UI's port given as the API's), an
    empty body or JSON that is no object, to a plain or a streaming request, or a whole answer
    to a streaming request: the client gets the body as it came, and the record says the call
    failed, as an instrumented call's does (with the usage the whole answer reported)."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    page = b"<!doctype html><html><head><title>Open WebUI</title></head><body></body></html>"
    upstream.push(
        Reply(raw_body=page, content_type="text/html"),
        Reply(raw_body=page, content_type="text/html"),
        Reply(raw_body=b"", content_type="text/plain"),
        Reply(raw_body=b"[]"),
        Reply(raw_body=render("POST", "/v1/chat/completions", {"model": "m"}, Reply(), 1).body),
        Reply(),
    )
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)
    ask = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert client.chat.completions.create(**ask) == page.decode()
    assert list(client.chat.completions.create(**ask, stream=True)) == []
    assert client.chat.completions.create(**ask) == ""
    assert client.chat.completions.create(**ask) == []
    assert list(client.chat.completions.create(**ask, stream=True)) == []  # a whole answer
    client.chat.completions.create(**ask)
    rows = proxy.calls(at_least=6)
    failed = ("error", "APIResponseValidationError")
    assert [(r["outcome"], r["error_type"]) for r in rows] == [*[failed] * 5, ("ok", None)]
    assert rows[4]["input_tokens"] is not None


def test_a_failed_response_is_named_by_its_error_code(
    upstream: FakeOpenAIServer, start_proxy: Any
) -> None:
    """A Responses API answer with status `failed` carries its error (`code`, `message`), and
    a stream may end with an `error` event: the record names either by its code, as an
    instrumented call does."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    upstream.push(Reply(terminal="failed"), Reply(terminal="failed"), Reply(terminal="error"))
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)
    answer = client.responses.create(model="m", input="x")
    assert answer.status == "failed"
    assert answer.error is not None
    events = list(client.responses.create(model="m", input="x", stream=True))
    assert events[-1].type == "response.failed"
    events = list(client.responses.create(model="m", input="x", stream=True))
    assert events[-1].type == "error"  # an error event of its own, with a code
    assert getattr(events[-1], "code", None)
    rows = proxy.calls(at_least=3)
    assert [(r["streaming"], r["outcome"], r["error_type"]) for r in rows] == [
        (False, "error", answer.error.code),
        (True, "error", answer.error.code),
        (True, "error", getattr(events[-1], "code", None)),
    ]


def test_upstream_down_gives_502_and_a_failed_record(start_proxy: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there
    proxy: RunningProxy = start_proxy(f"http://127.0.0.1:{port}/v1")
    status, body = _error(f"{proxy.base_url}/chat/completions", {"model": "m", "messages": []})
    assert status == 502
    assert "unreachable" in body["error"]["message"]
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="e", input="x")
    rows = proxy.calls()
    assert [(r["operation"], r["outcome"]) for r in rows] == [
        ("chat", "error"),
        ("embeddings", "error"),
    ]
    assert rows[0]["error_type"] == "ConnectionRefusedError"


def test_slow_upstream_gives_504_and_a_failed_record(start_proxy: Any) -> None:
    slow = GatedUpstream(hold_headers=True)
    try:
        proxy: RunningProxy = start_proxy(slow.base_url, timeout=0.3)
        status, body = _error(f"{proxy.base_url}/chat/completions", {"model": "m", "messages": []})
    finally:
        slow.close()
    assert status == 504
    assert body["error"]["type"] == "timeout"
    (row,) = proxy.calls()
    assert (row["outcome"], row["error_type"]) == ("error", "timeout")


def test_cut_stream_is_recorded_incomplete(upstream: FakeOpenAIServer, start_proxy: Any) -> None:
    proxy: RunningProxy = start_proxy(upstream.base_url)
    upstream.push(Reply(cut_after=3))
    body = {"model": "fake-gpt-4o-mini", "messages": MESSAGES, "stream": True}
    with _post(f"{proxy.base_url}/chat/completions", body) as response:
        text = response.read()
    assert b"[DONE]" not in text
    (row,) = proxy.calls()
    assert row["outcome"] == "incomplete"


def test_a_stream_the_upstream_cuts_is_cut_for_the_client_too(
    upstream: FakeOpenAIServer, start_proxy: Any
) -> None:
    """The upstream drops the connection mid-stream: through the proxy the client's SDK raises
    after the same chunks, as it does without the proxy (a stream that just ended would pass
    a partial answer for a whole one), and the call is cut short, as an instrumented one is."""
    proxy: RunningProxy = start_proxy(upstream.base_url)

    def read(base_url: str) -> tuple[list[str], str]:
        upstream.push(Reply(cut_after=4, cut_mode="reset"))
        seen: list[str] = []
        with openai.OpenAI(base_url=base_url, api_key=SECRET, max_retries=0) as client:
            stream = client.chat.completions.create(
                model="fake-gpt-4o-mini", messages=MESSAGES, stream=True
            )
            try:
                seen.extend(chunk.choices[0].delta.content or "" for chunk in stream)
            except openai.APIConnectionError as exc:
                return seen, type(exc).__name__
        return seen, "ended"

    direct, proxied = read(upstream.base_url), read(proxy.base_url)
    assert proxied == direct
    assert direct[1] == "APIConnectionError"
    (row,) = proxy.calls(at_least=1)
    assert row["outcome"] == "incomplete"
    assert row["error_type"] is not None


def test_conversations_group_through_the_proxy_as_through_the_sdk(
    upstream: FakeOpenAIServer, start_proxy: Any
) -> None:
    """Without an `X-Conversation-Id`, a call's conversation comes from its body as it does for
    an instrumented SDK call with the same salt: a chat client's turns share the fingerprint of
    their opening, and a Responses chain (streamed or not) keeps its first turn's id."""
    salt = b"s" * 32
    proxy: RunningProxy = start_proxy(upstream.base_url, conversation_salt=salt)
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)
    opening = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]
    turn2: Any = [
        *opening,
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "?"},
    ]
    client.chat.completions.create(model="m", messages=opening)  # type: ignore[arg-type]
    list(client.chat.completions.create(model="m", messages=turn2, stream=True))
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "other"}])
    with client.responses.stream(model="m", input="first") as stream:
        first = stream.get_final_response()
    second = client.responses.create(model="m", input="then?", previous_response_id=first.id)
    client.responses.create(model="m", input="and?", previous_response_id=second.id)
    client.embeddings.create(model="e", input="hello")
    ids = [r["conversation_id"] for r in proxy.calls()]
    assert ids[0] == ids[1]
    assert ids[0] == fingerprint(opening, salt)  # what the SDK's instrumentation records
    assert ids[2] not in (ids[0], None)
    assert ids[3] == fingerprint("first", salt)
    assert ids[4] == ids[3]
    assert ids[5] == ids[3]
    assert ids[6] is None  # embeddings belong to no conversation


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_streamed_before_the_answer_is_output(
    upstream: FakeOpenAIServer, start_proxy: Any, field: str
) -> None:
    """A reasoning model's thoughts (llama.cpp's and vLLM's `reasoning_content`, Ollama's
    `reasoning`) are output chunks, as for an instrumented call: counted when the server reports
    no usage, and the first of them is the first token."""
    thoughts, answer = ("Okay", ",", " so"), ("Yes", ".")

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return f"data: {json.dumps({'model': 'r1', 'choices': [choice]})}\n\n".encode()

    events = [event({"role": "assistant", "content": ""})]
    events += [event({"content": "", field: t}) for t in thoughts]
    events += [*(event({"content": t}) for t in answer), event({}, "stop"), b"data: [DONE]\n\n"]
    upstream.push(Reply(raw_events=tuple(events), token_delay=0.05))
    proxy: RunningProxy = start_proxy(upstream.base_url, stream_usage=False)
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)
    list(client.chat.completions.create(model="r1", messages=MESSAGES, stream=True))
    (row,) = proxy.calls(at_least=1)
    assert (row["output_tokens"], row["tokens_source"]) == (len(thoughts) + len(answer), "counted")
    assert row["time_to_first_chunk_s"] < 0.15  # the answer starts 0.2 s after the first thought


REASONING_LEFT_OUT = {
    # xAI: reasoning beside the completion tokens, the total holding both.
    "xai": ({"prompt_tokens": 32, "completion_tokens": 9, "total_tokens": 135,
             "prompt_tokens_details": {"cached_tokens": 6},
             "completion_tokens_details": {"reasoning_tokens": 94}}, (32, 103, 94)),
    # Gemini's OpenAI-compatible endpoint: no reasoning count, its thoughts in the total only.
    "gemini": ({"prompt_tokens": 24, "completion_tokens": 5, "total_tokens": 122},
               (24, 98, 93)),
}  # fmt: skip


@pytest.mark.parametrize("stream", [False, True], ids=["object", "stream"])
@pytest.mark.parametrize("server", list(REASONING_LEFT_OUT))
def test_reasoning_left_out_of_the_output_is_output(
    upstream: FakeOpenAIServer, start_proxy: Any, server: str, stream: bool
) -> None:
    """A server that leaves the reasoning out of its output count says so by its total: the
    record's output holds it, as for an instrumented call; the client gets the server's usage."""
    usage, (prompt, output, reasoning) = REASONING_LEFT_OUT[server]
    if stream:
        last = {"model": "m", "choices": [], "usage": usage}
        events = [_chunk("Yes"), _chunk(None, "stop"), f"data: {json.dumps(last)}\n\n".encode()]
        upstream.push(Reply(raw_events=(*events, b"data: [DONE]\n\n")))
    else:
        choice = {"index": 0, "message": {"role": "assistant", "content": "Yes"}}
        answer = {"model": "m", "usage": usage, "choices": [{**choice, "finish_reason": "stop"}]}
        upstream.push(Reply(raw_body=json.dumps(answer).encode()))
    proxy: RunningProxy = start_proxy(upstream.base_url)
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)
    kwargs: dict[str, Any] = {"model": "m", "messages": MESSAGES, "stream": stream}
    if stream:
        kwargs["stream_options"] = {"include_usage": True}
        got = [c.usage for c in client.chat.completions.create(**kwargs)][-1]
    else:
        got = client.chat.completions.create(**kwargs).usage
    assert got is not None
    assert got.to_dict() == usage
    (row,) = proxy.calls(at_least=1)
    counts = (row["input_tokens"], row["output_tokens"], row["reasoning_tokens"])
    assert counts == (prompt, output, reasoning)
    assert row["tokens_source"] == "reported"


@pytest.mark.parametrize("server", ["moonshot", "deepseek"])
def test_usage_where_moonshot_and_deepseek_put_it(
    upstream: FakeOpenAIServer, start_proxy: Any, server: str
) -> None:
    """Moonshot streams its usage in the finish choice, with `cached_tokens` beside the counts;
    DeepSeek names its cache hits `prompt_cache_hit_tokens`: the record reads both."""
    if server == "moonshot":
        usage = {
            "prompt_tokens": 24,
            "completion_tokens": 5,
            "total_tokens": 29,
            "cached_tokens": 16,
        }
        finish = {"index": 0, "delta": {}, "finish_reason": "stop", "usage": usage}
        last = f"data: {json.dumps({'model': 'moonshot-v1-8k', 'choices': [finish]})}\n\n"
        events = (_chunk("Yes"), last.encode(), b"data: [DONE]\n\n")
        upstream.push(Reply(raw_events=events))
    else:
        usage = {"prompt_tokens": 24, "completion_tokens": 5, "total_tokens": 29,
                 "prompt_cache_hit_tokens": 16, "prompt_cache_miss_tokens": 8}  # fmt: skip
        choice = {"index": 0, "message": {"role": "assistant", "content": "Yes"}}
        answer = {"model": "deepseek-chat", "usage": usage, "choices": [choice]}
        upstream.push(Reply(raw_body=json.dumps(answer).encode()))
    proxy: RunningProxy = start_proxy(upstream.base_url)
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)
    stream = server == "moonshot"
    result = client.chat.completions.create(model="m", messages=MESSAGES, stream=stream)
    if stream:
        list(result)
    (row,) = proxy.calls(at_least=1)
    counts = (row["input_tokens"], row["output_tokens"], row["cached_input_tokens"])
    assert counts == (24, 5, 16)
    assert row["tokens_source"] == "reported"


def test_a_request_with_pictures_up_to_openais_own_limit_goes_through(
    upstream: FakeOpenAIServer, start_proxy: Any
) -> None:
    """Pictures and files travel as base64: a request of 40 MB is under OpenAI's own 50 MB limit,
    so the proxy forwards it by default and records it once, under one conversation."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)
    picture = "data:image/png;base64," + "QUJD" * (10 * 2**20)
    parts = [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": picture}},
    ]
    messages: Any = [{"role": "user", "content": parts}]
    for _ in range(2):
        reply = client.chat.completions.create(model="fake-gpt-4o-mini", messages=messages)
        assert reply.choices[0].message.content
    assert len(upstream.requests) == 2
    rows = proxy.calls()
    assert [r["outcome"] for r in rows] == ["ok", "ok"]
    assert rows[0]["conversation_id"] is not None
    assert rows[0]["conversation_id"] == rows[1]["conversation_id"]


def test_the_proxy_command_takes_its_body_limit_and_says_how_to_raise_it(
    upstream: FakeOpenAIServer, tmp_path: Path
) -> None:
    """`otelstats proxy --max-request-mb`: a body over it gets a 413 that names the option; one
    under it is forwarded and recorded (a real process, as a user starts it)."""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "OTELSTATS_EXPORT_INTERVAL_MS": "50"}
    db = str(tmp_path / "p.db")
    command = [sys.executable, "-m", "otelstats", "proxy", "--upstream", upstream.base_url,
               "--port", "0", "--db", db, "--max-request-mb", "0.01"]  # fmt: skip
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().split()[3]
            status, body = _error(f"{base_url}/chat/completions", {"model": "m", "x": "y" * 20_000})
            assert status == 413
            assert "--max-request-mb" in body["error"]["message"]
            assert "0.01 MiB" in body["error"]["message"]
            with _post(f"{base_url}/chat/completions", {"model": "m", "messages": MESSAGES}) as ok:
                assert json.loads(ok.read())["choices"]
        finally:
            process.terminate()
    assert len(upstream.requests) == 1
    assert (tmp_path / "otelstats" / "conversation-salt").exists()  # the user's, as instrument()'s


def test_bad_requests_are_refused_and_proxy_keeps_serving(
    upstream: FakeOpenAIServer, start_proxy: Any
) -> None:
    proxy: RunningProxy = start_proxy(upstream.base_url, max_request_bytes=4096)
    url = f"{proxy.base_url}/chat/completions"
    assert _error(url, b"{not json")[0] == 400
    assert _error(url, b"[1, 2]")[0] == 400
    status, body = _error(url, {"model": "m", "messages": [{"content": "x" * 10_000}]})
    assert status == 413
    assert "--max-request-mb" in body["error"]["message"]
    assert _error(f"{proxy.base_url}/files", {})[0] == 404
    with _post(url, {"model": "fake-gpt-4o-mini", "messages": MESSAGES}) as response:
        assert json.loads(response.read())["choices"]
    # Refused requests never reached the upstream and are not calls.
    assert len(upstream.requests) == 1
    assert len(proxy.calls()) == 1


def test_a_websocket_connection_is_refused_clearly(
    upstream: FakeOpenAIServer, start_proxy: Any
) -> None:
    """The Responses API's WebSocket mode is not proxied: the SDK's `responses.connect()` is
    refused at its handshake with a status that says so, and nothing reaches the upstream."""
    websockets_exceptions = pytest.importorskip("websockets.exceptions")
    proxy: RunningProxy = start_proxy(upstream.base_url)
    sdk = openai.OpenAI(base_url=proxy.base_url, api_key="t", max_retries=0)
    if not hasattr(getattr(sdk, "responses", None), "connect"):
        pytest.skip(f"openai {openai.__version__} has no WebSocket mode")
    with pytest.raises(websockets_exceptions.InvalidStatus) as refused:
        sdk.responses.connect().enter()
    answer = refused.value.response
    assert answer.status_code == 501
    assert b"WebSocket" in answer.body
    assert upstream.requests == []
    assert proxy.calls() == []


def test_unprefixed_paths_and_server_without_stream_options(start_proxy: Any) -> None:
    with FakeOpenAIServer(reject_stream_options=True) as old_server:
        proxy: RunningProxy = start_proxy(old_server.base_url)
        root = proxy.base_url.removesuffix("/v1")
        body = {"model": "fake-llama-3-8b", "messages": MESSAGES, "stream": True}
        with _post(f"{root}/chat/completions", body) as response:
            assert b"[DONE]" in response.read()
    (row,) = proxy.calls()
    # The proxy's usage request was refused, so the client's own body went through instead.
    assert row["outcome"] == "ok"
    assert row["tokens_source"] == "counted"


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        (None, {"include_usage": True}),
        ({}, {"include_usage": True}),
        ({"include_obfuscation": False}, {"include_obfuscation": False, "include_usage": True}),
        ({"include_usage": False}, {"include_usage": False}),
        # vLLM would then put usage on every chunk the client sees: counted instead.
        ({"continuous_usage_stats": True}, {"continuous_usage_stats": True}),
    ],
    ids=["absent", "empty", "other-option", "refused", "continuous"],
)
def test_usage_is_asked_for_only_where_the_client_left_it_open(
    upstream: FakeOpenAIServer, start_proxy: Any, options: Any, sent: dict[str, Any]
) -> None:
    proxy: RunningProxy = start_proxy(upstream.base_url)
    body: dict[str, Any] = {"model": "fake-gpt-4o-mini", "messages": MESSAGES, "stream": True}
    if options is not None:
        body["stream_options"] = options
    with _post(f"{proxy.base_url}/chat/completions", body) as response:
        events = [line for line in response.read().split(b"\n\n") if line.strip()]
    assert upstream.requests[0].body["stream_options"] == sent
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events if e != b"data: [DONE]"]
    # The usage-only chunk reaches the client only when the client asked for it.
    assert any(not c["choices"] for c in chunks) == bool((options or {}).get("include_usage"))
    (row,) = proxy.calls()
    asked = sent.get("include_usage") is True
    assert row["tokens_source"] == ("reported" if asked else "counted")


@pytest.mark.parametrize(
    "choice",
    [
        {"finish_reason": None, "index": 0, "delta": {"content": None, "role": None}},
        {"index": 0, "delta": {}},
    ],
    ids=["litellm-proxy", "mlx"],
)
def test_the_asked_usage_chunk_with_a_choice_that_carries_nothing_is_hidden(
    upstream: FakeOpenAIServer, start_proxy: Any, choice: dict[str, Any]
) -> None:
    """LiteLLM's proxy and MLX servers send the usage chunk with one empty choice instead of
    `choices: []`: after the answer's finish it is the chunk the proxy asked for, hidden from a
    client that did not ask."""
    usage = {"prompt_tokens": 24, "completion_tokens": 5, "total_tokens": 29}
    last = f"data: {json.dumps({'model': 'm', 'choices': [choice], 'usage': usage})}\n\n"
    events = (_chunk("Yes"), _chunk(None, "stop"), last.encode(), b"data: [DONE]\n\n")
    upstream.push(Reply(raw_events=events))
    proxy: RunningProxy = start_proxy(upstream.base_url)
    client = openai.OpenAI(base_url=proxy.base_url, api_key=SECRET, max_retries=0)
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert [(c.choices[0].delta.content, c.usage) for c in chunks] == [("Yes", None), (None, None)]
    assert upstream.requests[0].body["stream_options"] == {"include_usage": True}
    (row,) = proxy.calls(at_least=1)
    assert (row["input_tokens"], row["output_tokens"], row["tokens_source"]) == (24, 5, "reported")


def test_a_refusal_of_the_added_usage_option_is_told_from_the_clients_own_error(
    upstream: FakeOpenAIServer, start_proxy: Any
) -> None:
    """A page that names nothing (a proxy in front of the server) may be refusing the option the
    proxy added: the client's own body is sent once more. A JSON error about something else is
    the client's own: passed through after one request."""
    proxy: RunningProxy = start_proxy(upstream.base_url)
    url = f"{proxy.base_url}/chat/completions"
    body = {"model": "fake-gpt-4o-mini", "messages": MESSAGES, "stream": True}
    upstream.push(Reply(status=400, html_error=True))
    with _post(url, body) as response:
        assert b"[DONE]" in response.read()
    assert ["stream_options" in r.body for r in upstream.requests] == [True, False]

    upstream.push(Reply(status=400, error_message="maximum context length is 4096 tokens"))
    status, error = _error(url, body)
    assert status == 400
    assert "maximum context length" in error["error"]["message"]
    assert len(upstream.requests) == 3  # one request for that call, not two
    rows = proxy.calls()
    assert [row["outcome"] for row in rows] == ["ok", "error"]
    assert rows[0]["tokens_source"] == "counted"


def test_trace_sampling_settings_never_drop_a_call(
    upstream: FakeOpenAIServer, start_proxy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_TRACES_SAMPLER is for the traces of the apps around the proxy: the proxy records
    every call, the one a client's unsampled `traceparent` belongs to included."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    proxy: RunningProxy = start_proxy(upstream.base_url)
    body = {"model": "fake-gpt-4o-mini", "messages": MESSAGES}
    unsampled = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}
    for headers in ({}, unsampled):
        with _post(f"{proxy.base_url}/chat/completions", body, headers) as response:
            assert json.loads(response.read())["choices"]
    assert [row["outcome"] for row in proxy.calls()] == ["ok", "ok"]
