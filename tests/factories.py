"""Build CallRecords for tests with only the fields a test cares about."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from otelstats.records import CallRecord

_ids = itertools.count(1)


def record(start: datetime | None = None, *, duration_s: float = 1.0, **fields: Any) -> CallRecord:
    """A successful non-streaming chat call starting at `start` (aware datetime)."""
    n = next(_ids)
    start_ns = int((start or datetime.now().astimezone()).timestamp() * 1e9)
    values: dict[str, Any] = {
        "trace_id": f"{n:032x}",
        "span_id": f"{n:016x}",
        "start_ns": start_ns,
        "end_ns": start_ns + int(duration_s * 1e9),
        "operation": "chat",
        "provider": "openai",
        "request_model": "gpt-test",
        "response_model": None,
        "server_address": "127.0.0.1",
        "server_port": 8000,
        "input_tokens": 10,
        "output_tokens": 20,
        "tokens_source": "reported",
        "cached_input_tokens": None,
        "reasoning_tokens": None,
        "streaming": False,
        "time_to_first_chunk_s": None,
        "finish_reasons": ("stop",),
        "outcome": "ok",
        "error_type": None,
        "conversation_id": None,
    }
    values.update(fields)
    return CallRecord(**values)
