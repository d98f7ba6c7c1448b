"""`otelstats demo`: history, live instrumented traffic and the dashboard, with no LLM server.

History is synthetic but deterministic: each day's calls come from a seed and that day's date, and
their span ids are derived from the same, so a second run writes nothing twice. Live traffic is
real: the openai SDK, instrumented by `otelstats.instrument()`, talks to FakeOpenAIServer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from .config import Settings
from .fake_server import FakeOpenAIServer, Reply
from .records import CallRecord
from .store import Store

log = logging.getLogger(__name__)

HISTORY_DAYS = 60
SEED = 20240501


@dataclass(frozen=True)
class DemoModel:
    name: str
    weight: float
    tokens_per_second: float
    first_token_s: float


DEMO_MODELS = (
    DemoModel("gpt-4o-mini", 0.40, 95.0, 0.35),
    DemoModel("llama-3.1-8b-instruct", 0.25, 140.0, 0.12),
    DemoModel("qwen2.5-14b-instruct", 0.20, 60.0, 0.25),
    DemoModel("mistral-small-24b", 0.15, 45.0, 0.45),
)
ERROR_TYPES = ("RateLimitError", "InternalServerError", "APITimeoutError", "APIConnectionError")


def _ids(seed: int, day: date, index: int) -> tuple[str, str]:
    digest = hashlib.sha256(f"otelstats-demo:{seed}:{day.isoformat()}:{index}".encode()).hexdigest()
    return digest[:32], digest[32:48]


def _day_calls(day: date, seed: int) -> Iterator[CallRecord]:
    """One day of plausible usage: busier on weekdays and growing over time."""
    rng = random.Random(f"{seed}:{day.isoformat()}")
    weekday = day.weekday() < 5
    growth = 1.0 + (day.toordinal() % 90) / 90
    count = int(rng.randint(25, 45) * (1.0 if weekday else 0.35) * growth)
    midnight = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    starts = sorted(rng.uniform(6 * 3600, 23 * 3600) for _ in range(count))
    conversation, turns_left = "", 0
    for index, offset in enumerate(starts):
        if turns_left == 0:
            conversation, turns_left = f"demo-{day.isoformat()}-{index}", rng.randint(1, 6)
        turns_left -= 1
        model = rng.choices(DEMO_MODELS, weights=[m.weight for m in DEMO_MODELS])[0]
        streaming = rng.random() < 0.6
        roll = rng.random()
        outcome = "error" if roll < 0.04 else "cancelled" if roll < 0.05 else "ok"
        prompt = rng.randint(40, 1800)
        completion = rng.randint(20, 700) if outcome == "ok" else 0
        first = model.first_token_s * rng.uniform(0.6, 1.8)
        speed = model.tokens_per_second * rng.uniform(0.7, 1.2)
        duration = first + completion / speed if outcome == "ok" else rng.uniform(0.1, 3.0)
        start_ns = int((midnight.timestamp() + offset) * 1e9)
        trace_id, span_id = _ids(seed, day, index)
        yield CallRecord(
            trace_id=trace_id,
            span_id=span_id,
            start_ns=start_ns,
            end_ns=start_ns + int(duration * 1e9),
            operation="chat",
            provider="openai",
            request_model=model.name,
            response_model=model.name,
            server_address="127.0.0.1",
            server_port=None,
            input_tokens=prompt,
            output_tokens=completion if outcome == "ok" else None,
            tokens_source="reported",
            cached_input_tokens=None,
            reasoning_tokens=None,
            streaming=streaming,
            time_to_first_chunk_s=first if streaming and outcome == "ok" else None,
            finish_reasons=("stop",) if outcome == "ok" else (),
            outcome=outcome,  # type: ignore[arg-type]
            error_type=rng.choice(ERROR_TYPES) if outcome == "error" else None,
            conversation_id=conversation,
            service_name="otelstats-demo",
        )


def history(*, today: date, days: int = HISTORY_DAYS, seed: int = SEED) -> list[CallRecord]:
    """The synthetic calls of the `days` UTC days before `today` (today itself is live traffic)."""
    return [
        record
        for back in range(days, 0, -1)
        for record in _day_calls(today - timedelta(days=back), seed)
    ]


def write_history(store: Store, *, today: date | None = None, days: int = HISTORY_DAYS) -> int:
    """Write the history; returns how many calls were new (0 on a second run the same day)."""
    today = today or datetime.now(timezone.utc).date()
    return store.write(history(today=today, days=days))


QUESTIONS = (
    "What is OpenTelemetry?",
    "Explain tokens per second in one sentence.",
    "Write a haiku about SQLite.",
    "Why measure time to first token?",
)


def send_traffic(server: FakeOpenAIServer) -> int:
    """A round of real SDK calls: sync and async, streaming and not, a conversation, a failure."""
    import openai

    from .conversation import conversation

    client = openai.OpenAI(base_url=server.base_url, api_key="demo", max_retries=0)
    calls = 0
    for i, model in enumerate(DEMO_MODELS):
        messages: list[Any] = [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]
        if i % 2:
            stream = client.chat.completions.create(
                model=model.name, messages=messages, stream=True
            )
            for _ in stream:
                pass
        else:
            client.chat.completions.create(model=model.name, messages=messages)
        calls += 1
    with conversation("demo-live-chat"):
        messages = []
        for question in QUESTIONS[:3]:
            messages.append({"role": "user", "content": question})
            reply = client.chat.completions.create(model=DEMO_MODELS[0].name, messages=messages)
            messages.append({"role": "assistant", "content": reply.choices[0].message.content})
            calls += 1
    server.push(Reply(status=429, error_code="rate_limit_exceeded", error_message="slow down"))
    # The failure is the point: it shows up in the success rate.
    with contextlib.suppress(openai.APIStatusError):
        client.chat.completions.create(
            model=DEMO_MODELS[1].name, messages=[{"role": "user", "content": "hi"}]
        )
    calls += 1
    return calls + asyncio.run(_async_traffic(server))


async def _async_traffic(server: FakeOpenAIServer) -> int:
    import openai

    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="demo", max_retries=0)

    async def one(model: DemoModel, stream: bool) -> None:
        messages: list[Any] = [{"role": "user", "content": f"Hello from asyncio ({model.name})"}]
        if stream:
            async for _ in await client.chat.completions.create(
                model=model.name, messages=messages, stream=True
            ):
                pass
        else:
            await client.chat.completions.create(model=model.name, messages=messages)

    jobs = [one(m, stream=bool(i % 2)) for i, m in enumerate(DEMO_MODELS)]
    await asyncio.gather(*jobs)
    await client.close()
    return len(jobs)


@dataclass
class Demo:
    """A running demo: fake server, instrumentation, optional live trickle, dashboard server."""

    store: Store
    fake: FakeOpenAIServer
    httpd: Any
    handle: Any = None
    live_calls: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/"

    def close(self) -> None:
        """Stop the trickle, flush the instrumentation, stop both servers (idempotent)."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
        if self.handle is not None:
            self.handle.shutdown()
            self.handle = None
        self.fake.stop()
        self.httpd.server_close()
        self.store.dispose()


