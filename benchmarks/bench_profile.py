"""Where the time of an instrumented call goes, by a sampling profiler (py-spy), for otelstats
and for openai-v2: the loop of `bench_overhead_parts` (the same fake server and clients), 100
warm-up calls, then N calls in blocks of 100, each block's spans exported at its end.

    .venv/bin/python -m benchmarks.bench_profile non_stream 20000
    .venv/bin/python -m benchmarks.bench_profile stream_short 5000
    .venv/bin/python -m benchmarks.bench_profile --quick          # CI smoke run (no assertions)

Each sample is charged to the code that owns its innermost frame, walking out through frames
that own nothing (the standard library, the benchmark's loop): the openai SDK and what it calls
(httpx, pydantic), otelstats, openai-v2 (and the `opentelemetry.util.genai` it uses), the
OpenTelemetry SDK and API (spans, context, metrics), wrapt; any sample inside a batch export is
the export's. The figures are CPU µs per call in a hot loop (steady state), unlike
`bench_overhead_parts --time`, whose short visits see cold caches.

The clock gives the totals, the samples only the shares. The process times its calls and its
exports apart (CPU time; the exports run on its own thread, in `force_flush`); the export is that
time, and the calls' time is shared out among the owners in proportion to their samples. py-spy
runs `--nonblocking`, and on this project's machine neither of its modes gives sound totals:
- paused for each sample (its default), the process lands the samples on its next system call
  rather than where the time goes: a loop of pure Python with one `os.getpid()` per 5 µs had
  568 of 572 samples on the `getpid` line (5 of 563 with `--nonblocking`);
- not paused, a third of the samples fail to read (py-spy counts them as errors), nearly all of
  them in the calls, whose Python stacks change fastest: counted as sampled, the export came out
  at half of otelstats' overhead instead of the quarter the clock measures.
Within the calls the shares still assume the failed samples are spread evenly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.bench_overhead import make_clients
from benchmarks.bench_overhead_parts import WARM_UP, run_blocks, setup

QUICK = "--quick" in sys.argv
RATE = 1000
"""Samples per second."""
EXPORT = "BatchProcessor._export ("
"""The SDK's batch processor exporting a batch, on its worker thread or in a flush."""
OPEN = "StatsSpanExporter._open ("
"""The exporter opening (and migrating) its database at its first export: start-up, not a
call's cost (`bench_startup` measures start-up)."""


def package_dirs(*names: str) -> tuple[str, ...]:
    """Where the packages `names` live (every portion of a namespace package), each with a
    trailing separator; found without importing them."""
    found: list[str] = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            found.extend(os.path.join(location, "") for location in spec.submodule_search_locations)
    return tuple(found)


OTELSTATS = package_dirs("otelstats")
OTEL = package_dirs("opentelemetry")
OWNERS: tuple[tuple[str, tuple[str, ...]], ...] = (  # (owner, path prefixes), first match wins
    ("otelstats", OTELSTATS),
    ("openai-v2", tuple(d + sub for d in OTEL for sub in ("instrumentation/", "util/genai/"))),
    ("OTel SDK/API", OTEL),
    ("wrapt", package_dirs("wrapt")),
    ("openai SDK", package_dirs("openai", "httpx", "httpx2", "pydantic", "pydantic_core",
                                "anyio", "h11", "sniffio", "jiter")),
)  # fmt: skip
OWNER_NAMES = ("export", *(name for name, _ in OWNERS), "other")


def frame_path(frame: str) -> str:
    """The file of one frame as py-spy writes it: `function (path:line)`."""
    inside = frame[frame.rfind("(") + 1 :]
    return inside.rpartition(":")[0] or inside


def owner_of(frame: str) -> str | None:
    """The owner of one frame; None for a frame that owns nothing (the standard library, the
    benchmark)."""
    path = frame_path(frame)
    for name, prefixes in OWNERS:
        if path.startswith(prefixes):
            return name
    return None


