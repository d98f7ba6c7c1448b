/* The statistics page: fetches /api/stats for the period in the URL and the browser's timezone,
   fills the cards, charts and tables, and refreshes in place when /api/version changes. When the
   server wants a token (401) it asks for it once and trades it for a cookie at /api/session.
   Every figure shown comes from the API; server strings are only ever set as text. */
"use strict";
(function () {
  const F = window.OtelstatsFormat;
  const C = window.OtelstatsCharts;
  const PERIOD_NAMES = { today: "Today", "7d": "Last 7 days", "30d": "Last 30 days", all: "All time" };
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  const B = window.OtelstatsBoot;
  const tz = B.tz;
  const motionQuery = window.matchMedia("(prefers-reduced-motion: reduce)");
  // Colours plotly draws with come from CSS variables that these preferences change.
  const themeQueries = ["(prefers-color-scheme: dark)", "(prefers-contrast: more)", "(forced-colors: active)"]
    .map((q) => window.matchMedia(q));
  const pollMs = Number(document.body.dataset.pollMs) || 5000;
  // plotly.js is preloaded by the page (Chromium fetches and parses it off the main thread) and run
  // only from here, once the numbers are drawn or the first load gave up: running it takes the main
  // thread for about a second, which the cards and the table must not wait behind. A chart waits
  // for it either way, so drawing the numbers first costs the charts nothing measurable.
  let plotlyReady = null;
  function loadPlotly() {
    if (!plotlyReady) {
      plotlyReady = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = document.getElementById("plotly-js").href; // the preloaded response is used
        script.addEventListener("load", () => resolve(window.Plotly));
        script.addEventListener("error", () => reject(new Error("plotly.js could not be loaded")));
        document.head.appendChild(script);
      });
    }
    return plotlyReady;
  }
  const state = {
    stats: null, version: null, sort: { key: "requests", dir: "descending" }, loading: null, tokenAccepted: false,
  };

  const period = B.period;
  const query = B.query;

  function setState(name) {
    const was = document.body.dataset.state;
    document.body.dataset.state = name;
    $("#loading").hidden = name !== "loading";
    $("#error-state").hidden = name !== "error";
    $("#token-state").hidden = name !== "token";
    // The form is all there is to do: take the keyboard there (its help text is read with it).
    if (name === "token" && was !== "token") $("#token-input").focus();
    $("#empty-state").hidden = name !== "empty";
    $("#content").hidden = name !== "ready";
  }

  function announce(text) {
    $("#status").textContent = text;
  }

  /** The server's own words for a failed response, else its status line. */
  async function errorMessage(resp) {
    let message = "The server answered " + resp.status + " " + resp.statusText + ".";
    try {
      const body = await resp.json();
      if (body && typeof body.error === "string") message = body.error;
      else if (body && body.error && typeof body.error.message === "string") message = body.error.message;
    } catch (_) { /* not JSON: keep the status line */ }
    return message;
  }

  async function getJSON(url) {
    const resp = await (B.take(url) || fetch(url, { cache: "no-store", headers: { Accept: "application/json" } }));
    if (!resp.ok) {
      const err = new Error(await errorMessage(resp));
      err.status = resp.status;
      throw err;
    }
    return resp.json();
  }

  // ---- period selector and export links -------------------------------------------------------
  function syncControls(p) {
    for (const a of $$(".periods a")) {
      if (a.dataset.period === p) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    $("#export-csv").href = "/api/export.csv?" + query(p);
    $("#export-csv-models").href = "/api/export.csv?by=model&" + query(p);
    $("#export-json").href = "/api/export.json?" + query(p);
    $("#tz-name").textContent = tz;
  }

  // ---- cards ------------------------------------------------------------------------------------
  function renderCards(stats) {
    const o = stats.overview;
    for (const card of $$(".card[data-metric]")) {
      const value = o[card.dataset.metric];
      const [short, exact] = F.format(value, card.dataset.kind);
      const p = $(".value", card);
      p.dataset.value = value === null || value === undefined ? "" : String(value);
      p.title = exact;
      p.replaceChildren();
      const shown = document.createElement("span");
      shown.className = "compact";
      shown.setAttribute("aria-hidden", "true");
      shown.textContent = short;
      const spoken = document.createElement("span");
      spoken.className = "visually-hidden";
      spoken.textContent = exact;
      p.append(shown, spoken);
    }
    for (const svg of $$("svg.sparkline")) renderSparkline(svg, o.trend[svg.dataset.trend] || []);
  }

  function renderSparkline(svg, values) {
    const NS = "http://www.w3.org/2000/svg";
    const top = Math.max(1, ...values);
    const step = values.length > 1 ? 100 / (values.length - 1) : 0;
    const pts = values.map((v, i) => (i * step).toFixed(2) + "," + (28 - (v / top) * 26).toFixed(2));
    const area = document.createElementNS(NS, "polygon");
    area.setAttribute("class", "spark-area");
    area.setAttribute("points", "0,30 " + pts.join(" ") + " 100,30");
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("class", "spark-line");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.replaceChildren(area, line);
    svg.setAttribute("aria-label", "Last 7 days, oldest first: " + values.map(F.exact).join(", "));
  }

  // ---- charts -----------------------------------------------------------------------------------
  async function renderCharts(stats) {
    await loadPlotly();
    const t = C.theme();
    const reduce = motionQuery.matches;
    document.documentElement.dataset.motion = reduce ? "reduce" : "full";
    const jobs = [];
    for (const panel of $$("section[data-chart]")) {
      const name = panel.dataset.chart;
      const fig = C.builders[name](stats, t, reduce);
      const el = $("#" + name + "-chart");
      el.setAttribute("aria-label", fig.label);
      panel.tableSpec = fig.table;
      const wrap = $("#" + name + "-table-wrap");
      if (!wrap.hidden) wrap.replaceChildren(C.buildTable(fig.table));
      jobs.push(window.Plotly.react(el, fig.data, fig.layout, C.CONFIG).then(() => {
        if (name === "usage") syncSeriesToggles(el);
      }));
    }
    await Promise.all(jobs);
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
    performance.mark("otelstats:charts-rendered");
  }

  // Keyboard-operable twins of the plotly legend (which is mouse-only), kept in step with it.
  function syncSeriesToggles(gd) {
    const group = $(".series-toggles");
    if (group.childElementCount !== gd.data.length) {
      group.replaceChildren(...gd.data.map((trace, i) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "series-toggle series-" + i;
        b.dataset.index = String(i);
        b.textContent = trace.name;
        b.addEventListener("click", () => {
          const visible = gd.data[i].visible === "legendonly" ? true : "legendonly";
          window.Plotly.restyle(gd, { visible }, [i]);
        });
        return b;
      }));
      gd.on("plotly_restyle", () => syncSeriesToggles(gd));
    }
    gd.data.forEach((trace, i) => {
      group.children[i].setAttribute("aria-pressed", String(trace.visible !== "legendonly"));
    });
  }

  function setupViewToggles() {
    for (const panel of $$("section[data-chart]")) {
      const button = $(".view-toggle", panel);
      const name = panel.dataset.chart;
      button.addEventListener("click", () => {
        const chart = $("#" + name + "-chart");
        const wrap = $("#" + name + "-table-wrap");
        const showTable = wrap.hidden;
        if (showTable && panel.tableSpec) wrap.replaceChildren(C.buildTable(panel.tableSpec));
        wrap.hidden = !showTable;
        chart.hidden = showTable;
        button.setAttribute("aria-pressed", String(showTable));
        button.textContent = showTable ? "Show as chart" : "Show as table";
        if (!showTable) window.Plotly.Plots.resize(chart);
      });
    }
  }

  // ---- model table --------------------------------------------------------------------------------
  function renderModels(stats) {
    const { key, dir } = state.sort;
    const type = $('#models-table th[data-key="' + key + '"]').dataset.type;
    const rows = stats.models.slice().sort((a, b) => {
      const x = a[key];
      const y = b[key];
      if (x === null || x === undefined) return y === null || y === undefined ? 0 : 1; // nulls last
      if (y === null || y === undefined) return -1;
      const c = type === "text" ? String(x).localeCompare(String(y)) : x - y;
      return dir === "ascending" ? c : -c;
    });
    const body = $("#models-table tbody");
    body.replaceChildren(...rows.map((r) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = r.model;
      tr.appendChild(th);
      for (const k of ["requests", "prompt_tokens", "completion_tokens", "avg_tokens_per_second", "avg_latency_ms", "success_rate"]) {
        const td = document.createElement("td");
        td.textContent = F.exact(r[k]);
        tr.appendChild(td);
      }
      return tr;
    }));
    for (const h of $$("#models-table th[data-key]")) {
      if (h.dataset.key === key) h.setAttribute("aria-sort", dir);
      else h.removeAttribute("aria-sort");
    }
  }

  function setupSorting() {
    for (const th of $$("#models-table th[data-key]")) {
      $("button", th).addEventListener("click", () => {
        const key = th.dataset.key;
        const first = th.dataset.type === "text" ? "ascending" : "descending";
        const dir = state.sort.key === key ? (state.sort.dir === "ascending" ? "descending" : "ascending") : first;
        state.sort = { key, dir };
        if (state.stats) renderModels(state.stats);
        $("#sort-status").textContent = "Model table sorted by " + $("button", th).textContent + ", " + dir + ".";
      });
    }
  }

  // ---- loading and refreshing -------------------------------------------------------------------
  async function load(opts) {
    const quiet = opts && opts.quiet;
    const p = period();
    syncControls(p);
    // Only the very first load shows "Loading": a period switch keeps the old figures until the
    // new ones arrive, so nothing flickers.
    const shown = document.body.dataset.state === "ready";
    if (!quiet && !shown) setState("loading");
    $("#content").setAttribute("aria-busy", "true");
    const request = (state.loading = getJSON("/api/stats?" + query(p)));
    try {
      const stats = await request;
      if (request !== state.loading) return; // a newer request (another period) won
      $("#period-caption").textContent = PERIOD_NAMES[p] + " (" + tz + ")";
      if (stats.overview.requests === 0 && (await isEmptyDatabase(p))) {
        state.stats = stats;
        setState("empty");
        document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
        return;
      }
      state.stats = stats;
      setState("ready");
      renderCards(stats);
      renderModels(stats);
      performance.mark("otelstats:numbers-shown");
      await renderCharts(stats);
    } catch (err) {
      if (request !== state.loading) return;
      if (err.status === 401) {
        // Accepted a moment ago yet refused now: the browser did not keep the cookie.
        if (state.tokenAccepted) showTokenError("The token is right, but this browser did not keep its cookie. Allow cookies for this site and try again.");
        state.tokenAccepted = false;
        setState("token");
        return;
      }
      if (quiet && document.body.dataset.state === "ready") {
        announce("Could not refresh the statistics: " + err.message);
        return;
      }
      $("#error-message").textContent = err.message;
      setState("error");
    } finally {
      if (request === state.loading) $("#content").removeAttribute("aria-busy");
      loadPlotly(); // empty, error or token state: ready for when charts are due
    }
  }

  // "Empty" means nothing was ever recorded, not merely a quiet period: ask the All Time view.
  async function isEmptyDatabase(p) {
    if (p === "all") return true;
    const all = await getJSON("/api/stats?" + query("all"));
    return all.overview.requests === 0;
  }

  async function poll() {
    if (document.hidden) return;
    try {
      const resp = await fetch("/api/version", { cache: "no-store" });
      if (!resp.ok) return;
      const token = await resp.text();
      if (state.version !== null && token !== state.version) {
        state.version = token;
        await load({ quiet: true });
      }
      state.version = token;
    } catch (_) { /* the server may be restarting; the next poll tries again */ }
  }

  // ---- export menu --------------------------------------------------------------------------------
  function setupExport() {
    const button = $("#export-button");
    const menu = $("#export-menu");
    const close = (focusButton) => {
      menu.hidden = true;
      button.setAttribute("aria-expanded", "false");
      if (focusButton) button.focus();
    };
    button.addEventListener("click", () => {
      const open = menu.hidden;
      menu.hidden = !open;
      button.setAttribute("aria-expanded", String(open));
      if (open) $("a, button", menu).focus();
    });
    menu.addEventListener("keydown", (e) => {
      if (e.key === "Escape") close(true);
    });
    document.addEventListener("click", (e) => {
      if (!menu.hidden && !e.target.closest(".export")) close(false);
    });
    for (const a of $$("a", menu)) a.addEventListener("click", () => close(false));
    $("#export-copy").addEventListener("click", async () => {
      try {
        const resp = await fetch("/api/export.json?" + query(period()), { cache: "no-store" });
        if (!resp.ok) throw new Error("the server answered " + resp.status);
        await navigator.clipboard.writeText(await resp.text());
        announce("Copied the statistics as JSON to the clipboard.");
      } catch (err) {
        announce("Could not copy to the clipboard: " + err.message);
      }
      close(true);
    });
  }

  // ---- token form (401) ----------------------------------------------------------------------------
  let errorTimer = 0;
  function showTokenError(text) {
    const error = $("#token-error");
    $("#token-input").setAttribute("aria-invalid", "true");
    // Emptied first, so the same message after another wrong try is announced again.
    error.textContent = "";
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => { error.textContent = text; }, 50);
  }

  function clearTokenError() {
    clearTimeout(errorTimer);
    $("#token-input").removeAttribute("aria-invalid");
    $("#token-error").textContent = "";
  }

  function setupTokenForm() {
    const form = $("#token-form");
    const input = $("#token-input");
    let busy = false;
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (busy) return;
      const token = input.value;
      if (!token) {
        showTokenError("Enter the token first.");
        input.focus();
        return;
      }
      busy = true;
      try {
        // In the body, never in a URL; the answer sets an HttpOnly cookie, nothing is stored here.
        const resp = await fetch("/api/session", {
          method: "POST",
          cache: "no-store",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ token }),
        });
        form.dataset.attempts = String(Number(form.dataset.attempts || 0) + 1);
        if (resp.ok) {
          input.value = "";
          clearTokenError();
          state.tokenAccepted = true;
          announce("Token accepted. Loading the statistics.");
          $("#main").focus(); // the form goes away; the keyboard lands where the numbers appear
          await load();
          state.tokenAccepted = false;
          return;
        }
        if (resp.status === 401) {
          showTokenError("That token is not correct. Check OTELSTATS_TOKEN on the server and try again.");
        } else {
          showTokenError("The token could not be checked: " + (await errorMessage(resp)));
        }
        input.select();
        input.focus();
      } catch (err) {
        form.dataset.attempts = String(Number(form.dataset.attempts || 0) + 1);
        showTokenError("The server could not be reached: " + err.message);
      } finally {
        busy = false;
      }
    });
  }

  function setupPeriods() {
    for (const a of $$(".periods a")) {
      a.addEventListener("click", (e) => {
        e.preventDefault();
        const url = new URL(location.href);
        url.searchParams.set("period", a.dataset.period);
        history.pushState(null, "", url);
        load();
      });
    }
    window.addEventListener("popstate", () => load());
  }

  function start() {
    setupPeriods();
    setupExport();
    setupViewToggles();
    setupSorting();
    setupTokenForm();
    $("#retry").addEventListener("click", () => load());
    // Theme or motion preference changed: redraw with the new colours/transitions, no refetch.
    const redraw = () => state.stats && document.body.dataset.state === "ready" && renderCharts(state.stats);
    motionQuery.addEventListener("change", redraw);
    for (const q of themeQueries) q.addEventListener("change", redraw);
    load();
    poll();
    setInterval(poll, pollMs);
  }

  start();
})();
