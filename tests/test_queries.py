"""Every number of `queries.stats` against hand-computed expectations (DESIGN.md §3-§4).

Each test writes records through the real Store (SQLite and PostgreSQL) and reads them back
through the rollups; the expected values are worked out by hand in the comments.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from otelstats.queries import PERIODS, daily_by_model, data_version, stats
from otelstats.store import Store
from tests.factories import record

NOW = datetime(2026, 5, 13, 12, 0, tzinfo=timezone.utc)
TODAY = NOW.date()


def at(days_ago: int = 0, hour: int = 9, minute: int = 0) -> datetime:
    """A UTC instant on the day `days_ago` days before NOW's day."""
    day = TODAY - timedelta(days=days_ago)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc)


def get(store: Store, period: str = "7d", tz: str = "UTC") -> dict[str, Any]:
    return stats(store.engine, period, tz, now=NOW)


def day_of(result: dict[str, Any], day: date) -> dict[str, Any]:
    (entry,) = [d for d in result["daily"] if d["date"] == day.isoformat()]
    return entry  # type: ignore[no-any-return]


def test_contract_shape_on_empty_database(store: Store) -> None:
    result = get(store, "7d", "Europe/Berlin")
    assert json.loads(json.dumps(result)) == result  # plain JSON types only (no Decimal)
    assert result["period"] == "7d"
    assert result["timezone"] == "Europe/Berlin"
    assert result["start"] == "2026-05-07T00:00:00+02:00"
    assert result["end"] == "2026-05-13T14:00:00+02:00"
    overview = result["overview"]
    assert {
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "avg_tokens_per_second",
        "conversations",
        "avg_latency_ms",
        "success_rate",
        "errors",
        "trend",
    } <= overview.keys()
    assert overview["requests"] == overview["total_tokens"] == overview["conversations"] == 0
    # Nothing qualifies: averages and rates are null, never 0.
    assert overview["avg_tokens_per_second"] is None
    assert overview["avg_latency_ms"] is None
    assert overview["success_rate"] is None
    assert overview["trend"] == {"requests": [0] * 7, "total_tokens": [0] * 7}
    assert [d["date"] for d in result["daily"]] == [
        (TODAY - timedelta(days=n)).isoformat() for n in range(6, -1, -1)
    ]
    for day in result["daily"]:
        assert set(day) >= {
            "date",
            "requests",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "avg_tokens_per_second",
            "avg_latency_ms",
            "success_rate",
        }
        assert day["success_rate"] is None
        assert day["avg_latency_ms"] is None
    assert result["models"] == []


def test_empty_database_all_is_today_only(store: Store) -> None:
    result = get(store, "all")
    assert result["start"] is None
    assert [d["date"] for d in result["daily"]] == [TODAY.isoformat()]


def test_tokens_and_requests_overview_daily_models(store: Store) -> None:
    store.write(
        [
            record(at(0), input_tokens=100, output_tokens=50),
            record(at(0, 10), input_tokens=7, output_tokens=3, request_model="other"),
            record(at(2), input_tokens=1000, output_tokens=1),
            record(at(8), input_tokens=5, output_tokens=5),  # outside 7d
        ]
    )
    week = get(store, "7d")
    o = week["overview"]
    assert (o["requests"], o["prompt_tokens"], o["completion_tokens"], o["total_tokens"]) == (
        3,
        1107,
        54,
        1161,
    )
    today = day_of(week, TODAY)
    assert (today["requests"], today["prompt_tokens"], today["completion_tokens"]) == (2, 107, 53)
    assert today["total_tokens"] == 160
    assert day_of(week, TODAY - timedelta(days=2))["total_tokens"] == 1001
    assert day_of(week, TODAY - timedelta(days=1))["requests"] == 0
    assert [(m["model"], m["requests"], m["prompt_tokens"], m["completion_tokens"]) for m in
            week["models"]] == [("gpt-test", 2, 1100, 51), ("other", 1, 7, 3)]  # fmt: skip
    assert week["models"][0]["total_tokens"] == 1151

    everything = get(store, "all")
    assert everything["overview"]["requests"] == 4
    assert everything["overview"]["total_tokens"] == 1171
    # `all` starts at the first recorded day, zero days included.
    assert len(everything["daily"]) == 9
    assert everything["daily"][0]["date"] == (TODAY - timedelta(days=8)).isoformat()
    assert sum(d["requests"] for d in everything["daily"]) == 4


