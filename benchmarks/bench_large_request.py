"""What a large request costs the caller: a chat call whose opening carries a picture as a data
URL (5 MB of base64 by default), resent on every turn. otelstats reads the opening for the
conversation fingerprint, so its cost could grow with the request where openai-v2's does not;
the SDK itself serializes and sends the whole body. Two cases: the same message objects every
turn (a chat client's history) and fresh ones every turn (a server that decodes each request).

Bare SDK, otelstats (the full pipeline into SQLite) and openai-v2 are interleaved in every round
(order rotated), in-process transport (bench_overhead's), CPU time of every thread; medians of
the rounds, each mode's spans exported every round and the export timed with it. The run
re-executes itself with glibc's allocator thresholds fixed (`ALLOCATOR`).

    .venv/bin/python -m benchmarks.bench_large_request [MB] [ROUNDS]   # default 5 MB, 15 rounds
    .venv/bin/python -m benchmarks.bench_large_request --quick         # CI smoke run
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_overhead import make_clients
from benchmarks.bench_overhead_parts import Mode

MODES = ("bare", "full", "openai-v2")
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
"""With glibc's defaults every buffer of megabytes is a fresh mmap whose page faults cost a third
of the call, and its dynamic threshold moves with whatever ran before (a digest of the picture
made the SDK's next buffers cheaper, and a call faster than the bare SDK's). Fixed, every buffer
stays on the heap in every mode."""
CALLS = 4
"""Calls per mode and round: the turns of one conversation, the picture in every one."""


def turns(picture_mb: float, fresh: bool) -> list[list[dict[str, Any]]]:
    """CALLS successive turns of one conversation that opens with a picture; `fresh`: each turn
    carries the picture as a string object of its own, as if decoded from a request."""
    size = int(picture_mb * 2**20)
    url = "data:image/png;base64," + ("iVBORw0KGgoAAAANSUhEUg" * (size // 22 + 1))[:size]
    out = []
    for turn in range(CALLS):
        if fresh:
            url = url[:-1] + url[-1]  # equal, another object
        out.append(_turn(url, turn))
    return out


def _turn(url: str, turn: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You describe pictures."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        },
    ]
    for n in range(turn):
        messages += [
            {"role": "assistant", "content": f"Answer {n}."},
            {"role": "user", "content": "And then?"},
        ]
    return messages


def run(picture_mb: float, rounds: int, fresh: bool) -> dict[str, list[float]]:
    """CPU ms per call of each mode, one figure per round (its export included)."""
    sync, _ = make_clients()
    conversation = turns(picture_mb, fresh)
    spent: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        modes = [Mode(m, Path(tmp) / "large.db") for m in MODES]
        for r in range(-1, rounds):  # round -1 warms every mode up, untimed
            for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
                if fresh:
                    conversation = turns(picture_mb, fresh)
                with mode:
                    gc.collect()
                    cpu = time.process_time_ns()
                    for messages in conversation:  # the method as the mode has wrapped it
                        sync.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
                    if mode.flushed is not None:
                        mode.flushed.force_flush()
                    took = time.process_time_ns() - cpu
                if r >= 0:
                    spent[mode.name].append(took / CALLS / 1e6)
        for mode in modes:
            if mode.flushed is not None:
                mode.flushed.shutdown()
    return spent


def main(argv: list[str]) -> int:
    if any(os.environ.get(name) != value for name, value in ALLOCATOR.items()):
        command = [sys.executable, "-m", "benchmarks.bench_large_request", *argv]
        os.execve(sys.executable, command, {**os.environ, **ALLOCATOR})
    args = [a for a in argv if a != "--quick"]
    quick = "--quick" in argv
    picture_mb = 0.1 if quick else float(args[0]) if args else 5.0
    rounds = 1 if quick else int(args[1]) if len(args) > 1 else 15
    print(f"a chat call with a {picture_mb:g} MB picture in its opening, {CALLS} turns, "
          f"CPU ms per call, medians of {rounds} rounds (export included):")  # fmt: skip
    for fresh, case in ((False, "the same objects every turn"), (True, "fresh objects")):
        spent = run(picture_mb, rounds, fresh)
        bare = statistics.median(spent["bare"])
        print(f"  {case}: bare SDK {bare:.2f}")
        for mode, label in (("full", "otelstats"), ("openai-v2", "openai-v2")):
            median = statistics.median(spent[mode])
            added = median - bare
            print(f"    {label:10s} {median:8.2f}  {added:+7.2f} ms ({added / bare:+.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
