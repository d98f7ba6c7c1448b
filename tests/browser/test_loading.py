"""How a first visit loads: the numbers before plotly.js runs, plotly.js fetched once, and the
charts-rendered mark (what benchmarks/bench_dashboard.py times) set once every chart is drawn."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.support import TZ, Site, open_dashboard, stats

pytestmark = pytest.mark.browser

# Before any page script: what the page looked like at each of its performance marks.
MARK_RECORDER = """
(() => {
  window.__atMark = {};
  const mark = performance.mark.bind(performance);
  performance.mark = (name, options) => {
    window.__atMark[name] = {
      plotly: typeof window.Plotly,
      charts: [...document.querySelectorAll('.chart')].map((gd) => ({
        id: gd.id,
        svg: gd.querySelectorAll('.main-svg').length,
        points: (gd.data || []).map((t) => (t.x || t.labels || []).length),
        rangeslider: gd.querySelectorAll('.rangeslider-container').length,
      })),
    };
    return mark(name, options);
  };
})();
"""


def test_a_first_visit_draws_the_numbers_before_plotly_runs(browser: Any, site: Site) -> None:
    # A context of its own: nothing cached, as for a first visitor.
    ctx = browser.new_context(
        timezone_id=TZ, locale="en-US", viewport={"width": 1280, "height": 900}
    )
    ctx.add_init_script(MARK_RECORDER)
    page = ctx.new_page()
    requests: list[str] = []
    warnings: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on(
        "console", lambda m: warnings.append(m.text) if m.type in ("warning", "error") else None
    )
    open_dashboard(page, site, "?period=30d")
    at_mark = page.evaluate("() => window.__atMark")
    # plotly.js is preloaded, and runs only once the cards and the table are filled.
    assert at_mark["otelstats:numbers-shown"]["plotly"] == "undefined"
    assert at_mark["otelstats:charts-rendered"]["plotly"] == "object"
    plotly = [u for u in requests if "/assets/vendor/plotly.min.js" in u]
    assert len(plotly) == 1, plotly  # the preloaded response is the one that runs
    assert not [w for w in warnings if "preload" in w], warnings
    ctx.close()


def test_the_charts_rendered_mark_follows_every_chart_drawn_in_full(page: Any, site: Site) -> None:
    page.add_init_script(MARK_RECORDER)
    open_dashboard(page, site, "?period=30d")
    api = stats(site, "30d")
    charts = {
        c["id"]: c
        for c in page.evaluate("() => window.__atMark")["otelstats:charts-rendered"]["charts"]
    }
    days, models = len(api["daily"]), len(api["models"])
    assert charts["usage-chart"]["points"] == [days] * 3
    assert charts["usage-chart"]["rangeslider"] == 1  # more than ten days
    assert charts["tokens-by-model-chart"]["points"] == [models]
    assert charts["performance-chart"]["points"] == [days] * 2
    assert all(c["svg"] > 0 for c in charts.values())


def markers(page: Any) -> list[int]:
    return page.evaluate(  # type: ignore[no-any-return]
        """() => [...document.querySelectorAll('#performance-chart .scatterlayer .trace')]
                 .map((t) => t.querySelectorAll('.points path').length)"""
    )


def test_long_lines_show_a_subset_of_their_markers(page: Any, long_site: Site) -> None:
    open_dashboard(page, long_site, "?period=all")
    days = len(stats(long_site, "all")["daily"])
    cap = page.evaluate("() => window.OtelstatsCharts.MAX_MARKERS")
    assert days > cap
    shown = markers(page)
    assert len(shown) == 2
    assert all(0 < n <= cap for n in shown), shown
    # Every day is still on the line and in the hover data.
    assert page.evaluate(
        "() => document.getElementById('performance-chart').data.map(t => t.x.length)"
    ) == [days, days]
    open_dashboard(page, long_site, "?period=30d")
    assert markers(page) == [30, 30]
