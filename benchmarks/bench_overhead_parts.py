"""Where otelstats' per-call overhead goes, in CPU instructions (repeatable, unlike time on a
shared 2-core machine). Runs `calls` non-streaming calls (after 100 warm-up calls) in one setup;
run it under callgrind twice and divide the difference by the number of calls:

    for n in 0 200; do valgrind --tool=callgrind --callgrind-out-file=cg.$MODE.$n \\
        .venv/bin/python -m benchmarks.bench_overhead_parts $MODE $n; done
    # instructions per call = (total(cg.$MODE.200) - total(cg.$MODE.0)) / 200

`--callgrind [KIND] [N] [LAYOUTS]` does exactly that for every mode (two valgrind processes at a
time, PYTHONHASHSEED=0), under LAYOUTS (default 3) environment sizes, and prints the medians and
the ratio per layout. A run is repeatable to a few thousand instructions, but the memory layout
moves a per-call figure by up to ~0.5 % of the bare SDK's cost (~80 k on a stream of 10 chunks);
about half an hour for 3 layouts at N=500 here:

    .venv/bin/python -m benchmarks.bench_overhead_parts --callgrind non_stream 500

`--time [KIND] [ROUNDS] [PROCESSES]` times the parts instead, in CPU time (every thread):
PROCESSES fresh interpreters (default 3, hash seeds 1..N), each visiting every mode ROUNDS
times (default 60; full-nowrite left out) in short blocks of 10 calls, so each mode sees the
same stretches of a noisy machine; each mode's spans are exported every 10 visits, timed apart.
It prints each process's parts by the lower quartile and the median of its visits, and the
medians of the processes' ratios. Time and instructions part ways here: otelstats' own logic
and span run at fewer instructions per µs than the SDK's hot loop (code run once per call,
from cold caches):

    .venv/bin/python -m benchmarks.bench_overhead_parts --time stream_short

`--time chunks` times a stream of 10 and one of 210 chunks in every visit of every mode and
prints what each mode adds per chunk over the bare SDK (the slope between the two lengths,
in the same visits), and the ratio otelstats / openai-v2 per chunk.

Modes, each adding one part to the one before (exported spans are flushed every 100 calls, as
bench_overhead does):
  bare          the openai SDK alone
  noop          + otelstats' wrappers with a no-op tracer: our own logic
  sdk           + an SDK TracerProvider: the span (its attributes, ids, processors)
  full-nowrite  + StatsSpanProcessor -> StatsSpanExporter, Store.write skipped: the mapping;
                the spans are made off the caller's thread, at the flush, as on the provider of
                its own that `otelstats.instrument()` sets up (`_deferred_spans`), so this mode
                moves the span's cost from the calls to the export (where it is made in a loop)
  full          + Store.write into SQLite: everything a user pays
  openai-v2     opentelemetry-instrumentation-openai-v2 with SDK metrics, exporting the same way
                (through a plain BatchSpanProcessor)
Run-to-run spread is about ±5 % of the instrumented part at 200 calls, ±2 % at 1 000.

A third argument, `async_non_stream` or `async_stream_short`, sends every call through the async
client (one event loop per block of 100 calls, the same in every mode). `stream_short` or
`stream_long` makes every call a stream of 10 or 210 chunks (the caller asks for usage, as in
bench_overhead). The cost per chunk is then the slope:

    (total(MODE, N, stream_long) - total(MODE, N, stream_short)) / (N * 200)

and a setup's added cost per chunk is its slope minus the bare SDK's.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.bench_overhead import LONG, SHORT, block, make_clients

MODES = ("bare", "noop", "sdk", "full-nowrite", "full", "openai-v2")
KINDS = ("non_stream", "async_non_stream", "stream_short", "async_stream_short", "stream_long")


class Mode:
    """One of MODES, switched on by `with` (or `__enter__`) and off again at its exit: `setup`
    switches one on for a whole run, `timed` interleaves them. Imports only what the mode needs,
    so each valgrind run loads what its mode uses and no more."""

    def __init__(self, mode: str, db: Path) -> None:
        self.name = mode
        self.instrumentor: Any = None
        self.kwargs: dict[str, Any] = {}
        self.flushed: Any = None  # the TracerProvider to flush (None: nothing exported)
        if mode == "bare":
            return
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import NoOpTracerProvider

        from otelstats.every_call import StatsSpanProcessor
        from otelstats.exporter import StatsSpanExporter
        from otelstats.instrumentation import OpenAIInstrumentor

        if mode == "noop":
            self.instrumentor = OpenAIInstrumentor()
            self.kwargs["tracer_provider"] = NoOpTracerProvider()
            return
        provider = TracerProvider()
        self.kwargs["tracer_provider"] = provider
        if mode != "sdk":
            # Spans are exported at each block's flush only. Under valgrind a block of 100 calls
            # runs for longer than the processor's 5 s timer, whose partial exports (a SQLite
            # commit each) would then depend on how loaded the machine is.
            exporter = StatsSpanExporter(db)
            # otelstats' modes get the processor `otelstats.instrument()` installs.
            if mode == "openai-v2":
                processor = BatchSpanProcessor(exporter, schedule_delay_millis=3_600_000)
            else:  # and, as on a provider of its own, its spans made off the caller's thread
                processor = StatsSpanProcessor(exporter, schedule_delay_millis=3_600_000)
                self.kwargs["deferred_spans"] = processor.deferred
            provider.add_span_processor(processor)
            self.flushed = provider
        if mode == "openai-v2":
            from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as V2
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader

            self.instrumentor = V2()  # type: ignore[no-untyped-call]
            self.kwargs["meter_provider"] = MeterProvider(metric_readers=[InMemoryMetricReader()])
        else:
            self.instrumentor = OpenAIInstrumentor()

    def __enter__(self) -> Mode:
        if self.instrumentor is not None:
            self.instrumentor.instrument(**self.kwargs)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.instrumentor is not None:
            self.instrumentor.uninstrument()


def setup(mode: str, db: Path) -> Any:
    """Instrument for `mode`; returns the TracerProvider to flush (None: nothing exported)."""
    if mode == "full-nowrite":
        from otelstats.store import Store

        Store.write = lambda self, records: len(records)  # type: ignore[method-assign]
    return Mode(mode, db).__enter__().flushed


def _instructions(mode: str, calls: int, kind: str, layout: int) -> int:
    """Instructions of one whole run under callgrind (every thread, start-up included).

    `layout` pads the environment by that many hundred bytes: that moves the process's memory
    layout, and with it the order of sets and dicts keyed by object identity. The same run is
    repeatable to a few thousand instructions, but a per-call figure moves by up to ~0.5 % of
    the bare SDK's cost from one layout to another, so figures are medians over layouts."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
               "-m", "benchmarks.bench_overhead_parts", mode, str(calls), kind]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0", "OTELSTATS_BENCH_LAYOUT": "x" * (100 * layout)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {done.stderr[-500:]}")
    return int(found.group(1))


