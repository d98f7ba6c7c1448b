"""Process start-up cost of `import otelstats; otelstats.instrument()` against the official
`opentelemetry-instrumentation-openai-v2` set up by hand, and against a bare `import openai`
(issue 8, target 2). Whole processes, interleaved, medians of wall time and of CPU (user+sys).

    .venv/bin/python benchmarks/bench_startup.py            # full
    .venv/bin/python benchmarks/bench_startup.py --quick    # CI smoke run (no assertions)

Each child gets a fresh temporary data directory and database, so nothing from a previous run
(the conversation salt, a database) is reused. `python -X importtime -c ...` shows where time goes.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

QUICK = os.environ.get("OTELSTATS_BENCH_QUICK") == "1" or "--quick" in sys.argv
RUNS = 2 if QUICK else 11

SETUPS = {
    "bare openai": "import openai",
    # The app imports openai itself; otelstats wraps SDK modules only as the app imports them.
    "otelstats": "import openai\nimport otelstats\notelstats.instrument()",
    # What an openai-v2 user writes: an SDK TracerProvider with a batch processor, instrument().
    "openai-v2": (
        "import openai\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter\n"
        "from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor\n"
        "provider = TracerProvider()\n"
        "provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))\n"
        "trace.set_tracer_provider(provider)\n"
        "OpenAIInstrumentor().instrument()\n"
    ),
}


def run_once(code: str, tmp: str) -> tuple[float, float]:
    """(wall s, child CPU s) of one interpreter running `code`."""
    env = {
        **os.environ,
        "XDG_DATA_HOME": tmp,
        "OTELSTATS_DB": os.path.join(tmp, f"stats-{time.monotonic_ns()}.db"),
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in SETUPS}
    with tempfile.TemporaryDirectory() as tmp:
        for code in SETUPS.values():  # warm the OS file cache; not measured
            run_once(code, tmp)
        names = list(SETUPS)
        for r in range(RUNS):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                samples[name].append(run_once(SETUPS[name], tmp))
    print(f"runs={RUNS} quick={QUICK}; medians in ms, 'added' is over bare `import openai`")
    print(f"{'':12}{'wall':>8}{'added':>8}{'cpu':>8}{'added':>8}")
    bare = [statistics.median(s[i] for s in samples["bare openai"]) for i in (0, 1)]
    added: dict[str, list[float]] = {}
    for name, rows in samples.items():
        wall, cpu = (statistics.median(s[i] for s in rows) for i in (0, 1))
        added[name] = [wall - bare[0], cpu - bare[1]]
        print(f"{name:12}{wall * 1e3:8.0f}{added[name][0] * 1e3:8.0f}"
              f"{cpu * 1e3:8.0f}{added[name][1] * 1e3:8.0f}")  # fmt: skip
    v2 = added["openai-v2"]
    ours = added["otelstats"]
    print("ratio otelstats/openai-v2 added start-up (target <= 1.0): "
          f"wall={ours[0] / v2[0]:.2f} cpu={ours[1] / v2[1]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
