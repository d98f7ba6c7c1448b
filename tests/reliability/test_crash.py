"""SIGKILL of an instrumented process: what finished long enough before the kill is on disk.

The bound (README "Guarantees"): calls that finished more than two export intervals
(OTELSTATS_EXPORT_INTERVAL_MS) before a SIGKILL are persisted; at most the calls of the last
intervals are lost, and the database is intact for the next process. Nothing can run on SIGKILL,
so this is the exporter's batching, not a handler.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from otelstats.fake_server import FakeOpenAIServer

from .conftest import child_env, count_calls, python, run, write_script

INTERVAL_MS = 300

_VICTIM = """
import sys, threading, time
import otelstats
from openai import OpenAI

db, base_url, interval_ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
otelstats.instrument(db, export_interval_ms=interval_ms)
client = OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
MESSAGES = [{"role": "user", "content": "hi"}]

def call(model):
    client.chat.completions.create(model=model, messages=MESSAGES)

for _ in range(20):        # phase A: these must all survive the kill
    call("early")
for chunk in client.chat.completions.create(model="early", messages=MESSAGES, stream=True):
    pass
time.sleep(2 * interval_ms / 1000 + 0.1)   # more than two export intervals go by

def busy():                # phase B: calls finishing right up to the kill (may be lost)
    while True:
        call("late")
        print("late", flush=True)

threading.Thread(target=busy, daemon=True).start()
print("A done", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_sigkill_loses_at_most_the_last_export_intervals(
    tmp_path: Path, fake_openai: FakeOpenAIServer
) -> None:
    db = tmp_path / "stats.db"
    victim = write_script(tmp_path, "victim.py", _VICTIM)
    with subprocess.Popen(
        python(victim, str(db), fake_openai.base_url, str(INTERVAL_MS)),
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(tmp_path),
    ) as process:
        assert process.stdout is not None
        late_seen = 0
        line = process.stdout.readline().strip()
        while line == "late":  # (the B thread may print before "A done")
            late_seen += 1
            line = process.stdout.readline().strip()
        assert line == "A done"
        while late_seen < 5:  # kill in the middle of a stream of finishing calls
            assert process.stdout.readline().strip() == "late"
            late_seen += 1
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL

    conn = sqlite3.connect(db)
    try:
        (integrity,) = conn.execute("PRAGMA integrity_check").fetchone()
        by_model = dict(conn.execute("SELECT model, count(*) FROM calls GROUP BY model"))
        (rollup_requests,) = conn.execute("SELECT sum(requests) FROM rollups").fetchone()
    finally:
        conn.close()
    assert integrity == "ok"
    assert by_model["early"] == 21  # every phase-A call, the stream included
    late_made = sum(1 for r in fake_openai.requests if r.body.get("model") == "late")
    assert by_model.get("late", 0) <= late_made  # the lost ones are only among the last
    # Raw rows and rollups were committed together: a kill never leaves them disagreeing.
    assert rollup_requests == sum(by_model.values())

    # The next process opens the same file and records normally.
    after = write_script(
        tmp_path,
        "after.py",
        """
        import sys, otelstats
        from openai import OpenAI
        otelstats.instrument(sys.argv[1], export_interval_ms=600_000)
        client = OpenAI(base_url=sys.argv[2], api_key="sk-test", max_retries=0)
        for _ in range(3):
            client.chat.completions.create(model="after", messages=[{"role": "user"}])
        """,
    )
    before = count_calls(db)
    result = run(after, str(db), fake_openai.base_url)
    assert result.returncode == 0, result.stderr
    assert count_calls(db) == before + 3
