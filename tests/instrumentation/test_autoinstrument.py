"""`opentelemetry-instrument python app.py` with OTEL_TRACES_EXPORTER=otelstats: the distro's SDK,
our exporter and instrumentor entry points, a real program against the fake server -> one record
per call in the database, even with opentelemetry-instrumentation-openai-v2 active as well."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from otelstats.fake_server import FakeOpenAIServer

from .conftest import needs_responses

APP = """
import os, openai
messages = [{"role": "user", "content": "hi"}]
with openai.OpenAI(base_url=os.environ["FAKE_URL"], api_key="k", max_retries=0) as client:
    client.chat.completions.create(model="m", messages=messages)
    for _chunk in client.chat.completions.create(model="m", messages=messages, stream=True):
        pass
    client.embeddings.create(model="e", input="hello")
"""
CALLS = 3


def _launcher() -> str:
    found = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("opentelemetry-instrument is not installed (pip install opentelemetry-distro)")
    if not importlib.metadata.entry_points(group="opentelemetry_traces_exporter", name="otelstats"):
        pytest.skip(
            "the `otelstats` opentelemetry_traces_exporter entry point is not registered: "
            "reinstall the package (pip install -e . --no-deps)"
        )
    return found


def test_opentelemetry_instrument_records_each_call_once(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    launcher = _launcher()
    app = tmp_path / "app.py"
    app.write_text(APP)
    db = tmp_path / "stats.db"
    env = {
        **os.environ,
        "FAKE_URL": server.base_url,
        "OTELSTATS_DB": str(db),
        # console too: the spans of both instrumentations, as exported, to check below
        "OTEL_TRACES_EXPORTER": "otelstats,console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    done = subprocess.run(
        [launcher, sys.executable, str(app)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT operation, streaming, outcome FROM calls").fetchall()
    assert sorted(rows) == [("chat", 0, "ok"), ("chat", 1, "ok"), ("embeddings", 0, "ok")]
    v2_active = importlib.util.find_spec("opentelemetry.instrumentation.openai_v2") is not None
    # openai-v2's spans were exported as well, each marked as a duplicate of one of ours
    duplicates = done.stdout.count('"otelstats.duplicate_of"')
    assert duplicates == (CALLS if v2_active else 0)
    # our spans, exported once each
    assert done.stdout.count('"gen_ai.operation.name"') - duplicates == CALLS


LAZY = """
import os, sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otelstats.instrumentation import OpenAIInstrumentor

spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
OpenAIInstrumentor().instrument(tracer_provider=provider)
assert "openai.resources.responses.responses" not in sys.modules, "imported up front"
import openai
with openai.OpenAI(base_url=os.environ["FAKE_URL"], api_key="k", max_retries=0) as client:
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    client.responses.create(model="m", input="hi")
print(sorted(s.name for s in spans.get_finished_spans()))
"""


@needs_responses
def test_sdk_modules_are_wrapped_when_the_app_imports_them(server: FakeOpenAIServer) -> None:
    """instrument() before the SDK's resources are imported: nothing imported up front (start-up
    time), and each module is still wrapped the moment the app first uses it."""
    done = subprocess.run(
        [sys.executable, "-c", LAZY],
        env={**os.environ, "FAKE_URL": server.base_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['chat m', 'chat m']"