def _trickle(demo: Demo, interval_s: float) -> None:
    """A live call every few seconds, so the dashboard visibly refreshes."""
    rounds = 0
    while not demo.stop.wait(interval_s):
        try:
            send_traffic(demo.fake) if rounds % 5 == 4 else _one_call(demo.fake, rounds)
        except Exception as exc:  # the demo's own traffic must never stop the dashboard
            log.warning("demo traffic failed: %s", exc)
        rounds += 1


def _one_call(server: FakeOpenAIServer, n: int) -> None:
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key="demo", max_retries=0)
    model = DEMO_MODELS[n % len(DEMO_MODELS)].name
    messages: list[Any] = [{"role": "user", "content": QUESTIONS[n % len(QUESTIONS)]}]
    if n % 2:
        for _ in client.chat.completions.create(model=model, messages=messages, stream=True):
            pass
    else:
        client.chat.completions.create(model=model, messages=messages)


def start_demo(
    settings: Settings,
    *,
    traffic: bool = True,
    trickle_s: float | None = 4.0,
    echo: Callable[[str], Any] = print,
    instrument_options: Mapping[str, Any] | None = None,
) -> Demo:
    """Write history, start the fake server, send traffic, and bind (not yet run) the dashboard."""
    from .web import create_app, make_wsgi_server

    store = Store.open(settings.db)
    new = write_history(store)
    echo(f"otelstats demo: {new} history calls written to {store.describe()}")
    fake = FakeOpenAIServer(token_delay=0.02).start()
    app = create_app(settings=settings, store=store)
    demo = Demo(store, fake, make_wsgi_server(app, settings.host, settings.port))
    try:
        if traffic:
            from .bootstrap import instrument

            demo.handle = instrument(db=settings.db, **(instrument_options or {}))
            demo.live_calls = send_traffic(fake)
            echo(f"otelstats demo: {demo.live_calls} live calls through {fake.base_url}")
            if trickle_s:
                thread = threading.Thread(
                    target=_trickle, args=(demo, trickle_s), name="otelstats-demo", daemon=True
                )
                thread.start()
                demo.threads.append(thread)
    except BaseException:
        demo.close()
        raise
    return demo


def run_demo(
    settings: Settings, *, traffic: bool = True, echo: Callable[[str], Any] = print
) -> None:
    """`otelstats demo`: run until Ctrl-C, then stop everything cleanly."""
    demo = start_demo(settings, traffic=traffic, echo=echo)
    echo(f"otelstats demo: dashboard at {demo.url} (Ctrl-C to stop)")
    try:
        demo.httpd.serve_forever()  # werkzeug's server returns on Ctrl-C
    except KeyboardInterrupt:
        pass
    finally:
        echo("otelstats demo: stopping")
        demo.close()
