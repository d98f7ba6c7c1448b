/* Runs first (a plain script at the top of <head>): reads the period from the URL and the browser's
   timezone, and starts the first /api/stats request while plotly.js is still downloading. */
"use strict";
(function (global) {
  const PERIODS = ["today", "7d", "30d", "all"];
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

  function period() {
    const p = new URLSearchParams(location.search).get("period");
    return PERIODS.includes(p) ? p : "7d";
  }

  function query(p) {
    return "period=" + encodeURIComponent(p) + "&tz=" + encodeURIComponent(tz);
  }

  const firstUrl = "/api/stats?" + query(period());
  const first = fetch(firstUrl, { cache: "no-store", headers: { Accept: "application/json" } });
  first.catch(() => {}); // handled when dashboard.js takes it; avoid an unhandled-rejection report

  /** The early response for `url`, once; later requests go to the network. */
  function take(url) {
    if (url !== firstUrl || global.OtelstatsBoot.taken) return null;
    global.OtelstatsBoot.taken = true;
    return first;
  }

  global.OtelstatsBoot = { PERIODS, tz, period, query, take, taken: false };
})(window);
