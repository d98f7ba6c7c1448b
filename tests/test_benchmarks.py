"""Every benchmark runs in its quick mode, so none of them rots. Times are not asserted here:
speed targets live in benchmarks/README.md, measured by the full runs."""

from __future__ import annotations

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
