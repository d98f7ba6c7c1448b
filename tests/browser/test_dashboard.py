"""The statistics page in headless Chromium against the real app: numbers, charts, exports."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from tests.browser.support import (
    CSV_HOSTILE_MODELS,
    TZ,
    Site,
    assert_cards_match,
    card_values,
    local_days_ago,
    open_dashboard,
    rendered,
    shot,
    stats,
    wait_rerendered,
)
from tests.factories import record

pytestmark = pytest.mark.browser


def test_cards_equal_api_with_people_friendly_numbers(page: Any, site: Site) -> None:
    open_dashboard(page, site)
    api = stats(site, "7d")
    assert_cards_match(page, api["overview"])
    requests = page.locator('.card[data-metric="requests"] .value')
    assert requests.locator(".compact").text_content() == f"{api['overview']['requests']:,}"
    tokens = page.locator('.card[data-metric="total_tokens"] .value')
    assert tokens.get_attribute("title") == f"{api['overview']['total_tokens']:,}"
    assert tokens.locator(".compact").text_content().endswith("K")  # 18K, not 18,123
    spark = page.locator('svg[data-trend="requests"]').get_attribute("aria-label")
    assert spark.endswith(", ".join(f"{v:,}" for v in api["overview"]["trend"]["requests"]))
    assert page.text_content("#tz-name") == TZ
    # The browser's timezone (the context's, not this machine's UTC) chooses the local days.
    assert f"{site.url}/api/stats?period=7d&tz=Europe%2FBerlin" in page.watch.requests
    assert not page.watch.errors
    shot(page, "overview-7d")


def test_period_switch_is_in_the_url_and_changes_the_cards(page: Any, site: Site) -> None:
    open_dashboard(page, site)
    for label, period in (("Today", "today"), ("30 Days", "30d"), ("All Time", "all")):
        before = rendered(page)
        page.get_by_role("link", name=label).click()
        wait_rerendered(page, before)
        assert page.url.endswith(f"?period={period}")
        assert page.get_by_role("link", name=label).get_attribute("aria-current") == "page"
        assert_cards_match(page, stats(site, period)["overview"])
    assert (
        stats(site, "today")["overview"]["requests"] != stats(site, "all")["overview"]["requests"]
    )
    before = rendered(page)
    page.go_back()
    wait_rerendered(page, before)
    assert page.url.endswith("?period=30d")
    assert_cards_match(page, stats(site, "30d")["overview"])
    page.reload()
    page.wait_for_function("() => document.body.dataset.state === 'ready'")
    assert page.get_by_role("link", name="30 Days").get_attribute("aria-current") == "page"


def test_legend_click_and_keyboard_toggle_hide_a_series(page: Any, site: Site) -> None:
    open_dashboard(page, site)
    visible = "i => document.getElementById('usage-chart').data[i].visible"
    # Functions, not expressions: the page's CSP (rightly) refuses the eval() an expression needs.
    hidden = "i => document.getElementById('usage-chart').data[i].visible === 'legendonly'"
    page.locator("#usage-chart .legend .traces").nth(1).click()
    page.wait_for_function(hidden, arg=1)
    toggle = page.locator(".series-toggle").nth(1)
    assert toggle.get_attribute("aria-pressed") == "false"
    # The stacked area of the hidden series is no longer drawn.
    assert page.evaluate(visible, 0) in (True, None)
    toggle.focus()
    page.keyboard.press("Enter")
    page.wait_for_function(f"i => !({hidden})(i)", arg=1)
    assert toggle.get_attribute("aria-pressed") == "true"


def test_range_slider_only_beyond_ten_days(page: Any, site: Site) -> None:
    open_dashboard(page, site, "?period=7d")
    assert page.locator("#usage-chart .rangeslider-container").count() == 0
    before = rendered(page)
    page.get_by_role("link", name="30 Days").click()
    wait_rerendered(page, before)
    assert page.locator("#usage-chart .rangeslider-container").count() == 1


def test_model_table_sorts_and_announces(page: Any, site: Site) -> None:
    open_dashboard(page, site, "?period=30d")
    api = stats(site, "30d")["models"]

    def column(i: int) -> list[str]:
        return page.eval_on_selector_all(
            f"#models-table tbody tr > :nth-child({i})", "els => els.map(e => e.textContent)"
        )

    header = page.locator('#models-table th[data-key="requests"]')
    assert header.get_attribute("aria-sort") == "descending"
    by_requests = sorted(api, key=lambda m: -m["requests"])
    assert column(2) == [f"{m['requests']:,}" for m in by_requests]

    page.locator("#models-table").get_by_role("button", name="Model", exact=True).click()
    model_header = page.locator('#models-table th[data-key="model"]')
    assert model_header.get_attribute("aria-sort") == "ascending"
    assert header.get_attribute("aria-sort") is None
    names = column(1)
    assert names == sorted(names, key=str.casefold) or names == page.evaluate(
        "n => n.slice().sort((a, b) => a.localeCompare(b))", names
    )
    assert page.text_content("#sort-status") == "Model table sorted by Model, ascending."

    prompt_button = page.locator("#models-table").get_by_role("button", name="Prompt Tokens")
    prompt_button.click()
    prompt_button.press("Enter")  # keyboard: second press flips
    prompt = page.locator('#models-table th[data-key="prompt_tokens"]')
    assert prompt.get_attribute("aria-sort") == "ascending"
    assert column(3) == [
        f"{m['prompt_tokens']:,}" for m in sorted(api, key=lambda m: m["prompt_tokens"])
    ]
    assert "Prompt Tokens, ascending" in page.text_content("#sort-status")


def test_chart_table_toggle(page: Any, site: Site) -> None:
    open_dashboard(page, site)
    panel = page.locator('section[data-chart="usage"]')
    toggle = panel.locator(".view-toggle")
    toggle.focus()
    page.keyboard.press("Enter")
    assert toggle.get_attribute("aria-pressed") == "true"
    assert page.locator("#usage-chart").is_hidden()
    table = page.locator("#usage-table-wrap table")
    assert table.locator("caption").text_content() == "Requests and tokens per day"
    assert table.locator('thead th[scope="col"]').count() == 5
    daily = stats(site, "7d")["daily"]
    row_headers = table.locator('tbody th[scope="row"]').all_text_contents()
    assert row_headers == [d["date"] for d in daily]
    first = table.locator("tbody tr").first.locator("td").all_text_contents()
    assert first[0] == f"{daily[0]['requests']:,}"
    shot(page, "usage-as-table")
    page.keyboard.press("Enter")
    assert page.locator("#usage-chart").is_visible()
    assert page.locator("#usage-table-wrap").is_hidden()


def test_csv_downloads_neutralise_hostile_cells(page: Any, site: Site) -> None:
    open_dashboard(page, site, "?period=30d")
    page.get_by_role("button", name="Export").click()
    with page.expect_download() as info:
        page.get_by_role("link", name="Export as CSV (per model and day)").click()
    rows = list(csv.DictReader(io.StringIO(info.value.path().read_text(encoding="utf-8"))))
    models = {r["model"] for r in rows}
    for hostile in CSV_HOSTILE_MODELS:
        assert hostile not in models
        assert "'" + hostile in models
    for row in rows:
        for value in row.values():
            assert not value or (value[0] not in "=+@\t\r\n" and not value.startswith("-"))
    page.get_by_role("button", name="Export").click()
    with page.expect_download() as info:
        page.get_by_role("link", name="Export as CSV (daily statistics)").click()
    daily = list(csv.DictReader(io.StringIO(info.value.path().read_text(encoding="utf-8"))))
    api = stats(site, "30d")["daily"]
    assert [int(r["requests"]) for r in daily] == [d["requests"] for d in api]


def test_copy_to_clipboard_puts_the_export_json(page: Any, site: Site) -> None:
    open_dashboard(page, site, "?period=30d")
    page.get_by_role("button", name="Export").click()
    page.get_by_role("button", name="Copy JSON to clipboard").click()
    page.wait_for_function(
        "() => document.getElementById('status').textContent.startsWith('Copied')"
    )
    copied = json.loads(page.evaluate("() => navigator.clipboard.readText()"))
    expected = site.api(f"/api/export.json?period=30d&tz={TZ.replace('/', '%2F')}")
    assert copied["overview"] == expected["overview"]
    assert copied["models"] == expected["models"]
    assert copied["daily"] == expected["daily"]
    assert page.get_by_role("button", name="Export").get_attribute("aria-expanded") == "false"


def test_export_menu_by_keyboard(page: Any, site: Site) -> None:
    open_dashboard(page, site)
    button = page.get_by_role("button", name="Export")
    button.focus()
    page.keyboard.press("Enter")
    assert button.get_attribute("aria-expanded") == "true"
    assert page.evaluate("() => document.activeElement.id") == "export-csv"
    assert page.get_attribute("#export-csv", "href").endswith(
        f"period=7d&tz={TZ.replace('/', '%2F')}"
    )
    page.keyboard.press("Escape")
    assert page.locator("#export-menu").is_hidden()
    assert page.evaluate("() => document.activeElement.id") == "export-button"


def test_empty_state_then_live_refresh(page: Any, fresh_site: Site) -> None:
    open_dashboard(page, fresh_site, state="empty")
    text = page.text_content("#empty-state")
    assert "otelstats.instrument()" in text
    assert "otelstats run -- python app.py" in text
    shot(page, "empty")
    page.evaluate("() => window.__sameDocument = true")
    # The empty state counts as a render too: wait for a render after it, so that the charts
    # of this first refresh are drawn (plotly.js runs after the numbers) and the next render
    # awaited below is the second refresh, not these charts arriving late.
    empty = rendered(page)
    fresh_site.store.write([record(local_days_ago(0), input_tokens=1200, output_tokens=34)])
    wait_rerendered(page, empty)
    assert page.evaluate("() => window.__sameDocument") is True  # no reload
    assert_cards_match(page, stats(fresh_site, "7d")["overview"])
    before = rendered(page)
    fresh_site.store.write([record(local_days_ago(0), input_tokens=5, output_tokens=5)])
    wait_rerendered(page, before)
    assert page.evaluate("() => window.__sameDocument") is True
    assert card_values(page)["requests"] == "2"
    assert_cards_match(page, stats(fresh_site, "7d")["overview"])
    # Nothing new: the page keeps polling the cheap version token and fetches no statistics.
    stats_requests = sum("/api/stats" in u for u in page.watch.requests)
    versions = sum("/api/version" in u for u in page.watch.requests)
    page.wait_for_timeout(1200)  # six polls at 200 ms
    assert sum("/api/version" in u for u in page.watch.requests) >= versions + 3
    assert sum("/api/stats" in u for u in page.watch.requests) == stats_requests


def test_error_state_when_the_database_cannot_be_read(page: Any, broken_site: Site) -> None:
    open_dashboard(page, broken_site, state="error")
    alert = page.get_by_role("alert")
    assert "could not be loaded" in alert.text_content()
    assert "otelstats db info" in alert.text_content()
    page.get_by_text("Details from the server").click()
    message = page.text_content("#error-message")
    assert "cannot be read" in message or "cannot read" in message
    assert "Traceback" not in message
    shot(page, "error")
