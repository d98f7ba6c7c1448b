"""Celery's prefork pool: a real `celery worker` (billiard's pool processes) running tasks that
make real openai SDK calls; every call made must be stored.

A pool process leaves through `os._exit` once it has run `--max-tasks-per-child` tasks, and at
the worker's warm shutdown; neither runs an atexit handler nor multiprocessing's finalizers. The
broker is kombu's filesystem transport (no broker service); the export interval is set far
beyond the worker's life, so only the exit path can persist the calls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from otelstats.fake_server import FakeOpenAIServer
from tests.polling import wait_for

from .helpers import count_calls

pytest.importorskip("celery")

TASKS = 4

_APP = """
import os

import openai
from celery import Celery, signals

import otelstats

queue = os.environ["QUEUE_DIR"]
app = Celery(
    "tasks",
    broker="filesystem://",
    broker_transport_options={"data_folder_in": queue, "data_folder_out": queue},
)
app.conf.worker_hijack_root_logger = False
SETUP = os.environ["SETUP"]
if SETUP == "module":  # the usual place: the tasks module, imported before the pool forks
    otelstats.instrument(os.environ["STATS_DB"], export_interval_ms=600_000)
elif SETUP == "worker-process-init":  # set up in each pool process (OpenTelemetry's advice)

    @signals.worker_process_init.connect
    def setup(**_):
        otelstats.instrument(os.environ["STATS_DB"], export_interval_ms=600_000)


@app.task
def ask(base_url, i):
    client = openai.OpenAI(base_url=base_url, api_key="test", max_retries=0)
    client.chat.completions.create(model="celery", messages=[{"role": "user", "content": str(i)}])
    return i
"""


@pytest.mark.parametrize(
    ("setup", "max_tasks"),
    [
        ("module", 1),
        ("module", None),  # no recycling: the pool processes end at the warm shutdown
        ("worker-process-init", 1),
        ("run", 1),  # no code: `otelstats run -- celery -A tasks worker`
    ],
)
def test_celery_pool_processes_lose_no_call(
    tmp_path: Path, setup: str, max_tasks: int | None
) -> None:
    (tmp_path / "tasks.py").write_text(textwrap.dedent(_APP))
    queue = tmp_path / "queue"
    queue.mkdir()
    db = tmp_path / "stats.db"
    env = {
        **os.environ,
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "QUEUE_DIR": str(queue),
        "STATS_DB": str(db),
        "SETUP": setup,
        "OTELSTATS_EXPORT_INTERVAL_MS": "600000",
    }
    worker = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool=prefork",
              "-c", "2", "-l", "WARNING", "--without-mingle", "--without-gossip"]  # fmt: skip
    if max_tasks is not None:
        worker.append(f"--max-tasks-per-child={max_tasks}")
    if setup == "run":
        worker = [sys.executable, "-m", "otelstats", "run", "--db", str(db), "--", *worker]
    with FakeOpenAIServer() as server:
        send = f"import tasks\nfor i in range({TASKS}): tasks.ask.delay({server.base_url!r}, i)"
        subprocess.run([sys.executable, "-c", send], env=env, cwd=tmp_path, check=True, timeout=60)
        log = (tmp_path / "worker.log").open("w")
        process = subprocess.Popen(worker, env=env, cwd=tmp_path, stdout=log, stderr=log)
        try:
            wait_for(lambda: len(server.requests) >= TASKS, "the tasks' calls", timeout=90)
        finally:
            process.send_signal(signal.SIGTERM)  # a warm shutdown: running tasks finish
            process.wait(timeout=60)
            log.close()
    assert len(server.requests) == TASKS
    assert count_calls(db) == TASKS, (tmp_path / "worker.log").read_text()
