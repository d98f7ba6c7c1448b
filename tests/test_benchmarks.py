"""Every benchmark runs in its quick mode, so none of them rots. Times are not asserted here:
speed targets live in benchmarks/README.md, measured by the full runs."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py"))


def test_every_benchmark_is_listed_in_the_benchmarks_readme() -> None:
    readme = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    assert BENCHMARKS
    missing = [name for name in BENCHMARKS if f"benchmarks.{name}" not in readme]
    assert not missing, f"not in benchmarks/README.md: {missing}"


def run_benchmark(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m benchmarks.NAME ARGS...` from the repository root; it must exit 0."""
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_quick_mode_runs(name: str) -> None:
    result = run_benchmark(name, "--quick")
    assert result.stdout.strip(), "a benchmark that prints nothing measured nothing"


def test_overhead_parts_times_every_part() -> None:
    """`bench_overhead_parts --time`: every mode timed over the bare SDK, interleaved in one
    process, its export timed apart, and the ratios printed (one round in one process, so the
    figures themselves mean nothing here)."""
    result = run_benchmark("bench_overhead_parts", "--time", "stream_short", "1", "1")
    lines = [line.split() for line in result.stdout.splitlines()]
    for mode in ("noop", "sdk", "full", "openai-v2"):
        assert sum(line[:1] == [mode] for line in lines) == 2, result.stdout  # both estimators
    exports = [float(line[-1].rstrip(")")) for line in lines if line[:1] == ["full"]]
    assert all(export > 0 for export in exports), result.stdout  # the flush was timed
    assert "ratio by median, median of 1 processes:" in result.stdout


def test_overhead_parts_times_the_cost_per_chunk() -> None:
    """`bench_overhead_parts --time chunks`: short and long streams in the same visits, and
    what each mode adds per chunk printed by both estimators (one round: figures mean nothing)."""
    result = run_benchmark("bench_overhead_parts", "--time", "chunks", "1", "1")
    lines = [line.split() for line in result.stdout.splitlines()]
    for mode in ("noop", "sdk", "full", "openai-v2"):
        found = [line for line in lines if line[:1] == [mode]]
        assert len(found) == 2, result.stdout  # both estimators
        assert all(len(line) == 2 and math.isfinite(float(line[1])) for line in found)
    assert "CPU µs per chunk over the bare SDK's" in result.stdout
    assert "ratio by lower quartile, median of 1 processes:" in result.stdout


def test_profile_charges_a_sample_to_the_owner_of_its_innermost_frame() -> None:
    """`bench_profile`: frames as py-spy writes them (`function (path:line)`, full paths of the
    installed packages); standard-library frames own nothing and pass a sample to their caller."""
    import copy

    import openai.resources.chat.completions as completions
    import opentelemetry.instrumentation.openai_v2 as v2
    import opentelemetry.sdk._shared_internal as batching
    import opentelemetry.sdk.trace as sdk_trace

    import otelstats._instr_calls as ours
    from benchmarks.bench_profile import charge

    def frame(function: str, module: object) -> str:
        return f"{function} ({module.__file__}:10)"  # type: ignore[attr-defined]

    loop = f"block ({ROOT / 'benchmarks' / 'bench_overhead.py'}:121)"
    main = "<module> (/usr/lib/python3.11/runpy.py:88)"
    wrapper = frame("wrapper", ours)
    stdlib = frame("deepcopy", copy)
    assert charge([main, loop, wrapper]) == "otelstats"
    assert charge([main, loop, wrapper, stdlib]) == "otelstats"
    assert charge([main, loop, wrapper, frame("Tracer.start_span", sdk_trace)]) == "OTel SDK/API"
    assert charge([main, loop, wrapper, frame("Completions.create", completions)]) == "openai SDK"
    assert charge([main, loop, frame("traced_method", v2)]) == "openai-v2"
    assert charge([main, loop, stdlib]) == "other"
    # Outside the benchmark's calls: start-up, not a call's cost.
    assert charge([main, wrapper]) is None
    # An export, on the worker thread or in a flush, whatever it calls; not the database opened.
    export = frame("BatchProcessor._export", batching)
    assert charge(["worker (/usr/lib/python3.11/threading.py:975)", export, wrapper]) == "export"
    assert charge([main, export, "StatsSpanExporter._open (/x/otelstats/exporter.py:248)"]) is None


def test_profile_takes_totals_from_the_clock_and_shares_from_the_samples() -> None:
    """`bench_profile`: the export is what the run timed; the calls' time is split by samples
    (samples outside the calls and the export are not counted)."""
    import otelstats._instr_calls as ours
    import otelstats.exporter as exporter
    from benchmarks.bench_profile import owner_times

    loop = f"block ({ROOT / 'benchmarks' / 'bench_overhead.py'}:121)"
    wrapper = f"wrapper ({ours.__file__}:250)"
    raw = [
        f"<module> (/x/runpy.py:1);{loop};{wrapper} 30",
        f"<module> (/x/runpy.py:1);{loop} 90",
        f"<module> (/x/runpy.py:1);{wrapper} 500",  # start-up: not counted
        f"worker (/x/threading.py:1);BatchProcessor._export (/x/a.py:1);"
        f"StatsSpanExporter.export ({exporter.__file__}:1) 400",
    ]
    found = owner_times(raw, {"calls": 600.0, "export": 20.0})
    assert found == {"otelstats": 150.0, "other": 450.0, "export": 20.0}


def test_span_benchmark_times_the_spans_the_instrumentations_really_make() -> None:
    """`bench_span`: the attributes are those of a real instrumented call (a stream here:
    the request's stream flag, its time to first chunk, the finish reasons as a list, as the
    instrumentation passes them), and every kind is timed bare, with otelstats' attributes and
    with openai-v2's (quick run: the figures mean nothing)."""
    from benchmarks.bench_span import capture

    ours = capture("otelstats", "stream_short")
    assert ours is not None
    assert ours.name == "chat m"
    assert ours.attributes["gen_ai.request.stream"] is True
    assert ours.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert ours.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert ours.attributes["gen_ai.usage.output_tokens"] == 10

    result = run_benchmark("bench_span", "--quick")
    lines = [line.split() for line in result.stdout.splitlines()]
    for label in ("no", "otelstats", "openai-v2"):
        found = [line for line in lines if line[:1] == [label]]
        assert len(found) == 2, result.stdout  # one per kind of call
    call = capture("otelstats", "non_stream")
    assert call is not None
    counts = [int(line[1]) for line in lines if line[:1] == ["otelstats"]]
    assert counts == [len(call.attributes), len(ours.attributes)]
    for pipeline in ("batch", "otelstats"):  # the callgrind runs' program
        result = run_benchmark("bench_span", "--pipeline", pipeline, "20")
        assert result.stdout.startswith(f"20 spans through {pipeline}:")
