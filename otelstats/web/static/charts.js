/* Chart figures (plotly) and their table equivalents, built from one /api/stats payload.
   Series differ by pattern or dash as well as colour; every server string reaches plotly escaped
   and reaches the DOM through textContent only. */
"use strict";
(function (global) {
  const F = global.OtelstatsFormat;
  // Okabe-Ito: distinguishable with the common colour-vision deficiencies.
  const COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#7F7F7F"];
  // Solid first, then diagonal stripes, dots, horizontal lines, crosshatch, vertical lines.
  const PATTERNS = ["", "/", ".", "-", "x", "|"];
  const DASHES = ["solid", "dash", "dot", "dashdot"];
  // Beyond this many days a line shows an evenly spread subset of its markers (plotly picks them
  // again on zoom): two years of daily markers blur into a thick line and cost half the chart's
  // drawing time. The line, its dash and every day's hover value stay.
  const MAX_MARKERS = 100;

  function theme() {
    const css = getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    return { fg: v("--fg"), muted: v("--muted"), grid: v("--grid"), bg: v("--surface") };
  }

  function baseLayout(t, reduceMotion) {
    return {
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: t.fg, family: "system-ui, sans-serif", size: 13 },
      margin: { t: 10, r: 70, b: 40, l: 60 },
      legend: { orientation: "h", y: 1.12, x: 0 },
      hoverlabel: { bgcolor: t.bg, font: { color: t.fg } },
      // No animation at all for people who asked for less motion.
      transition: reduceMotion ? { duration: 0 } : { duration: 300, easing: "cubic-in-out" },
      autosize: true,
    };
  }

  const CONFIG = { displayModeBar: false, responsive: true, displaylogo: false };

  function usage(stats, t, reduceMotion) {
    const d = stats.daily;
    const x = d.map((r) => r.date);
    const few = d.length <= 2;
    const area = (name, key, i, yaxis, extra) => Object.assign({
      type: "scatter", mode: few ? "lines+markers" : "lines", name, x,
      y: d.map((r) => r[key]), yaxis,
      line: { color: COLORS[i], width: 2 },
      fillcolor: COLORS[i] + "55",
      fillpattern: { shape: PATTERNS[i], fgcolor: COLORS[i], size: 8, solidity: 0.3 },
      hovertemplate: "%{y:,}<extra>" + name + "</extra>",
    }, extra);
    const data = [
      area("Requests", "requests", 0, "y", { fill: "tozeroy" }),
      area("Prompt tokens", "prompt_tokens", 1, "y2", { stackgroup: "tokens" }),
      area("Completion tokens", "completion_tokens", 2, "y2", { stackgroup: "tokens" }),
    ];
    const layout = Object.assign(baseLayout(t, reduceMotion), {
      hovermode: "x unified",
      legend: { orientation: "h", y: 1.12, x: 0, traceorder: "normal" },
      xaxis: {
        type: "date", gridcolor: t.grid, linecolor: t.muted,
        // The brush only pays off once there are more days than fit comfortably.
        rangeslider: { visible: d.length > 10, thickness: 0.12 },
      },
      yaxis: { title: { text: "Requests" }, rangemode: "tozero", gridcolor: t.grid, zerolinecolor: t.muted },
      yaxis2: { title: { text: "Tokens" }, tickformat: ".3~s", rangemode: "tozero", overlaying: "y", side: "right", showgrid: false },
    });
    const label = "Area chart of requests (left axis) and prompt and completion tokens (right axis) per day, " +
      (x.length ? x[0] + " to " + x[x.length - 1] + ", " + x.length + (x.length === 1 ? " day" : " days") : "no days") +
      ". In this period: " + F.exact(stats.overview.requests) + " requests and " +
      F.exact(stats.overview.total_tokens) + " tokens.";
    const table = {
      caption: "Requests and tokens per day",
      columns: ["Date", "Requests", "Prompt tokens", "Completion tokens", "Total tokens"],
      rows: d.map((r) => [r.date, r.requests, r.prompt_tokens, r.completion_tokens, r.total_tokens]),
    };
    return { data, layout, label, table };
  }

  function tokensByModel(stats, t, reduceMotion) {
    const m = stats.models;
    const data = [{
      type: "pie", hole: 0.55, sort: false, direction: "clockwise",
      labels: m.map((r) => F.plotlyText(r.model)),
      values: m.map((r) => r.total_tokens),
      marker: {
        colors: m.map((_, i) => COLORS[i % COLORS.length]),
        line: { color: t.bg, width: 2 },
        // Overlay keeps each slice's colour and draws the pattern on top of it.
        pattern: { shape: m.map((_, i) => PATTERNS[i % PATTERNS.length]), fillmode: "overlay", fgcolor: t.bg, solidity: 0.3 },
      },
      textinfo: "percent", textposition: "inside",
      hovertemplate: "%{label}<br>%{value:,} tokens<br>%{percent}<extra></extra>",
    }];
    const layout = Object.assign(baseLayout(t, reduceMotion), {
      margin: { t: 10, r: 10, b: 10, l: 10 },
      legend: { orientation: "v", x: 1, y: 0.5 },
    });
    const label = m.length
      ? "Donut chart of total tokens by model: " +
        m.map((r) => r.model + " " + F.exact(r.total_tokens) + " tokens").join("; ") + "."
      : "Donut chart of total tokens by model: no calls in this period.";
    const table = {
      caption: "Tokens by model",
      columns: ["Model", "Total tokens", "Prompt tokens", "Completion tokens"],
      rows: m.map((r) => [r.model, r.total_tokens, r.prompt_tokens, r.completion_tokens]),
    };
    return { data, layout, label, table };
  }

  function performance(stats, t, reduceMotion) {
    const d = stats.daily;
    const x = d.map((r) => r.date);
    const line = (name, key, i, yaxis, symbol, fmt) => ({
      type: "scatter", mode: "lines+markers", name, x, y: d.map((r) => r[key]), yaxis,
      connectgaps: false,
      line: { color: COLORS[i], width: 2, dash: DASHES[i] },
      marker: { symbol, size: 6, color: COLORS[i], maxdisplayed: MAX_MARKERS },
      hovertemplate: "%{y:" + fmt + "}<extra>" + name + "</extra>",
    });
    const data = [
      line("Avg tokens/sec", "avg_tokens_per_second", 0, "y", "circle", ",.1f"),
      line("Avg latency (ms)", "avg_latency_ms", 1, "y2", "square", ",.0f"),
    ];
    const layout = Object.assign(baseLayout(t, reduceMotion), {
      hovermode: "x unified",
      xaxis: { type: "date", gridcolor: t.grid, linecolor: t.muted },
      yaxis: { title: { text: "Tokens/sec" }, rangemode: "tozero", gridcolor: t.grid, zerolinecolor: t.muted },
      yaxis2: { title: { text: "Latency (ms)" }, rangemode: "tozero", overlaying: "y", side: "right", showgrid: false },
    });
    const o = stats.overview;
    const label = "Line chart of average tokens per second (solid line, left axis) and average time to first " +
      "token in milliseconds (dashed line, right axis) per day" +
      (x.length ? ", " + x[0] + " to " + x[x.length - 1] : "") +
      ". Period averages: " + F.exact(o.avg_tokens_per_second) + " tokens per second, " +
      F.exact(o.avg_latency_ms) + " ms.";
    const table = {
      caption: "Average speed and latency per day",
      columns: ["Date", "Avg tokens/sec", "Avg latency (ms)", "Success rate (%)"],
      rows: d.map((r) => [r.date, r.avg_tokens_per_second, r.avg_latency_ms, r.success_rate]),
    };
    return { data, layout, label, table };
  }

  /** A <table> with <caption>, column and row headers; cells set through textContent. */
  function buildTable(spec) {
    const table = document.createElement("table");
    table.className = "data-table";
    const caption = table.createCaption();
    caption.textContent = spec.caption;
    const head = table.createTHead().insertRow();
    for (const name of spec.columns) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = name;
      head.appendChild(th);
    }
    const body = table.createTBody();
    for (const row of spec.rows) {
      const tr = body.insertRow();
      row.forEach((cell, i) => {
        const el = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) el.scope = "row";
        el.textContent = i === 0 ? String(cell) : F.exact(cell);
        tr.appendChild(el);
      });
    }
    return table;
  }

  global.OtelstatsCharts = {
    builders: { usage, "tokens-by-model": tokensByModel, performance },
    buildTable, theme, CONFIG, COLORS, PATTERNS, MAX_MARKERS,
  };
})(window);
