"""How rows_0001.json was made (run once, with the code of revision 0001; kept for provenance).

Real instrumented openai SDK calls against FakeOpenAIServer (plain, streamed, failed, in
conversations), spread over 40 days, plus hostile model names, written by Store.write into a
database at alembic revision "0001"; then every row of every table is dumped with its columns.
Re-running it after a later revision would describe that revision instead: do not.
Usage: python -m tests.reliability.data.make_rows_0001
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import tempfile
from pathlib import Path

import openai
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otelstats
from otelstats.fake_server import FakeOpenAIServer, Reply
from otelstats.instrumentation import OpenAIInstrumentor
from otelstats.records import span_to_record
from otelstats.store import Store

OUT = Path(__file__).with_name("rows_0001.json")
DAY_NS = 86_400 * 10**9
BASE_NS = 1_714_000_000 * 10**9  # 2024-04-24T23:06:40Z: fixed, so the file is reproducible
MODELS = ["gpt-4o-mini", "llama-3.1-8b", "'); DROP TABLE calls;--", '=HYPERLINK("x")', "模型"]


def main() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    messages = [{"role": "user", "content": "hi"}]
    try:
        with FakeOpenAIServer() as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="sk-x", max_retries=0)
            for i in range(60):
                model = MODELS[i % len(MODELS)]
                with otelstats.conversation(f"conv-{i % 7}"):
                    if i % 10 == 9:
                        server.push(Reply(status=500, error_message="boom"))
                        with contextlib.suppress(openai.APIError):
                            client.chat.completions.create(model=model, messages=messages)
                    elif i % 3 == 0:
                        for _ in client.chat.completions.create(
                            model=model, messages=messages, stream=True
                        ):
                            pass
                    else:
                        client.chat.completions.create(model=model, messages=messages)
    finally:
        instrumentor.uninstrument()
    spans = memory.get_finished_spans()
    records = []
    for i, span in enumerate(spans):
        rec = span_to_record(span)
        assert rec is not None
        shift = BASE_NS - rec.start_ns + (i % 40) * DAY_NS + i * 60 * 10**9
        records.append(
            dataclasses.replace(rec, start_ns=rec.start_ns + shift, end_ns=rec.end_ns + shift)
        )
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "stats.db"
        store = Store.open(db, migrate=False)
        store.migrate("0001")
        assert store.write(records) == len(records)
        store.dispose()
        conn = sqlite3.connect(db)
        dump: dict[str, dict[str, list]] = {}
        tables = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in sorted(tables):
            if table == "alembic_version":
                continue
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cursor.description]
            dump[table] = {"columns": columns, "rows": [list(r) for r in cursor]}
        conn.close()
    OUT.write_text(json.dumps(dump, ensure_ascii=False, indent=0) + "\n")
    print(f"{len(records)} calls -> {OUT}")


if __name__ == "__main__":
    main()
