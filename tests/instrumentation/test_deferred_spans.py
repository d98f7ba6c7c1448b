"""Spans made off the caller's thread (`_deferred_spans`), on a provider that only otelstats'
processor is on, as `otelstats.instrument()` sets one up in an app without tracing of its own.

Each test builds that pipeline for real (an SDK TracerProvider, `StatsSpanProcessor` into a
`StatsSpanExporter` on a SQLite file) and adds a processor of its own to the same provider that
notes on which thread each span starts and keeps each span as it ends.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode

from otelstats import semconv
from otelstats._deferred_spans import DeferredSpans, Pending
from otelstats.every_call import StatsSpanProcessor
from otelstats.exporter import StatsSpanExporter
from otelstats.fake_server import FakeOpenAIServer, Reply
from otelstats.instrumentation import OpenAIInstrumentor

from ..pipeline.helpers import count_calls
from ..polling import wait_for

MESSAGES = [{"role": "user", "content": "hi"}]


class Probe(SpanProcessor):
    """Where each span starts (its thread) and each span as it ends."""

    def __init__(self) -> None:
        self.threads: list[int] = []
        self.spans: list[ReadableSpan] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.threads.append(threading.get_ident())

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


@dataclass
class Pipeline:
    provider: TracerProvider
    processor: StatsSpanProcessor
    probe: Probe
    db: Path


@contextmanager
def pipeline(db: Path, *, deferred: bool, **settings: Any) -> Iterator[Pipeline]:
    """otelstats' processor on a provider of its own; `deferred`: the spans made off the
    callers' threads, as `otelstats.instrument()` does there. `settings`: the processor's."""
    provider = TracerProvider()
    processor = StatsSpanProcessor(StatsSpanExporter(db), **settings)
    probe = Probe()
    provider.add_span_processor(processor)
    provider.add_span_processor(probe)
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(
        tracer_provider=provider,
        conversation_salt=b"test-salt",
        deferred_spans=processor.deferred if deferred else None,
    )
    try:
        yield Pipeline(provider, processor, probe, db)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def _calls(server: FakeOpenAIServer) -> None:
    """A non-streamed call, a stream, a call answered 500 and a stream the server cuts (last:
    the server closes that connection), through a client of their own."""
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client:
        client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        for _chunk in client.chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        ):
            pass
        server.push(Reply(status=500, error_message="the model fell over"))
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="failing", messages=MESSAGES)  # type: ignore[arg-type]
        server.push(Reply(cut_after=2))
        for _chunk in client.chat.completions.create(
            model="cut",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        ):
            pass


CALLS = 4
VOLATILE = {semconv.RESPONSE_ID, semconv.RESPONSE_TIME_TO_FIRST_CHUNK}
"""Attributes that differ from one run of the same calls to the next."""


def test_spans_are_made_off_the_callers_thread_and_exported_within_the_interval(
    tmp_path: Path, server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    with pipeline(tmp_path / "stats.db", deferred=True, schedule_delay_millis=2000) as made:
        _calls(server)
        assert made.probe.spans == []  # not made when the calls returned
        # No flush: the processor's own thread makes and exports them within its interval.
        wait_for(lambda: _stored(made.db) == CALLS, f"{CALLS} calls stored", timeout=20)
        assert len(made.probe.threads) == CALLS
        assert threading.get_ident() not in made.probe.threads


def test_a_span_made_later_is_the_span_the_caller_would_have_made(
    tmp_path: Path, server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """The same calls, their spans made by the caller and made later: the same names, kinds,
    attributes, statuses and parents, and each span's times those of its call."""
    found: dict[bool, list[ReadableSpan]] = {}
    for deferred in (False, True):
        with pipeline(tmp_path / f"{deferred}.db", deferred=deferred) as made:
            app = made.provider.get_tracer("app")
            with app.start_as_current_span("handle request"):
                _calls(server)
            made.provider.force_flush()
            (parent,) = (s for s in made.probe.spans if s.name == "handle request")
            spans = [s for s in made.probe.spans if s is not parent]
            assert len(spans) == CALLS
            for span in spans:
                assert span.parent == parent.context
                # Made after the request's span ended, with the times of its call, inside it.
                assert (parent.start_time or 0) <= (span.start_time or -1)
                assert (span.start_time or 0) < (span.end_time or 0) <= (parent.end_time or -1)
            found[deferred] = spans
            assert count_calls(made.db) == CALLS

    def shape(span: ReadableSpan) -> tuple[Any, ...]:
        attributes = {k: v for k, v in (span.attributes or {}).items() if k not in VOLATILE}
        return span.name, span.kind, span.status.status_code, span.status.description, attributes

    assert [shape(s) for s in found[True]] == [shape(s) for s in found[False]]
    failed = found[True][2]
    assert failed.status.status_code is StatusCode.ERROR
    assert "the model fell over" in (failed.status.description or "")
    outcomes = [(s.attributes or {}).get(semconv.OTELSTATS_OUTCOME) for s in found[True]]
    assert outcomes == [None, None, "error", "incomplete"]


