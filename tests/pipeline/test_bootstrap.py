"""instrument() in real subprocesses: exit, SIGTERM, fork, idempotence, live metrics, `run`.

Each scenario is a small program run by a fresh interpreter, making real openai SDK calls against
the real FakeOpenAIServer; the test then counts rows in the SQLite file with the stdlib driver.
The export interval is set far beyond the program's life, so only the exit paths can persist.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
import venv
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import IO

import pytest

from otelstats.fake_server import FakeOpenAIServer
from otelstats.runner import run_program

from .helpers import count_calls

_PRELUDE = """
import os, sys, time
from openai import OpenAI
from otelstats.fake_server import FakeOpenAIServer

def calls(n, model="m"):
    client = OpenAI(base_url=SERVER.base_url, api_key="test", max_retries=0)
    for _ in range(n):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    for _chunk in stream:
        pass

def idle():
    # Short sleeps, not one long one: CPython runs a Python signal handler on the main thread
    # between bytecodes, so a SIGTERM landing just before a blocking call starts (or on another
    # thread) waits for that call to return. That holds for every Python handler, the app's own
    # and KeyboardInterrupt's included; these tests are about what otelstats does once it runs.
    for _ in range(1200):
        time.sleep(0.1)

SERVER = FakeOpenAIServer().start()
"""


def _script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "app.py"
    script.write_text(_PRELUDE + textwrap.dedent(body))
    return script


def _env(tmp_path: Path) -> dict[str, str]:
    # The conversation salt lives in the user data dir: keep it inside the test's tmp_path.
    return {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}


def _run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(script.parent),
    )


def test_normal_exit_persists_every_call_once(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    script = _script(
        tmp_path,
        """
        from pathlib import Path
        import otelstats
        first = otelstats.instrument(sys.argv[1], export_interval_ms=600_000)
        # Idempotent: one setup. Called again as it was (a Streamlit app's script runs again on
        # every interaction), or with part of it, it says nothing; with other arguments it
        # names what it ignores.
        assert otelstats.instrument(sys.argv[1]) is first
        assert otelstats.instrument(Path(sys.argv[1]), export_interval_ms=600_000) is first
        print("repeated", file=sys.stderr, flush=True)
        assert otelstats.instrument(sys.argv[1] + "-other", export_interval_ms=1) is first
        calls(4)   # 4 plain calls + 1 stream, persisted only by the exit flush
        """,
    )
    result = _run(script, str(db))
    assert result.returncode == 0, result.stderr
    assert count_calls(db) == 5
    repeated, _, other = result.stderr.partition("repeated\n")
    assert "already ran" not in repeated
    assert "otelstats.instrument() already ran; ignored: db, export_interval_ms" in other
    assert not (tmp_path / "stats.db-other").exists()


_LEFT_OPEN = """
client = OpenAI(base_url=SERVER.base_url, api_key="test", max_retries=0)
if sys.argv[2] == "own-provider":   # an app with its own OpenTelemetry setup, made first
    from opentelemetry.sdk.trace import TracerProvider
    from otelstats import OpenAIInstrumentor, StatsSpanExporter, StatsSpanProcessor
    provider = TracerProvider()
    provider.add_span_processor(StatsSpanProcessor(StatsSpanExporter(sys.argv[1])))
    OpenAIInstrumentor().instrument(tracer_provider=provider)
else:
    import otelstats
    otelstats.instrument(sys.argv[1], export_interval_ms=600_000)