def charge(stack: list[str]) -> str | None:
    """The owner a sample is charged to: "export" for anything inside an export; otherwise,
    inside the benchmark's calls, the owner of the innermost frame that has one; None for a
    sample of neither (start-up, imports, the setup, the database opened)."""
    if any(frame.startswith(OPEN) for frame in stack):
        return None
    if any(frame.startswith(EXPORT) for frame in stack):
        return "export"
    if not any(f.startswith("block (") and frame_path(f).endswith("bench_overhead.py")
               for f in stack):  # fmt: skip
        return None
    for frame in reversed(stack):
        found = owner_of(frame)
        if found is not None:
            return found
    return "other"


def py_spy() -> str:
    """py-spy beside this interpreter (a virtualenv's bin), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"


def child(mode: str, calls: int, kind: str) -> dict[str, float]:
    """The profiled process: one run of `mode` as `bench_overhead_parts` makes it; CPU µs per
    call of the calls and of the exports, timed apart."""
    sync, async_ = make_clients()
    with tempfile.TemporaryDirectory() as tmp:
        provider = setup(mode, Path(tmp) / "profile.db")
        spent = run_blocks(kind, calls, provider, sync, async_)
        provider.shutdown()
    return spent


def profile(mode: str, kind: str, calls: int, out: Path) -> dict[str, float]:
    """CPU µs per call of each owner in one run of `mode`, profiled by py-spy (`owner_times`)."""
    command = [py_spy(), "record", "--nonblocking", "--rate", str(RATE), "--format", "raw",
               "--full-filenames", "--output", str(out), "--", sys.executable, "-m",
               "benchmarks.bench_profile", "--child", mode, str(calls), kind,
               str(out.with_suffix(".json"))]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True)
    return owner_times(
        out.read_text().splitlines(), json.loads(out.with_suffix(".json").read_text())
    )


def owner_times(raw: list[str], timed: dict[str, float]) -> dict[str, float]:
    """CPU µs per call of each owner, from py-spy's raw lines (`frame;frame;… count`) and the
    run's own clock (`timed`: "calls" and "export", µs per call): the export as timed, the calls'
    time shared out in proportion to their samples."""
    samples: Counter[str] = Counter()
    for line in raw:
        stack_text, _, count = line.rpartition(" ")
        owner = charge(stack_text.split(";"))
        if owner is not None:
            samples[owner] += int(count)
    in_calls = sum(n for owner, n in samples.items() if owner != "export")
    found = {owner: n / in_calls * timed["calls"] for owner, n in samples.items()}
    found["export"] = timed["export"]
    return found


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        mode, calls, kind, result = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
        Path(result).write_text(json.dumps(child(mode, calls, kind)))
        return 0
    args = [a for a in sys.argv[1:] if a != "--quick"]
    kind = args[0] if args else "non_stream"
    calls = int(args[1]) if len(args) > 1 else (200 if QUICK else 20_000)
    if not os.access(py_spy(), os.X_OK):
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    modes = ("full", "openai-v2")
    with tempfile.TemporaryDirectory() as tmp:
        found = {mode: profile(mode, kind, calls, Path(tmp) / f"{mode}.txt") for mode in modes}
    print(f"{kind}, {calls} calls per mode after {WARM_UP} warm-up calls, sampled at {RATE} Hz; "
          "CPU µs per call by owner (steady state: a hot loop)")  # fmt: skip
    print(f"  {'owner':14}" + "".join(f"{mode:>12}" for mode in modes))
    for name in OWNER_NAMES:
        cells = "".join(f"{found[mode].get(name, 0.0):12.1f}" for mode in modes)
        print(f"  {name:14}{cells}")
    added = {  # what each instrumentation adds: everything but the openai SDK and the rest
        mode: sum(found[mode].get(n, 0.0) for n in OWNER_NAMES if n not in ("openai SDK", "other"))
        for mode in modes
    }
    ratio = added["full"] / added["openai-v2"]
    export = {mode: found[mode]["export"] for mode in modes}
    without = (added["full"] - export["full"]) / (added["openai-v2"] - export["openai-v2"])
    print(f"  added, otelstats {added['full']:.1f} µs against openai-v2 "
          f"{added['openai-v2']:.1f} µs per call: ratio {ratio:.3f}; "
          f"without the export {without:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
