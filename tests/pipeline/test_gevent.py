"""A gevent app (monkey-patched: gunicorn's and Celery's gevent workers, Locust): otelstats'
span processor must not make the openai SDK's first request fork a child that runs copies of
the app's greenlets (see `otelstats._gevent`). A real gevent, in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from otelstats.fake_server import FakeOpenAIServer

from .helpers import count_calls

pytest.importorskip("gevent")

CALLS = 8

_APP = """
import os

ORDER = os.environ["ORDER"]
if ORDER == "instrument-first":  # as under `otelstats run` or `opentelemetry-instrument`
    import otelstats

    otelstats.instrument(os.environ["STATS_DB"])

from gevent import monkey

monkey.patch_all()

import gevent
import gevent.pool
import openai

import otelstats

if ORDER == "gevent-first":  # gevent's own advice: patch before anything else
    otelstats.instrument(os.environ["STATS_DB"])

parent = os.getpid()
stop = []


def canary():
    # A greenlet of the app's. If a forked child runs a copy of it, the copy says so and
    # ends that child before it can do anything else (a copy of a call would call again).
    while not stop:
        if os.getpid() != parent:
            with open(os.environ["STRAYS"], "a") as strays:
                strays.write(f"{os.getpid()}\\n")
            os._exit(0)
        gevent.sleep(0)


client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key="x", max_retries=0)
messages = [{"role": "user", "content": "hi"}]


def call(i):
    if i % 2:
        return client.chat.completions.create(model="m", messages=messages).usage.total_tokens
    return sum(1 for _ in client.chat.completions.create(model="m", messages=messages, stream=True))


watch = gevent.spawn(canary)
results = gevent.pool.Pool(4).map(call, range(int(os.environ["CALLS"])))
stop.append(1)
watch.join()
print(results)
"""


@pytest.mark.parametrize("order", ["gevent-first", "instrument-first"])
def test_the_sdks_first_request_forks_no_copy_of_the_apps_greenlets(
    tmp_path: Path, order: str
) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(_APP))
    db, strays = tmp_path / "stats.db", tmp_path / "strays"
    with FakeOpenAIServer() as server:
        env = {
            **os.environ,
            "XDG_DATA_HOME": str(tmp_path / "xdg"),
            "ORDER": order,
            "STATS_DB": str(db),
            "STRAYS": str(strays),
            "BASE_URL": server.base_url,
            "CALLS": str(CALLS),
        }
        done = subprocess.run(
            [sys.executable, "app.py"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not strays.exists(), f"children ran the app's greenlets: {strays.read_text()}"
    assert len(server.requests) == CALLS  # no call sent twice
    assert count_calls(db) == CALLS