def test_success_rate_and_errors(store: Store) -> None:
    store.write(
        [
            record(at(0)),
            record(at(0)),
            record(at(0), outcome="error", error_type="APIConnectionError"),
            record(at(0), outcome="cancelled"),
            record(at(1), outcome="error", error_type="RateLimitError"),
        ]
    )
    o = get(store)["overview"]
    assert o["requests"] == 5
    assert o["success_rate"] == 40.0  # 2 ok of 5
    assert o["errors"] == 2  # cancelled is not an error, but not a success either
    assert o["outcomes"] == {"ok": 2, "error": 2, "cancelled": 1, "incomplete": 0}
    assert day_of(get(store), TODAY)["success_rate"] == 50.0  # 2 of 4
    yesterday = day_of(get(store), TODAY - timedelta(days=1))
    assert yesterday["success_rate"] == 0.0
    assert yesterday["avg_latency_ms"] is None  # failed calls have no latency
    assert yesterday["avg_tokens_per_second"] is None
    (model,) = get(store)["models"]
    assert (model["success_rate"], model["errors"]) == (40.0, 2)


def test_success_rate_rounds_to_two_decimals(store: Store) -> None:
    store.write([record(at(0)), record(at(0)), record(at(0), outcome="error")])
    assert get(store)["overview"]["success_rate"] == 66.67


def test_latency_streaming_and_non_streaming(store: Store) -> None:
    store.write(
        [
            # streaming: time to first chunk → 250 ms
            record(at(0), streaming=True, time_to_first_chunk_s=0.25, duration_s=3.0),
            # non-streaming: the whole duration → 2000 ms
            record(at(0), duration_s=2.0),
            # failed calls never count towards latency
            record(at(0), outcome="error", duration_s=9.0),
            record(at(0), outcome="error", streaming=True, time_to_first_chunk_s=5.0),
            # a stream that never produced a chunk has no latency
            record(at(0), streaming=True, time_to_first_chunk_s=None),
        ]
    )
    assert get(store)["overview"]["avg_latency_ms"] == 1125.0  # (250 + 2000) / 2


def test_tokens_per_second_definition(store: Store) -> None:
    store.write(
        [
            # streaming: (11 - 1) / (3.0 - 1.0) = 5.0
            record(
                at(0), streaming=True, output_tokens=11, time_to_first_chunk_s=1.0, duration_s=3
            ),
            # non-streaming: 30 / 2.0 = 15.0
            record(at(0), output_tokens=30, duration_s=2.0),
            # excluded: streaming with fewer than 2 output tokens
            record(at(0), streaming=True, output_tokens=1, time_to_first_chunk_s=0.5),
            # excluded: non-streaming without output, no usage at all, and a failed call
            record(at(0), output_tokens=0),
            record(at(0), output_tokens=None, input_tokens=None, tokens_source="none"),
            record(at(0), outcome="error", output_tokens=500),
        ]
    )
    result = get(store)
    assert result["overview"]["avg_tokens_per_second"] == 10.0  # mean of 5.0 and 15.0
    assert day_of(result, TODAY)["avg_tokens_per_second"] == 10.0
    assert result["models"][0]["avg_tokens_per_second"] == 10.0


def test_tokens_per_second_rounds(store: Store) -> None:
    store.write([record(at(0), output_tokens=10, duration_s=3.0)])  # 3.333…
    assert get(store)["overview"]["avg_tokens_per_second"] == 3.33


def test_counted_and_unreported_tokens(store: Store) -> None:
    store.write(
        [
            record(at(0), input_tokens=10, output_tokens=20),
            record(at(0), input_tokens=None, output_tokens=7, tokens_source="counted"),
            record(at(0), input_tokens=None, output_tokens=None, tokens_source="none"),
        ]
    )
    o = get(store)["overview"]
    # The unreported call still counts as a request; its tokens are flagged, not invented.
    assert o["requests"] == 3
    assert (o["prompt_tokens"], o["completion_tokens"]) == (10, 27)
    assert (o["counted_calls"], o["unreported_calls"]) == (1, 1)
    model = get(store)["models"][0]
    assert (model["counted_calls"], model["unreported_calls"]) == (1, 1)


def test_reasoning_and_cached_tokens_are_not_added_again(store: Store) -> None:
    store.write(
        [record(at(0), input_tokens=100, output_tokens=40, cached_input_tokens=60,
                reasoning_tokens=30)]
    )  # fmt: skip
    o = get(store)["overview"]
    assert (o["prompt_tokens"], o["completion_tokens"], o["total_tokens"]) == (100, 40, 140)
    assert (o["cached_input_tokens"], o["reasoning_tokens"]) == (60, 30)


