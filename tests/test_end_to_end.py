"""End to end: the real openai SDK → FakeOpenAIServer → instrument() → store → every output.

Mixed calls (sync and async, streaming and not, some failing) must show up as exactly the
requests and tokens the server sent in /api/stats, export.json, export.csv, `stats --json` and
/metrics — the five outputs format one query layer, so they cannot disagree.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from otelstats.bootstrap import instrument
from otelstats.cli import cli
from otelstats.config import Settings
from otelstats.fake_server import FakeOpenAIServer, Reply
from otelstats.store import Store
from otelstats.web import create_app

# (async?, stream?, fail?, model): every combination, failures included.
PLAN = [
    (is_async, stream, fail, model)
    for is_async in (False, True)
    for stream in (False, True)
    for fail in (False, True)
    for model in ("e2e-small", "e2e-large")
]
PLAN += [(False, True, False, "e2e-small"), (True, False, False, "e2e-large")]


@dataclass
class Sent:
    requests: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_model: dict[str, int] = field(default_factory=dict)

    def usage(self, usage: Any) -> None:
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens


def _messages(i: int) -> list[Any]:
    return [{"role": "user", "content": f"question number {i} about tokens"}]


def _sync_call(client: openai.OpenAI, i: int, stream: bool, model: str, sent: Sent) -> None:
    if stream:
        usage = None
        chunks = client.chat.completions.create(
            model=model, messages=_messages(i), stream=True, stream_options={"include_usage": True}
        )
        for chunk in chunks:
            usage = chunk.usage or usage
        sent.usage(usage)
    else:
        sent.usage(client.chat.completions.create(model=model, messages=_messages(i)).usage)


async def _async_call(
    client: openai.AsyncOpenAI, i: int, stream: bool, model: str, sent: Sent
) -> None:
    if stream:
        usage = None
        chunks = await client.chat.completions.create(
            model=model, messages=_messages(i), stream=True, stream_options={"include_usage": True}
        )
        async for chunk in chunks:
            usage = chunk.usage or usage
        sent.usage(usage)
    else:
        response = await client.chat.completions.create(model=model, messages=_messages(i))
        sent.usage(response.usage)


def _run_plan(server: FakeOpenAIServer) -> Sent:
    sent = Sent()
    sync_client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    async_client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)

    async def run_async(i: int, stream: bool, model: str) -> None:
        await _async_call(async_client, i, stream, model, sent)

    loop = asyncio.new_event_loop()
    try:
        for i, (is_async, stream, fail, model) in enumerate(PLAN):
            sent.requests += 1
            sent.by_model[model] = sent.by_model.get(model, 0) + 1
            if fail:
                server.push(Reply(status=500 if i % 2 else 429, error_message="boom"))
            try:
                if is_async:
                    loop.run_until_complete(run_async(i, stream, model))
                else:
                    _sync_call(sync_client, i, stream, model, sent)
            except openai.APIStatusError:
                assert fail
                sent.failed += 1
        loop.run_until_complete(async_client.close())
    finally:
        loop.close()
        sync_client.close()
    return sent


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[Store, Sent]]:
    db = tmp_path / "e2e.db"
    store = Store.open(db)
    # Providers of our own: the test leaves no global OpenTelemetry state behind.
    tracer_provider = TracerProvider()
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    handle = instrument(db=str(db), tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        with FakeOpenAIServer() as server:
            sent = _run_plan(server)
            assert len(server.requests) == len(PLAN)
    finally:
        handle.shutdown()  # flushes every finished call to the database
        tracer_provider.shutdown()
        meter_provider.shutdown()
    yield store, sent
    store.dispose()


def test_every_output_reports_what_the_server_sent(
    recorded: tuple[Store, Sent], tmp_path: Path
) -> None:
    store, sent = recorded
    assert sent.failed == 8
    assert sent.prompt_tokens > 0
    assert sent.completion_tokens > 0
    client = create_app({"TESTING": True}, settings=Settings(), store=store).test_client()

    def check(overview: dict[str, Any], where: str) -> None:
        got = (
            overview["requests"],
            overview["errors"],
            overview["prompt_tokens"],
            overview["completion_tokens"],
            overview["total_tokens"],
        )
        want = (
            sent.requests,
            sent.failed,
            sent.prompt_tokens,
            sent.completion_tokens,
            sent.prompt_tokens + sent.completion_tokens,
        )
        assert got == want, where

    api = client.get("/api/stats?period=all&tz=UTC").get_json()
    check(api["overview"], "/api/stats")
    assert {m["model"]: m["requests"] for m in api["models"]} == sent.by_model
    ok = sent.requests - sent.failed
    assert api["overview"]["success_rate"] == pytest.approx(100 * ok / sent.requests, abs=0.01)

    exported = json.loads(client.get("/api/export.json?period=all&tz=UTC").data)
    check(exported["overview"], "export.json")

    rows = list(csv.DictReader(io.StringIO(client.get("/api/export.csv?period=all").data.decode())))
    totals = {
        "requests": sum(int(r["requests"]) for r in rows),
        "errors": sent.failed,  # the CSV has no error column; requests and tokens are checked
        "prompt_tokens": sum(int(r["prompt_tokens"]) for r in rows),
        "completion_tokens": sum(int(r["completion_tokens"]) for r in rows),
        "total_tokens": sum(int(r["total_tokens"]) for r in rows),
    }
    check(totals, "export.csv")

    result = CliRunner().invoke(
        cli, ["stats", "--json", "--period", "all", "--tz", "UTC", "--db", str(store.path)]
    )
    assert result.exit_code == 0, result.output
    check(json.loads(result.output)["overview"], "stats --json")

    scrape = client.get("/metrics").data.decode()
    samples = {family.name: family.samples for family in text_string_to_metric_families(scrape)}
    requests = samples["otelstats_requests"]
    assert sum(s.value for s in requests if s.name == "otelstats_requests_total") == sent.requests
    failed = [s for s in requests if s.labels.get("outcome") == "error"]
    assert sum(s.value for s in failed if s.name.endswith("_total")) == sent.failed
    prompt = sum(s.value for s in samples["otelstats_prompt_tokens"] if s.name.endswith("_total"))
    completion = sum(
        s.value for s in samples["otelstats_completion_tokens"] if s.name.endswith("_total")
    )
    assert (prompt, completion) == (sent.prompt_tokens, sent.completion_tokens)
    usage = [
        s for s in samples["gen_ai_client_token_usage"] if s.name == "gen_ai_client_token_usage_sum"
    ]
    assert sum(s.value for s in usage if s.labels["gen_ai_token_type"] == "input") == prompt
    assert sum(s.value for s in usage if s.labels["gen_ai_token_type"] == "output") == completion