def test_flush_and_shutdown_make_the_pending_spans_first(
    tmp_path: Path, server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """What exit, SIGTERM and a multiprocessing child's end go through: nothing pending is
    left behind, however long the interval."""
    with pipeline(tmp_path / "stats.db", deferred=True, schedule_delay_millis=600_000) as made:
        _calls(server)
        made.provider.force_flush()
        assert count_calls(made.db) == CALLS
        _calls(server)
        made.processor.shutdown()
        assert count_calls(made.db) == 2 * CALLS
        # Shut down: the user's calls go on as before (their spans made on their thread).
        answer = client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        assert answer.choices[0].message.content
        assert made.probe.threads[-1] == threading.get_ident()


def test_a_burst_is_made_an_export_batch_at_a_time_and_loses_no_call(
    tmp_path: Path, server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """A full export batch pending is made and exported at once, whatever the interval, so the
    processor's queue (here 32) never overflows."""
    many, batch = 100, 8
    settings = {
        "schedule_delay_millis": 600_000,
        "max_queue_size": 32,
        "max_export_batch_size": batch,
    }
    with pipeline(tmp_path / "stats.db", deferred=True, **settings) as made:
        for _ in range(many):
            client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        wait_for(lambda: _stored(made.db) > many - batch, "the full batches stored", timeout=20)
        assert threading.get_ident() not in made.probe.threads
        made.provider.force_flush()
        assert count_calls(made.db) == many


def test_past_the_limit_a_call_makes_its_own_span() -> None:
    """No more calls wait than the processor's queue holds: `put` refuses the next one, whose
    caller then makes its span itself (`Call.end`)."""
    provider, probe, pending = _one_call()
    deferred = DeferredSpans(600, lambda: None, batch=100, limit=3)
    assert [deferred.put(pending) for _ in range(5)] == [True, True, True, False, False]
    assert probe.spans == []
    deferred.close()
    assert [(s.name, s.start_time, s.end_time) for s in probe.spans] == [("chat m", 1, 2)] * 3
    assert deferred.put(pending) is False  # closed: made by the caller from now on
    provider.shutdown()


def test_where_no_thread_can_start_the_caller_makes_its_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python 3.12 starts no thread at interpreter exit, where a stream left open is ended
    (`Telemetry.end_unfinished`): in a fork child whose only call that is, the call must still
    be recorded. Injected here as `Thread.start` raising what 3.12 raises then."""
    provider, probe, pending = _one_call()

    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", refused)
        deferred = DeferredSpans(600, lambda: None, batch=100, limit=100)
        assert deferred.put(pending) is False  # not queued: made by its caller
    assert deferred.put(pending) is True  # a thread can start again: queued
    deferred.close()
    assert len(probe.spans) == 1
    provider.shutdown()


def _one_call() -> tuple[TracerProvider, Probe, Pending]:
    """A provider with a Probe on it, and one call's span to make through its tracer."""
    provider = TracerProvider()
    probe = Probe()
    provider.add_span_processor(probe)
    tracer = provider.get_tracer("test")
    attributes = {semconv.REQUEST_MODEL: "m"}
    return provider, probe, (tracer, "chat m", Context(), attributes, 1, 2, False, None)


def _stored(db: Path) -> int:
    """Calls stored so far; 0 before the exporter has made the database."""
    try:
        return count_calls(db)
    except sqlite3.Error:
        return 0


def test_calls_from_many_threads_are_each_made_once(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    per_thread, threads = 15, 4
    with pipeline(tmp_path / "stats.db", deferred=True, schedule_delay_millis=50) as made:

        def work() -> None:
            with openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=0) as own:
                for _ in range(per_thread):
                    own.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]

        run: list[threading.Thread] = [threading.Thread(target=work) for _ in range(threads)]
        for thread in run:
            thread.start()
        for thread in run:
            thread.join()
        made.provider.force_flush()
        assert count_calls(made.db) == per_thread * threads
        ids = {s.context.span_id for s in made.probe.spans if s.context is not None}
        assert len(made.probe.spans) == len(ids) == per_thread * threads
