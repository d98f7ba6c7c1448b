"""Team mode: two client processes on different "hosts" send OTLP to one server on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from typing import Any

import pytest

from otelstats.config import Settings
from otelstats.store import Store

from .conftest import RunningApp, calls

CLIENT = """
import json, sys
import openai
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from otelstats.fake_server import FakeOpenAIServer

endpoint, count = sys.argv[1], int(sys.argv[2])
provider = TracerProvider(resource=Resource.create())  # service.instance.id from the environment
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
OpenAIInstrumentor().instrument(tracer_provider=provider)
prompt = completion = 0
with FakeOpenAIServer() as upstream:
    client = openai.OpenAI(base_url=upstream.base_url, api_key="x", max_retries=0)
    for i in range(count):
        reply = client.chat.completions.create(
            model="fake-gpt-4o-mini", messages=[{"role": "user", "content": "hi " * (i + 1)}]
        )
        prompt += reply.usage.prompt_tokens
        completion += reply.usage.completion_tokens
provider.shutdown()  # flushes the batch to the server
print(json.dumps({"prompt": prompt, "completion": completion}))
"""


@pytest.mark.postgres
def test_two_hosts_to_one_postgres_server(pg_store: Store, serve: Any) -> None:
    app: RunningApp = serve(pg_store, Settings(token="team-token"))
    counts = {"host-a": 7, "host-b": 5}
    procs = {
        host: subprocess.Popen(
            [sys.executable, "-c", CLIENT, f"{app.url}/v1/traces", str(n)],
            stdout=subprocess.PIPE,
            env={
                **os.environ,
                "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id={host}",
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "Authorization=Bearer%20team-token",
            },
        )
        for host, n in counts.items()
    }
    sent = {}
    for host, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        sent[host] = json.loads(out)

    request = urllib.request.Request(
        f"{app.url}/api/stats?period=all&tz=UTC", headers={"Authorization": "Bearer team-token"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        overview = json.loads(resp.read())["overview"]
    assert overview["requests"] == sum(counts.values())
    assert overview["prompt_tokens"] == sum(s["prompt"] for s in sent.values())
    assert overview["completion_tokens"] == sum(s["completion"] for s in sent.values())
    rows = calls(pg_store)
    per_host = {host: sum(r["service_instance_id"] == host for r in rows) for host in counts}
    assert per_host == counts