# A script that stops reading mid-answer and ends: its stream is neither read to the end nor
# closed, and lives (a module global) until the interpreter's very last teardown.
stream = client.chat.completions.create(
    model="m", messages=[{"role": "user", "content": "hi"}], stream=True
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        break
client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
"""


@pytest.mark.parametrize("setup", ["instrument", "own-provider"])
def test_a_stream_left_open_at_exit_is_recorded(tmp_path: Path, setup: str) -> None:
    db = tmp_path / "stats.db"
    script = _script(tmp_path, _LEFT_OPEN)
    result = _run(script, str(db), setup)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT streaming, outcome, output_tokens, tokens_source FROM calls ORDER BY start_ns"
        ).fetchall()
    # The stream was left after its first content chunk (the role chunk before it has none).
    assert rows == [(1, "cancelled", 1, "counted"), (0, "ok", 9, "reported")]


_WORKERS = """
import multiprocessing, os, sys
from openai import OpenAI
import otelstats

otelstats.instrument(os.environ["STATS_DB"])   # at import: spawned children import it too


def work(i):
    client = OpenAI(base_url=os.environ["FAKE_URL"], api_key="test", max_retries=0)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": str(i)}])


if __name__ == "__main__":
    work(-1)
    otelstats.instrument().flush()      # the database exists before the workers start
    context = multiprocessing.get_context(sys.argv[1])
    how = sys.argv[2]
    if how == "process":
        workers = [context.Process(target=work, args=(i,)) for i in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
            assert worker.exitcode == 0
    elif how == "pool-close":
        pool = context.Pool(2)
        pool.map(work, range(6))
        pool.close()
        pool.join()
    else:  # leaving `with` terminates the pool: SIGTERM to workers already on their way out
        with context.Pool(2) as pool:
            pool.map(work, range(6))
"""


@pytest.mark.parametrize(
    ("start", "how", "made"),
    [
        ("fork", "process", 3),
        ("fork", "pool-close", 6),
        ("fork", "pool-with", 6),
        ("forkserver", "pool-with", 6),  # Python 3.14's default on Linux
        ("forkserver", "process", 3),
        ("spawn", "pool-with", 6),  # ends through atexit, which the pool's SIGTERM cut short
    ],
)
def test_multiprocessing_workers_lose_no_call(
    tmp_path: Path, start: str, how: str, made: int
) -> None:
    """Forked and forkserver workers end with os._exit, where no atexit handler runs: their
    calls of the last export interval were lost (all of them, for short tasks). Spawned ones
    end through atexit, but a Pool's SIGTERM landing in that flush ended them mid-way."""
    db = tmp_path / "stats.db"
    script = tmp_path / "workers.py"
    script.write_text(_WORKERS)
    with FakeOpenAIServer() as server:
        env = {**_env(tmp_path), "STATS_DB": str(db), "FAKE_URL": server.base_url}
        for _ in range(2):  # a Pool's end races its workers' exit: more than once
            result = subprocess.run(
                [sys.executable, str(script), start, how],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
            )
            assert result.returncode == 0, result.stderr
    assert count_calls(db) == 2 * (1 + made)


_SAMPLING = """
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

import otelstats

scenario = sys.argv[2]
app_spans = InMemorySpanExporter()   # what the app's own exporter receives
# The app's own tracing, set up first (its sampler from OTEL_TRACES_SAMPLER unless given).
provider = TracerProvider(sampler=ALWAYS_OFF if scenario == "app-sampler-drops-all" else None)
provider.add_span_processor(SimpleSpanProcessor(app_spans))
trace.set_tracer_provider(provider)
handle = otelstats.instrument(sys.argv[1], export_interval_ms=600_000)
if scenario == "unsampled-parent":
    # A request that arrived with `traceparent: 00-...-00`: its trace is not sampled.
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0))
    context.attach(set_span_in_context(NonRecordingSpan(remote)))
calls(3)
handle.shutdown()
print(len(app_spans.get_finished_spans()))
"""


@pytest.mark.parametrize(
    ("scenario", "env", "exported_by_app"),
    [
        ("not-sampled-out", {}, 4),
        ("app-sampler-drops-all", {}, 0),
        ("unsampled-parent", {}, 0),
        ("env-sampler-drops-all", {"OTEL_TRACES_SAMPLER": "always_off"}, 0),
    ],
)
def test_every_call_is_counted_whatever_the_trace_sampling(
    tmp_path: Path, scenario: str, env: dict[str, str], exported_by_app: int
) -> None:
    """The app's sampler decides what the app's own exporters get (as without otelstats); the
    statistics count every call (3 plain calls and a stream)."""
    db = tmp_path / "stats.db"
    script = _script(tmp_path, _SAMPLING)
    result = subprocess.run(
        [sys.executable, str(script), str(db), scenario],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_env(tmp_path), **env},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(exported_by_app)]
    assert count_calls(db) == 4


_WHO_MAKES_SPANS = """
import threading
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

import otelstats

class Probe(SpanProcessor):
    threads = []
    def on_start(self, span, parent_context=None):
        self.threads.append(threading.current_thread() is threading.main_thread())

probe = Probe()
if sys.argv[2] == "app-tracing":   # the app's own SDK provider, set up first
    provider = TracerProvider()
    provider.add_span_processor(probe)
    trace.set_tracer_provider(provider)
handle = otelstats.instrument(sys.argv[1], export_interval_ms=600_000)
if sys.argv[2] == "no-tracing":    # what only otelstats' processor is on
    handle.tracer_provider.add_span_processor(probe)
calls(2)
print(len(Probe.threads), all(Probe.threads))
handle.flush()
print(len(Probe.threads), all(Probe.threads))
"""


@pytest.mark.parametrize(
    ("scenario", "before_flush"), [("no-tracing", "0 True"), ("app-tracing", "3 True")]
)
def test_spans_are_made_later_where_only_otelstats_sees_them(
    tmp_path: Path, scenario: str, before_flush: str
) -> None:
    """On the provider of its own that instrument() makes, the calls' spans are not made by
    the calls but later (`_deferred_spans`; here at the flush, the interval being long); on
    the app's own provider, whose processors may expect them as a call ends, by the call."""
    db = tmp_path / "stats.db"
    result = _run(_script(tmp_path, _WHO_MAKES_SPANS), str(db), scenario)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [before_flush, "3 True"]
    assert count_calls(db) == 3


def test_shutdown_stops_recording_and_calls_still_work(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    script = _script(
        tmp_path,
        """
        import otelstats
        handle = otelstats.instrument(sys.argv[1], export_interval_ms=600_000)
        calls(1)
        handle.shutdown()
        calls(2)
        again = otelstats.instrument(sys.argv[1], export_interval_ms=600_000)
        assert again is not handle
        calls(0)
        """,
    )
    result = _run(script, str(db))
    assert result.returncode == 0, result.stderr
    assert count_calls(db) == 2 + 1


@contextmanager
def _talking(
    tmp_path: Path, script: Path, db: Path
) -> Iterator[tuple[subprocess.Popen[str], IO[str], IO[str]]]:
    """Run `script db` with its stdin and stdout piped to the test: (process, stdin, stdout)."""
    with subprocess.Popen(
        [sys.executable, str(script), str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        yield process, process.stdin, process.stdout


def _terminate_when_ready(tmp_path: Path, script: Path, db: Path) -> tuple[int, str]:
    """Run `script db`, send SIGTERM once it prints "ready"; (exit code, what it printed after)."""
    with subprocess.Popen(
        [sys.executable, str(script), str(db)],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        return code, process.stdout.read()


def test_sigterm_flushes_then_terminates(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    script = _script(
        tmp_path,
        """
        import time
        import otelstats
        otelstats.instrument(sys.argv[1], export_interval_ms=600_000)
        calls(3)
        print("ready", flush=True)
        idle()
        """,
    )
    code, _ = _terminate_when_ready(tmp_path, script, db)
    assert code == -signal.SIGTERM  # the default termination behaviour is kept
    assert count_calls(db) == 4


def test_sigterm_chains_to_the_apps_own_handler(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    script = _script(
        tmp_path,
        """
        import signal, time
        def graceful(signum, frame):
            print("app handler", flush=True)
            raise SystemExit(7)
        signal.signal(signal.SIGTERM, graceful)
        import otelstats
        otelstats.instrument(sys.argv[1], export_interval_ms=600_000)
        calls(2)
        print("ready", flush=True)
        idle()
        """,
    )
    code, rest = _terminate_when_ready(tmp_path, script, db)
    assert rest.strip() == "app handler"
    assert code == 7
    assert count_calls(db) == 3


def test_a_sigterm_during_the_last_flush_waits_for_it(tmp_path: Path) -> None:
    """SIGTERM arrives while the ending process writes its last calls (a Pool terminating
    workers that are already running their atexit handlers: Python 3.13's spawned workers). The
    write finishes, then the process dies of the signal as it would have. It ended mid-write."""
    db = tmp_path / "stats.db"
    script = _script(
        tmp_path,
        """
        import otelstats
        handle = otelstats.instrument(sys.argv[1], export_interval_ms=600_000)
        calls(0)             # a stream
        handle.flush()       # the database exists
        calls(2)             # 3 calls more, written by the flush at exit
        print("ready", flush=True)
        sys.stdin.readline()
        print("exiting", flush=True)
        """,
    )
    with _talking(tmp_path, script, db) as (process, stdin, stdout):
        assert stdout.readline().strip() == "ready"
        with closing(sqlite3.connect(db, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")  # the flush at exit waits for this write lock
            stdin.write("\n")
            stdin.flush()
            assert stdout.readline().strip() == "exiting"
            time.sleep(0.5)  # the process is in its last flush, waiting for the lock
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert process.poll() is None  # the signal waits for the flush
            holder.execute("COMMIT")
        code = process.wait(timeout=60)
    assert code == -signal.SIGTERM
    assert count_calls(db) == 4


def test_fork_after_instrument_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    script = _script(
        tmp_path,
        """
        import gc
        import otelstats
        otelstats.instrument(sys.argv[1], export_interval_ms=600_000)
        calls(2)          # parent, before the fork: 3 records still queued
        # A stream the parent is reading when it forks: its call is the parent's, whatever
        # the children do with their copies of it.
        client = OpenAI(base_url=SERVER.base_url, api_key="test", max_retries=0)
        stream = client.chat.completions.create(
            model="open", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        next(iter(stream))
        children = []
        for leaves in ("open", "dropped"):
            pid = os.fork()
            if pid == 0:
                calls(4)  # each child: 5 records of its own
                if leaves == "dropped":
                    del stream
                    gc.collect()
                sys.exit(0)
            children.append(pid)
        calls(1)          # parent, after: 2 more
        for pid in children:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        for _chunk in stream:
            pass
        """,
    )
    result = _run(script, str(db))
    assert result.returncode == 0, result.stderr
    assert count_calls(db) == 3 + 2 * 5 + 2 + 1
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT outcome FROM calls WHERE request_model = 'open'").fetchall()
    assert rows == [("ok",)]


def test_live_metrics_port_serves_genai_metrics(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    script = _script(
        tmp_path,
        """
        import otelstats
        handle = otelstats.instrument(sys.argv[1], prometheus_port=0)
        calls(2)
        print(handle.metrics_port, flush=True)
        sys.stdin.readline()
        """,
    )
    with _talking(tmp_path, script, db) as (process, stdin, stdout):
        port = int(stdout.readline())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
            text = response.read().decode()
        stdin.write("\n")
        stdin.close()
        assert process.wait(timeout=60) == 0
    assert "gen_ai_client_operation_duration_seconds_count{" in text
    assert "gen_ai_client_token_usage" in text
    count_lines = [
        line
        for line in text.splitlines()
        if line.startswith("gen_ai_client_operation_duration_seconds_count{")
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in count_lines) == 3
    assert count_calls(db) == 3


def test_run_program_instruments_an_unmodified_script(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    script = tmp_path / "plain.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from openai import OpenAI
            client = OpenAI(base_url=sys.argv[1], api_key="test", max_retries=0)
            for _ in range(3):
                client.chat.completions.create(model="m", messages=[{"role": "user"}])
            sys.exit(3)
            """
        )
    )
    other = tmp_path / "other-site"
    other.mkdir()
    marker = tmp_path / "chained"
    (other / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with FakeOpenAIServer() as server:
        code = run_program(
            [sys.executable, str(script), server.base_url],
            db=db,
            env={**_env(tmp_path), "PYTHONPATH": str(other)},
        )
    assert code == 3
    assert count_calls(db) == 3
    assert marker.exists()  # the program's own sitecustomize still ran


def test_an_app_that_sets_up_its_tracing_after_instrument_keeps_it(tmp_path: Path) -> None:
    """Under `otelstats run` the app's own OpenTelemetry setup always comes after ours: its
    `set_tracer_provider` must take effect (the global slot can be set only once), its exporter
    gets its spans, the statistics get every call, and the calls sit in the app's trace."""
    db = tmp_path / "stats.db"
    script = tmp_path / "traced_app.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from openai import OpenAI
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )

            mine = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(mine))
            trace.set_tracer_provider(provider)
            client = OpenAI(base_url=sys.argv[1], api_key="test", max_retries=0)
            with trace.get_tracer("app").start_as_current_span("handle-request") as span:
                for _ in range(2):
                    client.chat.completions.create(model="m", messages=[{"role": "user"}])
            names = [s.name for s in mine.get_finished_spans()]
            print(f"{span.get_span_context().trace_id:032x}", *names)
            """
        )
    )
    with FakeOpenAIServer() as server:
        command = [sys.executable, "-m", "otelstats", "run", "--db", str(db), "--",
                   sys.executable, str(script), server.base_url]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    trace_id, *names = done.stdout.split()
    assert names == ["handle-request"]  # the app's exporter got the app's span
    assert "Overriding" not in done.stderr
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT trace_id FROM calls").fetchall()
    finally:
        conn.close()
    assert rows == [(trace_id,), (trace_id,)]


def test_run_with_a_python_otelstats_is_not_installed_for_says_so(tmp_path: Path) -> None:
    """`otelstats run -- python app.py` with another environment's Python (otelstats installed
    with pipx, the app in its own venv): the program runs as it would, and stderr says why its
    calls are not recorded and what to do."""
    venv.create(tmp_path / "other-venv", with_pip=False)
    python = tmp_path / "other-venv" / "bin" / "python"
    command = [sys.executable, "-m", "otelstats", "run", "--db", str(tmp_path / "s.db"), "--",
               str(python), "-c", "print('the program ran'); raise SystemExit(4)"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert done.returncode == 4
    assert done.stdout == "the program ran\n"
    assert f"otelstats is not installed for {python}" in done.stderr
    assert "pip install otelstats" in done.stderr


def test_run_program_reports_a_missing_command(tmp_path: Path) -> None:
    from otelstats.errors import ConfigError

    with pytest.raises(ConfigError, match="command not found"):
        run_program(["/nonexistent/program"], db=tmp_path / "stats.db")
