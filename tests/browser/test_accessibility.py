"""Accessibility and security of the statistics page in headless Chromium: preferences, axe-core,
hostile model names, the Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.support import XSS_MODEL, Site, open_dashboard, shot

pytestmark = pytest.mark.browser


def test_hostile_model_name_stays_text_everywhere(page: Any, site: Site) -> None:
    open_dashboard(page, site)
    page.wait_for_timeout(200)  # an onerror handler would fire right after the element appears
    assert page.watch.dialogs == []
    assert page.locator("img").count() == 0
    assert page.evaluate("() => document.querySelectorAll('[onerror]').length") == 0
    assert XSS_MODEL in page.locator("#models-table tbody th").all_text_contents()
    assert XSS_MODEL in page.get_attribute("#tokens-by-model-chart", "aria-label")
    legend = page.locator("#tokens-by-model-chart .legendtext").all_text_contents()
    assert XSS_MODEL in legend
    # Hover the hostile slice: the tooltip shows the name as text too.
    index = page.evaluate(
        "name => document.getElementById('tokens-by-model-chart').data[0].labels"
        ".findIndex(l => l.includes('onerror'))",
        XSS_MODEL,
    )
    # plotly's pie listens for mouseover on each slice; a tiny slice is hard to hit by coordinates.
    page.locator("#tokens-by-model-chart g.slice").nth(index).dispatch_event("mouseover")
    hover = page.locator("#tokens-by-model-chart .hoverlayer .hovertext").all_text_contents()
    assert any(XSS_MODEL in h for h in hover)
    page.locator('section[data-chart="tokens-by-model"] .view-toggle').click()
    assert XSS_MODEL in page.locator("#tokens-by-model-table-wrap tbody th").all_text_contents()
    assert page.locator("img").count() == 0
    assert page.watch.dialogs == []


def test_everything_local_and_allowed_by_the_csp(page: Any, site: Site) -> None:
    response = page.goto(site.url + "/")
    page.wait_for_function("() => document.body.dataset.rendered")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert page.evaluate("() => window.__csp") == []
    assert all(u.startswith(site.url + "/") for u in page.watch.requests), page.watch.requests
    assert page.evaluate("() => document.querySelectorAll('script:not([src])').length") == 0
    # Only plotly sets inline styles, through the CSSOM (which style-src 'self' allows).
    assert (
        page.evaluate(
            """() => [...document.querySelectorAll('[style]')]
            .filter(e => !e.closest('.js-plotly-plot, #js-plotly-tester')).length"""
        )
        == 0
    )
    assert not page.watch.errors


def test_reduced_motion(page: Any, site: Site) -> None:
    page.emulate_media(reduced_motion="reduce")
    open_dashboard(page, site)
    assert page.evaluate("() => document.documentElement.dataset.motion") == "reduce"
    assert (
        page.evaluate("() => document.getElementById('usage-chart').layout.transition.duration")
        == 0
    )
    card = page.locator(".card").first
    assert card.evaluate("e => getComputedStyle(e).transitionDuration") == "0s"
    page.emulate_media(reduced_motion="no-preference")
    page.wait_for_function("() => document.documentElement.dataset.motion === 'full'")
    assert (
        page.evaluate("() => document.getElementById('usage-chart').layout.transition.duration") > 0
    )


def test_high_contrast_and_forced_colors(page: Any, site: Site) -> None:
    open_dashboard(page, site)
    card = page.locator(".card").first
    normal = card.evaluate("e => getComputedStyle(e).borderTopWidth")
    page.emulate_media(contrast="more")
    assert card.evaluate("e => getComputedStyle(e).borderTopWidth") == "2px" != normal
    page.keyboard.press("Tab")  # the skip link, then the first period link
    page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.textContent")
    assert focused == "Today"
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineWidth")
    assert outline == "4px"
    shot(page, "contrast-more")
    page.emulate_media(contrast="no-preference", forced_colors="active")
    assert card.evaluate("e => getComputedStyle(e).borderTopWidth") == "2px"
    assert page.evaluate("() => matchMedia('(forced-colors: active)').matches")
    shot(page, "forced-colors")


def test_dark_theme(page: Any, site: Site) -> None:
    page.emulate_media(color_scheme="dark")
    open_dashboard(page, site)
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(17, 20, 23)"
    font = page.evaluate("() => document.getElementById('usage-chart').layout.font.color")
    assert font == "#e8eaed"
    shot(page, "dark")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_violations(page: Any, site: Site, scheme: str) -> None:
    from axe_playwright_python.sync_playwright import Axe

    page.emulate_media(color_scheme=scheme)
    open_dashboard(page, site, "?period=30d")
    for panel in ("usage", "performance"):  # scan a table view as well as the charts
        page.locator(f'section[data-chart="{panel}"] .view-toggle').click()
    results = Axe().run(page)
    bad = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert bad == []


def test_static_plotly_css_holds_every_rule_plotly_would_inject(page: Any) -> None:
    """The page stops plotly from injecting a <style> (CSP); static/plotly.css must replace it."""
    from otelstats.web.plotly_bundle import plotly_js_path

    page.set_content('<!doctype html><html lang="en"><body><div id="g"></div></body></html>')
    page.add_script_tag(path=str(plotly_js_path()))
    page.evaluate(
        """() => Plotly.newPlot('g', [{y: [1, 2], fill: 'tozeroy'}, {type: 'pie', values: [1, 2]}],
                                {xaxis: {rangeslider: {}}}, {displayModeBar: false})"""
    )
    injected = page.evaluate(
        """() => Array.from(document.getElementById('plotly.js-style-global').sheet.cssRules)
                   .map(r => r.cssText)"""
    )
    css = (Path(__file__).resolve().parents[2] / "otelstats/web/static/plotly.css").read_text()
    shipped = {line for line in css.splitlines() if line.endswith("}")}
    assert len(injected) > 20
    assert set(injected) == shipped


def test_every_control_is_reachable_by_keyboard_with_a_visible_focus(page: Any, site: Site) -> None:
    open_dashboard(page, site)
    reached: list[str] = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focus = page.evaluate(
            """() => {
                const e = document.activeElement;
                if (e === document.body) return null;
                const s = getComputedStyle(e);
                return {label: (e.getAttribute('aria-labelledby') || e.textContent || '').trim(),
                        visible: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2};
            }"""
        )
        if focus is None:  # past the last control
            break
        assert focus["visible"], focus["label"]
        reached.append(focus["label"])
    for label in ("Today", "All Time", "Export", "Requests", "Show as table", "Model"):
        assert label in reached, label
    assert "models-title" in reached  # the scrollable model table region
