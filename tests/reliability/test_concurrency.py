"""8 processes x threads x asyncio tasks, all instrumented, writing one SQLite file at once.

Every process makes real openai SDK calls (sync clients on threads, AsyncOpenAI on tasks,
plain and streamed) against one FakeOpenAIServer, with `otelstats.instrument(db=...)` and a short
export interval so the writers really contend. Afterwards the file holds exactly the calls made,
the aggregates agree with the raw rows, and no process saw or logged "database is locked".
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from otelstats import queries
from otelstats.fake_server import FakeOpenAIServer
from otelstats.store import Store

from .conftest import child_env, count_calls, python, write_script

PROCESSES = 8
THREADS = 3
TASKS = 3
CALLS_EACH = 6  # per thread and per task: 8 x (3 + 3) x 6 = 288 calls

_WORKER = """
import asyncio, json, logging, sys, threading
import otelstats
from openai import AsyncOpenAI, OpenAI

# Everything otelstats (or anything else) logs goes to stderr, which the test reads.
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
for noisy in ("httpx2", "httpx", "httpcore", "openai", "urllib3", "asyncio"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

db, base_url, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
threads, tasks, each = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
handle = otelstats.instrument(db, export_interval_ms=20)
MESSAGES = [{"role": "user", "content": "hi"}]
lock = threading.Lock()
totals = {"calls": 0, "prompt": 0, "completion": 0, "errors": []}

def note(usage):
    with lock:
        totals["calls"] += 1
        totals["prompt"] += usage.prompt_tokens
        totals["completion"] += usage.completion_tokens

def sync_worker(t):
    client = OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    with otelstats.conversation(f"w{worker}-thread{t}"):
        for i in range(each):
            try:
                if i % 3 == 2:
                    usage = None
                    stream = client.chat.completions.create(
                        model=f"model-{i % 2}", messages=MESSAGES, stream=True,
                        stream_options={"include_usage": True},
                    )
                    for chunk in stream:
                        usage = chunk.usage or usage
                    note(usage)
                else:
                    note(client.chat.completions.create(model=f"model-{i % 2}",
                                                        messages=MESSAGES).usage)
            except Exception as exc:  # reported, and fails the test
                totals["errors"].append(repr(exc))

async def async_worker(t, client):
    with otelstats.conversation(f"w{worker}-task{t}"):
        for i in range(each):
            try:
                if i % 3 == 2:
                    usage = None
                    stream = await client.chat.completions.create(
                        model=f"model-{i % 2}", messages=MESSAGES, stream=True,
                        stream_options={"include_usage": True},
                    )
                    async for chunk in stream:
                        usage = chunk.usage or usage
                    note(usage)
                else:
                    reply = await client.chat.completions.create(
                        model=f"model-{i % 2}", messages=MESSAGES)
                    note(reply.usage)
            except Exception as exc:
                totals["errors"].append(repr(exc))

async def async_main():
    async with AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as client:
        await asyncio.gather(*(async_worker(t, client) for t in range(tasks)))

pool = [threading.Thread(target=sync_worker, args=(t,)) for t in range(threads)]
for thread in pool:
    thread.start()
asyncio.run(async_main())
for thread in pool:
    thread.join()
handle.shutdown()
stats = handle.exporter.stats
totals["exporter"] = {"written": stats.written, "duplicates": stats.duplicates,
                      "pending": stats.pending, "dropped": stats.dropped,
                      "last_error": stats.last_error}
print(json.dumps(totals), flush=True)
"""


@pytest.mark.slow
def test_eight_processes_threads_and_tasks_store_exactly_the_calls_made(
    tmp_path: Path, fake_openai: FakeOpenAIServer
) -> None:
    db = tmp_path / "stats.db"
    worker = write_script(tmp_path, "worker.py", _WORKER)
    env = child_env(tmp_path)
    args = (str(db), fake_openai.base_url)
    sizes = (str(THREADS), str(TASKS), str(CALLS_EACH))
    # All start together on an empty file: they race to create and migrate it, too.
    procs = [
        subprocess.Popen(
            python(worker, *args, str(n), *sizes),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(PROCESSES)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]

    reports = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert "database is locked" not in err.lower(), err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))

    made = PROCESSES * (THREADS + TASKS) * CALLS_EACH
    for report in reports:
        assert report["errors"] == []  # every LLM call succeeded
        assert report["calls"] == (THREADS + TASKS) * CALLS_EACH
        exporter = report["exporter"]
        assert exporter["written"] == report["calls"]  # each process wrote its own, once
        assert (exporter["duplicates"], exporter["pending"], exporter["dropped"]) == (0, 0, 0)
        assert exporter["last_error"] is None
    assert sum(r["calls"] for r in reports) == made
    assert len(fake_openai.requests) == made

    assert count_calls(db) == made
    conn = sqlite3.connect(db)
    try:
        (distinct,) = conn.execute("SELECT count(DISTINCT span_id) FROM calls").fetchone()
        (integrity,) = conn.execute("PRAGMA integrity_check").fetchone()
    finally:
        conn.close()
    assert distinct == made
    assert integrity == "ok"

    store = Store.open(db)
    try:
        overview = queries.stats(store.engine, "all", "UTC")["overview"]
    finally:
        store.dispose()
    assert overview["requests"] == made
    assert overview["errors"] == 0
    assert overview["prompt_tokens"] == sum(r["prompt"] for r in reports)
    assert overview["completion_tokens"] == sum(r["completion"] for r in reports)
    assert overview["conversations"] == PROCESSES * (THREADS + TASKS)
