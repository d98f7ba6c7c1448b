"""CSV/JSON formatting: formula injection neutralised (OWASP), numbers kept numbers."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otelstats.export import (
    DAILY_COLUMNS,
    FORMULA_PREFIXES,
    MODEL_DAILY_COLUMNS,
    filename,
    sanitize_cell,
    to_csv,
    to_json,
)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=cmd", "'\t=cmd"),
        ("\r=cmd", "'\r=cmd"),
        ("\n=cmd", "'\n=cmd"),
        ('=HYPERLINK("http://evil.example")', '\'=HYPERLINK("http://evil.example")'),
        ("gpt-4o", "gpt-4o"),
        ("", ""),
        (None, ""),
        (-5, -5),
        (-0.25, -0.25),
        (0, 0),
        (12.5, 12.5),
        (float("nan"), ""),
        (True, "true"),
    ],
)
def test_sanitize_cell(cell: object, expected: object) -> None:
    result = sanitize_cell(cell)
    assert result == expected
    assert type(result) is type(expected)


def test_to_csv_keeps_numbers_and_neutralises_strings() -> None:
    rows = [
        {
            "date": "2024-05-01",
            "model": "=cmd|' /C calc'!A0",
            "requests": 3,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "avg_tokens_per_second": -1.5,
            "avg_latency_ms": None,
            "success_rate": 100.0,
        },
    ]
    text = to_csv(rows, MODEL_DAILY_COLUMNS)
    assert text.endswith("\r\n")
    parsed = list(csv.reader(io.StringIO(text)))
    assert tuple(parsed[0]) == MODEL_DAILY_COLUMNS
    assert parsed[1] == [
        "2024-05-01",
        "'=cmd|' /C calc'!A0",
        "3",
        "10",
        "5",
        "15",
        "-1.5",
        "",
        "100.0",
    ]


def test_to_csv_daily_header_only_when_empty() -> None:
    assert to_csv([]) == ",".join(DAILY_COLUMNS) + "\r\n"


@given(st.text())
def test_no_string_cell_reaches_a_sheet_as_a_formula(text: str) -> None:
    row = {"date": text, "model": text}
    parsed = list(csv.reader(io.StringIO(to_csv([row], ("date", "model")), newline="")))
    assert len(parsed) == 2
    for cell in parsed[1]:
        assert not cell.startswith(FORMULA_PREFIXES)
        assert cell in (text, "'" + text)


@given(st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)))
def test_numbers_round_trip_as_numbers(number: float) -> None:
    parsed = list(csv.reader(io.StringIO(to_csv([{"requests": number}], ("requests",)))))
    cell = parsed[1][0]
    # Integers come back exactly (a float would round those above 2**53); floats via repr.
    assert (int(cell) if isinstance(number, int) else float(cell)) == number


def test_to_json_round_trips_and_refuses_nan() -> None:
    stats = {"period": "7d", "overview": {"requests": 1, "avg_latency_ms": None}, "m": "<b>é</b>"}
    assert json.loads(to_json(stats)) == stats
    with pytest.raises(ValueError, match="JSON"):
        to_json({"x": float("nan")})


def test_filename_is_safe() -> None:
    assert filename({"period": "7d", "end": "2024-05-01T10:00:00+02:00"}, "csv") == (
        "otelstats-7d-2024-05-01.csv"
    )
    assert filename({"period": '7d"; x=../', "end": None}, "json", by="model") == (
        "otelstats-7d___x____-by-model.json"
    )
