"""CPU otelstats adds per message of the Responses API's WebSocket mode: the SDK's connection
(`client.responses.connect()`, read with `recv` and with `recv_bytes`), a library's own
`websockets` socket on `/v1/responses` (as the OpenAI Agents SDK's WebSocket transport opens),
and a `websockets` socket to another path (never read, one lookup per message).

A WebSocket server in another process answers each `response.create` with `response.created`,
EVENTS `response.output_text.delta` events and `response.completed`, so the client's CPU
(`time.process_time()`, every thread of this process) is the reading alone. Each round reads
ANSWERS answers bare and instrumented (one `instrument()` each; the order alternates), per way
of reading; the medians and lower quartiles over the rounds are printed. No peer instruments
this mode.

    .venv/bin/python -m benchmarks.bench_websocket            # 2 000 events, 9 rounds
    .venv/bin/python -m benchmarks.bench_websocket --quick    # CI smoke run
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

QUICK = "--quick" in sys.argv
EVENTS = 50 if QUICK else 2_000
ROUNDS = 1 if QUICK else 9
ANSWERS = 5
USAGE = {"input_tokens": 5, "output_tokens": EVENTS, "total_tokens": 5 + EVENTS}


def _response(status: str) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "created_at": 1, "status": status,
            "model": "m", "output": [], "usage": USAGE if status == "completed" else None,
            "error": None, "incomplete_details": None, "instructions": None,
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}  # fmt: skip


def _answer() -> list[str]:
    delta = {"type": "response.output_text.delta", "item_id": "i", "output_index": 0,
             "content_index": 0, "delta": " w", "logprobs": []}  # fmt: skip
    created = {"type": "response.created", "response": _response("in_progress")}
    completed = {"type": "response.completed", "response": _response("completed")}
    deltas = (json.dumps({**delta, "sequence_number": i + 1}) for i in range(EVENTS))
    return [json.dumps(created), *deltas, json.dumps(completed)]


def serve() -> None:
    """The server process: prints its port, answers until stdin closes."""
    from websockets.sync.server import serve as ws_serve

    frames = _answer()

    def handle(ws: Any) -> None:
        for message in ws:
            if json.loads(message).get("type") == "response.create":
                for frame in frames:
                    ws.send(frame)

    with ws_serve(handle, "127.0.0.1", 0) as server:
        print(server.socket.getsockname()[1], flush=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        sys.stdin.read()


CREATE = json.dumps({"type": "response.create", "model": "m", "input": "hi"})


def _sdk(port: int, raw: bool) -> float:
    import openai

    with (
        openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="bench") as client,
        client.responses.connect() as connection,
    ):

        def answers(count: int) -> None:
            for _ in range(count):
                connection.send_raw(CREATE)
                if raw:
                    while b'"response.completed"' not in connection.recv_bytes():
                        pass
                else:
                    for event in connection:
                        if event.type == "response.completed":
                            break

        answers(1)  # the connection's first answer (the SDK builds its event parsers) untimed
        cpu = time.process_time()
        answers(ANSWERS)
        return time.process_time() - cpu


def _own_socket(port: int, path: str) -> float:
    from websockets.asyncio.client import connect

    async def read() -> float:
        async with connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:

            async def answers(count: int) -> None:
                for _ in range(count):
                    await ws.send(CREATE)
                    while '"response.completed"' not in await ws.recv():
                        pass

            await answers(1)
            cpu = time.process_time()
            await answers(ANSWERS)
            return time.process_time() - cpu

    return asyncio.run(read())


WAYS: dict[str, Callable[[int], float]] = {
    "SDK recv (parsed events)": lambda port: _sdk(port, raw=False),
    "SDK recv_bytes (raw)": lambda port: _sdk(port, raw=True),
    "own websockets socket, /v1/responses": lambda port: _own_socket(port, "/v1/responses"),
    "own websockets socket, another path": lambda port: _own_socket(port, "/v1/other"),
}


def _timed(read: Callable[[int], float], port: int, instrumented: bool) -> float:
    """One reading, bare or under a fresh `instrument()` (order alternates between rounds)."""
    if not instrumented:
        return read(port)
    from opentelemetry.sdk.trace import TracerProvider

    from otelstats.instrumentation import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=TracerProvider())
    try:
        return read(port)
    finally:
        instrumentor.uninstrument()


def main() -> int:
    if "--serve" in sys.argv:
        serve()
        return 0
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_websocket", "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        per_message = 1e6 / (ANSWERS * (EVENTS + 2))
        samples: dict[str, dict[str, list[float]]] = {
            w: {"bare": [], "otelstats": []} for w in WAYS
        }
        for way, read in WAYS.items():
            read(port)  # warm-up
            for round_ in range(ROUNDS):
                for instrumented in (False, True) if round_ % 2 == 0 else (True, False):
                    samples[way]["otelstats" if instrumented else "bare"].append(
                        _timed(read, port, instrumented) * per_message
                    )
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(10)
    print(f"CPU µs per message, {EVENTS} output events an answer, {ROUNDS} rounds:")
    for way, by in samples.items():
        bare, ours = by["bare"], by["otelstats"]
        q = max(len(bare) // 4, 0)
        added = statistics.median(ours) - statistics.median(bare)
        low = sorted(ours)[q] - sorted(bare)[q]
        print(
            f"  {way:38s} bare {statistics.median(bare):7.2f}  otelstats "
            f"{statistics.median(ours):7.2f}  added {added:+6.2f} (lower quartile {low:+6.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
