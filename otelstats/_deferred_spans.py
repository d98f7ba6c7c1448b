"""The spans of calls made off the caller's thread, a batch at a time, just before their export.

A call's span is started when the call ends, with every attribute at once (`Call`): before that,
nothing needs it. Where otelstats owns the tracer provider (`otelstats.instrument()` in an app
that has no tracing of its own), nothing but the statistics processor sees that span either, so
the caller need not make it at all: `Call.end` hands what the span is made of to the processor's
`DeferredSpans`, and its thread makes the spans of the calls ended since, one after another, and
exports them. The user's call returns sooner, and the SDK's span code runs in a loop instead of
once per call from cold caches: about a third of the CPU time it costs a call on the caller's
thread (benchmarks/README.md, target 1).

Nothing is lost and nothing waits longer than before:
- a batch waits at most the processor's export interval, and is exported as soon as it is made;
- the processor's `force_flush` and `shutdown` make every pending span first (at exit, on
  SIGTERM, at a multiprocessing child's exit: the paths that flush the processor);
- a burst is made and exported an export batch at a time, so the processor's queue never
  overflows; past as many pending calls as that queue holds, a call's span is made on its own
  thread, as before;
- a fork child drops its copy of the parent's pending calls (the parent records them) and starts
  a thread of its own at its first call;
- under gevent the thread and the events it waits on are of one kind, patched or not, whichever
  of `otelstats.instrument()` and gevent's patching comes first.

With an app's own provider, whose processors may look at the caller's context when a span starts
or expect it exported when the call returns, spans are made on the caller's thread as before.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from ._forks import in_fork_children

logger = logging.getLogger("otelstats.instrumentation")

Pending = tuple[Tracer, str, Context, dict[str, Any], int, int, bool, "str | None"]
"""One ended call's span, to make: (tracer, name, parent context, attributes, start and end in
ns since the epoch, failed, the failure's description)."""


def start_call_span(
    tracer: Tracer, name: str, context: Context, attributes: dict[str, Any], start_ns: int
) -> Span:
    """Start the span of a call, with its start time, parent and attributes."""
    return tracer.start_span(
        name, context, kind=SpanKind.CLIENT, attributes=attributes, start_time=start_ns
    )


def end_call_span(span: Span, end_ns: int, failed: bool, description: str | None) -> None:
    if failed:
        span.set_status(StatusCode.ERROR, description)
    span.end(end_ns)


def make_span(pending: Pending) -> None:
    """Make one ended call's span: on the thread of `DeferredSpans`, or on the caller's."""
    tracer, name, context, attributes, start_ns, end_ns, failed, description = pending
    span = start_call_span(tracer, name, context, attributes, start_ns)
    end_call_span(span, end_ns, failed, description)


class DeferredSpans:
    """Calls ended and their spans not made yet; `put` from any thread, made by one thread of
    its own (started with it) every `window_s`, or at once when `batch` are pending.
    `export()` is called after each `batch` made (the processor's flush, without this): the
    processor's export batch, so that its queue never overflows. At most `limit` pending (what
    its queue holds); a call past it makes its span on its own thread."""

    def __init__(
        self,
        window_s: float,
        export: Callable[[], object],
        *,
        batch: int,
        limit: int,
    ) -> None:
        self._window_s = window_s
        self._export = export
        self._batch = batch
        self._limit = limit
        self._closed = False
        self._logged = False
        self._reset()
        in_fork_children(self._reset)
        # Started now, with the events it waits on, as the SDK's batch processor starts its own:
        # started at the first call, after gevent patched `threading` (`otelstats.instrument()`
        # first, as under `otelstats run`), it would be a greenlet blocking the whole process on
        # these unpatched events. A fork child makes both anew, then at its first call.
        self._start()

    def _reset(self) -> None:
        """A fresh state: at creation, and in a fork child (the parent's pending calls are the
        parent's; its thread and locks did not come along)."""
        self._queue: collections.deque[Pending] = collections.deque()
        self._making = threading.Lock()
        self._starting = threading.Lock()
        self._wake = threading.Event()
        """Set: a batch is waiting for the thread (set by the first call after one was made)."""
        self._hurry = threading.Event()
        self._thread: threading.Thread | None = None

    def put(self, pending: Pending) -> bool:
        """Queue one call's span; False when the caller must make it now: closed, full, or no
        thread of ours can start (Python 3.12 starts none at interpreter exit, where a stream
        left open is ended)."""
        queue = self._queue
        if self._closed or len(queue) >= self._limit:
            return False
        if self._thread is None and not self._start():
            return False
        queue.append(pending)
        # Checked after the append: the thread clears it before it makes a batch, so this call
        # is in that batch or wakes the thread for the next.
        if not self._wake.is_set():
            self._wake.set()
        elif len(queue) >= self._batch and not self._hurry.is_set():
            self._hurry.set()
        return True

    def _start(self) -> bool:
        with self._starting:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="otelstats-spans", daemon=True)
                try:
                    thread.start()
                except RuntimeError:
                    return False
                self._thread = thread
        return True

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._closed:
                return
            self._hurry.wait(self._window_s)
            # Before making the batch: a call queued from here on wakes the thread again.
            self._wake.clear()
            self._hurry.clear()
            self.make()
            if self._closed:
                return

    def make(self) -> None:
        """Make every pending span now, exporting after each batch (the processor's flush)."""
        with self._making:
            queue = self._queue
            while queue:
                for _ in range(min(len(queue), self._batch)):
                    self._make_one(queue.popleft())
                try:
                    self._export()
                except Exception:
                    self._failed()

    def _make_one(self, pending: Pending) -> None:
        try:
            make_span(pending)
        except Exception:
            self._failed()

    def _failed(self) -> None:
        if not self._logged:
            self._logged = True
            logger.warning("otelstats: internal error in making a span (call unaffected)",
                           exc_info=True)  # fmt: skip

    def close(self) -> None:
        """Make every pending span and stop: a call ended from here on makes its own."""
        self._closed = True
        self._wake.set()
        self._hurry.set()
        self.make()