def count(kind: str, calls: int, layouts: int) -> int:
    """Instructions per call of every mode, by callgrind, medians over `layouts` memory layouts;
    the table goes to stdout."""
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    runs = [(mode, n, layout) for layout in range(layouts) for mode in MODES for n in (0, calls)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = pool.map(lambda run: _instructions(run[0], run[1], kind, run[2]), runs)
        totals = dict(zip(runs, found, strict=True))
    each = {  # per call, by layout
        (mode, layout): (totals[mode, calls, layout] - totals[mode, 0, layout]) / calls
        for mode in MODES
        for layout in range(layouts)
    }
    per_call = {
        mode: statistics.median(each[mode, lay] for lay in range(layouts)) for mode in MODES
    }
    print(f"{kind}, {calls} calls against none, medians of {layouts} memory layouts; "
          "instructions per call, and what each adds:")  # fmt: skip
    print(f"  {'bare':13} {per_call['bare'] / 1e3:9.1f} k")
    chain = MODES[:-1]  # each adds one part to the one before; openai-v2 is over bare
    for before, mode in (*itertools.pairwise(chain), ("bare", "openai-v2")):
        added = (per_call[mode] - per_call[before]) / 1e3
        print(f"  {mode:13} {per_call[mode] / 1e3:9.1f} k  +{added:.1f} k over {before}")
    ratios = []
    for layout in range(layouts):  # each layout against its own bare run
        ours, theirs = (each[m, layout] - each["bare", layout] for m in ("full", "openai-v2"))
        ratios.append(ours / theirs)
        print(f"layout {layout}: otelstats adds {ours / 1e3:.1f} k, openai-v2 adds "
              f"{theirs / 1e3:.1f} k: ratio {ours / theirs:.3f}")  # fmt: skip
    print(f"ratio, median of {layouts} layouts: {statistics.median(ratios):.3f} "
          f"(from {min(ratios):.3f} to {max(ratios):.3f})")  # fmt: skip
    return 0


def _usage() -> int:
    print("usage: MODE N [KIND] | --callgrind [KIND] [N] [LAYOUTS] | --time [KIND] [ROUNDS] "
          "[PROCESSES]; "
          f"MODE one of {', '.join(MODES)}; KIND one of {', '.join(KINDS)}",
          file=sys.stderr)  # fmt: skip
    return 2


TIMED_MODES = ("bare", "noop", "sdk", "full", "openai-v2")  # full-nowrite patches Store.write
CHUNKS = ("stream_short", "stream_long")
"""`--time chunks`: both stream lengths in every visit; the cost per chunk is the slope."""
Samples = dict[str, dict[str, list[float]]]
"""Per mode: per KIND timed, CPU µs per call of each visit; "export", CPU µs per call of each
flush."""


def timed_one(kind: str, rounds: int, calls: int = 10, flush_every: int = 10) -> Samples:
    """One process: every round visits every mode (order rotated), switches it on, makes 2
    warm-up calls, then times `calls` calls (CPU time, every thread); `chunks` does that for
    a short and a long stream in each visit. Visits are short (~0.1 s for a short stream) so
    that every mode is measured through the same stretches of a noisy machine. A mode's spans
    are exported every `flush_every` visits (~100 calls, as a busy app's BatchSpanProcessor
    would batch them), timed apart and divided by the calls exported."""
    kinds = CHUNKS if kind == "chunks" else (kind,)
    sync, async_ = make_clients()
    samples: Samples = {m: {"export": [], **{k: [] for k in kinds}} for m in TIMED_MODES}
    with tempfile.TemporaryDirectory() as tmp:
        modes = [Mode(m, Path(tmp) / "parts.db") for m in TIMED_MODES]
        for mode in modes:  # the database made and every mode's code loaded, untimed
            with mode:
                block(kind, sync, async_, 3)
                if mode.flushed is not None:
                    mode.flushed.force_flush()
        for r in range(rounds):
            flush = (r + 1) % flush_every == 0 or r == rounds - 1
            for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
                with mode:
                    for each in kinds:
                        block(each, sync, async_, 2)
                        gc.collect()
                        cpu = time.process_time_ns()
                        block(each, sync, async_, calls)
                        run = time.process_time_ns() - cpu
                        samples[mode.name][each].append(run / calls / 1e3)
                    if flush and mode.flushed is not None:
                        exported = (r % flush_every + 1) * (calls + 2) * len(kinds)
                        cpu = time.process_time_ns()
                        mode.flushed.force_flush()
                        took = time.process_time_ns() - cpu
                        samples[mode.name]["export"].append(took / exported / 1e3)
        for mode in modes:
            if mode.flushed is not None:
                mode.flushed.shutdown()
    return samples


def _quantile(values: list[float], q: float) -> float:
    """The lower quartile (q = 0.25: a neighbour's load only adds time) or the median."""
    if q == 0.5 or len(values) < 2:
        return statistics.median(values)
    return statistics.quantiles(values, n=4, method="inclusive")[0]


def report_time(samples: Samples, kind: str) -> dict[str, float]:
    """Print one process's parts over the bare SDK; return its ratios by estimator."""
    if kind == "chunks":
        return report_chunks(samples)
    ratios = {}
    bare_calls = samples["bare"][kind]
    for name, q in (("lower quartile", 0.25), ("median", 0.5)):
        bare = _quantile(bare_calls, q)
        print(f"  {name} of {len(bare_calls)} visits, CPU µs per call over the bare SDK "
              f"({bare:.0f} µs); export, median of each flush's µs per call:")  # fmt: skip
        total = {}
        for mode in TIMED_MODES[1:]:
            found = samples[mode]
            export = statistics.median(found["export"]) if found["export"] else 0.0
            total[mode] = _quantile(found[kind], q) - bare + export
            print(f"    {mode:10s} +{total[mode]:7.1f}  (export {export:5.1f})")
        ratios[name] = total["full"] / total["openai-v2"]
        print(f"    ratio otelstats (full) / openai-v2: {ratios[name]:.3f}")
    return ratios


def report_chunks(samples: Samples) -> dict[str, float]:
    """Print one process's cost per streamed chunk over the bare SDK's: the slope between the
    short and the long stream of the same visits (the export is per call: not in the slope)."""
    ratios = {}
    for name, q in (("lower quartile", 0.25), ("median", 0.5)):

        def slope(mode: str, q: float = q) -> float:
            short, long = (_quantile(samples[mode][k], q) for k in CHUNKS)
            return (long - short) / (LONG - SHORT)

        bare = slope("bare")
        print(f"  {name} of {len(samples['bare'][CHUNKS[0]])} visits, CPU µs per chunk over "
              f"the bare SDK's ({bare:.2f} µs, {SHORT} and {LONG} chunks):")  # fmt: skip
        added = {mode: slope(mode) - bare for mode in TIMED_MODES[1:]}
        for mode in TIMED_MODES[1:]:
            print(f"    {mode:10s} {added[mode]:+8.2f}")
        ratios[name] = added["full"] / added["openai-v2"]
        print(f"    ratio otelstats (full) / openai-v2 per chunk: {ratios[name]:.3f}")
    return ratios


def timed(kind: str, rounds: int, processes: int) -> None:
    """`processes` fresh interpreters in turn (hash seeds 1..N: set and dict layouts differ
    between processes and move a ratio by a few hundredths), each timing every mode with
    `timed_one`; each process's parts and ratios, then the medians of its ratios."""
    found: dict[str, list[float]] = {}
    for seed in range(1, processes + 1):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        command = [sys.executable, "-m", "benchmarks.bench_overhead_parts", "--time-one", kind,
                   str(rounds)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        print(f"{kind}, process {seed} of {processes}:")
        for name, ratio in report_time(json.loads(done.stdout), kind).items():
            found.setdefault(name, []).append(ratio)
    for name, ratios in found.items():
        each = ", ".join(f"{r:.3f}" for r in ratios)
        print(f"ratio by {name}, median of {processes} processes: "
              f"{statistics.median(ratios):.3f} ({each})")  # fmt: skip


WARM_UP = 100
"""Calls every run of a mode makes before the ones it is asked for (`run_blocks`)."""


def run_blocks(kind: str, calls: int, provider: Any, sync: Any, async_: Any) -> dict[str, float]:
    """The loop of one run of a mode: WARM_UP calls, then `calls` in blocks of 100 (async: one
    event loop each), each block's spans exported at its end on this thread when `provider` is
    set. Returns CPU µs per call of the calls and of the exports after the warm-up, timed apart.

    Warm-up calls are short streams for either stream kind: the two kinds' runs then differ by
    exactly calls * 200 chunks."""
    block("stream_short" if kind.startswith("stream") else kind, sync, async_, WARM_UP)
    if provider is not None:
        provider.force_flush()
    spent = {"calls": 0, "export": 0}
    for start in range(0, calls, 100):
        cpu = time.process_time_ns()
        block(kind, sync, async_, min(100, calls - start))
        flushed = time.process_time_ns()
        if provider is not None:
            provider.force_flush()
        spent["calls"] += flushed - cpu
        spent["export"] += time.process_time_ns() - flushed
    return {part: ns / max(calls, 1) / 1e3 for part, ns in spent.items()}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--time-one"]:  # one process of `--time`, its samples as JSON
        print(json.dumps(timed_one(argv[1], int(argv[2]))))
        return 0
    if argv[:1] == ["--time"]:
        kind = argv[1] if len(argv) > 1 else "non_stream"
        rounds = int(argv[2]) if len(argv) > 2 else 60
        processes = int(argv[3]) if len(argv) > 3 else 3
        if kind not in (*KINDS, "chunks") or rounds < 1 or processes < 1:
            return _usage()
        timed(kind, rounds, processes)
        return 0
    if argv[:1] == ["--callgrind"]:
        kind = argv[1] if len(argv) > 1 else "non_stream"
        calls = int(argv[2]) if len(argv) > 2 else 1000
        layouts = int(argv[3]) if len(argv) > 3 else 3
        return count(kind, calls, layouts) if kind in KINDS and layouts > 0 else _usage()
    args = [a for a in argv if a != "--quick"]
    if "--quick" in argv:  # CI smoke run: the whole pipeline, a few calls
        args = ["full", "5", "stream_long"]  # both stream lengths (warm-up: short ones)
    mode, calls = (args[0] if args else "full"), int(args[1]) if len(args) > 1 else 200
    kind = args[2] if len(args) > 2 else "non_stream"
    if mode not in MODES or kind not in KINDS:
        return _usage()
    sync, async_ = make_clients()
    cpu = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        provider = setup(mode, Path(tmp) / "parts.db")
        run_blocks(kind, calls, provider, sync, async_)
        if provider is not None:
            provider.shutdown()
    cpu = (time.process_time() - cpu) / (WARM_UP + calls) * 1e6
    print(
        f"{mode}: {WARM_UP + calls} calls, {cpu:.0f} µs CPU per call incl. warm-up (time is noisy:"
    )
    print("count instructions with callgrind at two call counts, as the docstring shows)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