def test_conversations_are_distinct_across_days(store: Store) -> None:
    store.write(
        [
            record(at(2), conversation_id="a"),
            record(at(2, 10), conversation_id="a"),
            record(at(1), conversation_id="a"),
            record(at(0), conversation_id="a"),
            record(at(0), conversation_id="b"),
            record(at(0)),  # no conversation id: not a conversation
            record(at(10), conversation_id="c"),
        ]
    )
    assert get(store, "7d")["overview"]["conversations"] == 2
    assert get(store, "today")["overview"]["conversations"] == 2
    assert get(store, "30d")["overview"]["conversations"] == 3
    assert get(store, "all")["overview"]["conversations"] == 3
    store.write([record(at(1), conversation_id="b")])
    assert get(store, "7d")["overview"]["conversations"] == 2


def test_model_falls_back_to_response_model(store: Store) -> None:
    store.write(
        [
            record(at(0), request_model=None, response_model="served-model"),
            record(at(0), request_model="asked", response_model="served-model"),
            record(at(0), request_model=None, response_model=None),
        ]
    )
    models = {m["model"]: m["requests"] for m in get(store)["models"]}
    assert models == {"served-model": 1, "asked": 1, "unknown": 1}


def test_models_sorted_by_requests(store: Store) -> None:
    store.write(
        [record(at(0), request_model="b")]
        + [record(at(0), request_model="a") for _ in range(3)]
        + [record(at(0), request_model="c") for _ in range(2)]
    )
    assert [m["model"] for m in get(store)["models"]] == ["a", "c", "b"]


@pytest.mark.parametrize("period", PERIODS)
def test_trend_is_last_seven_days_whatever_the_period(store: Store, period: str) -> None:
    store.write(
        [
            record(at(0), input_tokens=1, output_tokens=1),
            record(at(0), input_tokens=1, output_tokens=1),
            record(at(3), input_tokens=5, output_tokens=5),
            record(at(6), input_tokens=2, output_tokens=0),
            record(at(7), input_tokens=100, output_tokens=100),  # 8th day back: outside
        ]
    )
    trend = get(store, period)["overview"]["trend"]
    assert trend == {"requests": [1, 0, 0, 1, 0, 0, 2], "total_tokens": [2, 0, 0, 10, 0, 0, 4]}


def test_daily_lengths_per_period(store: Store) -> None:
    store.write([record(at(40))])
    assert len(get(store, "today")["daily"]) == 1
    assert len(get(store, "7d")["daily"]) == 7
    assert len(get(store, "30d")["daily"]) == 30
    assert len(get(store, "all")["daily"]) == 41
    for period in PERIODS:
        assert get(store, period)["daily"][-1]["date"] == TODAY.isoformat()


def test_calls_after_today_wait_for_their_day(store: Store) -> None:
    store.write([record(at(-1)), record(at(0))])  # tomorrow: a skewed clock
    result = get(store, "all")
    assert result["overview"]["requests"] == 1
    assert result["daily"][-1]["date"] == TODAY.isoformat()


def test_overview_equals_sum_of_daily(store: Store) -> None:
    store.write([record(at(n % 9, n % 24), input_tokens=n, output_tokens=2 * n) for n in range(60)])
    for period in PERIODS:
        result = get(store, period, "America/St_Johns")
        for key in ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors"):
            assert result["overview"][key] == sum(d[key] for d in result["daily"])
            assert result["overview"][key] == sum(m[key] for m in result["models"])


def test_data_version_changes_only_when_calls_are_stored(store: Store) -> None:
    empty = data_version(store.engine)
    assert data_version(store.engine) == empty
    first = record(at(0))
    store.write([first])
    one = data_version(store.engine)
    assert one != empty
    store.write([first])  # a duplicate stores nothing
    assert data_version(store.engine) == one
    store.write([record(at(0))])
    assert data_version(store.engine) not in {empty, one}


def test_daily_by_model_rows(store: Store) -> None:
    store.write(
        [
            record(at(1), request_model="a", input_tokens=1, output_tokens=2),
            record(at(0), request_model="b"),
            record(at(0), request_model="a", outcome="error"),
            record(at(0), request_model="a"),
            record(at(9), request_model="a"),  # outside 7d
        ]
    )
    rows = daily_by_model(store.engine, "7d", "UTC", now=NOW)
    yesterday, today = (TODAY - timedelta(days=1)).isoformat(), TODAY.isoformat()
    assert [(r["date"], r["model"], r["requests"]) for r in rows] == [
        (yesterday, "a", 1),
        (today, "a", 2),
        (today, "b", 1),
    ]
    assert rows[0]["total_tokens"] == 3
    assert rows[1]["success_rate"] == 50.0
    # The rows add up to the same period totals as stats().
    assert sum(r["requests"] for r in rows) == get(store)["overview"]["requests"]
