/* Formatting for people: compact numbers (1.2M) with the exact figure alongside, and text-only
   escaping for plotly. Nothing here computes a statistic: it only formats what /api/stats sent. */
"use strict";
(function (global) {
  const compactFmt = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
  const exactFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
  const oneDecimal = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const NONE = "—";

  /** [short text, exact text] for a value of a given kind: count | rate | ms | percent. */
  function format(value, kind) {
    if (value === null || value === undefined) {
      return [NONE, "no qualifying calls in this period"];
    }
    switch (kind) {
      case "count":
        return [compactFmt.format(value), exactFmt.format(value)];
      case "rate":
        return [oneDecimal.format(value), exactFmt.format(value) + " tokens per second"];
      case "ms":
        if (value >= 1000) {
          return [oneDecimal.format(value / 1000) + " s", exactFmt.format(value) + " ms"];
        }
        return [Math.round(value).toString() + " ms", exactFmt.format(value) + " ms"];
      case "percent":
        return [oneDecimal.format(value) + "%", exactFmt.format(value) + "%"];
      default:
        return [String(value), String(value)];
    }
  }

  /** Exact number for tables and labels; the dash for "nothing qualified". */
  function exact(value) {
    return value === null || value === undefined ? NONE : exactFmt.format(value);
  }

  /* plotly renders names and hover text through its own HTML-like mini markup (<b>, <a href>,
     <br>, entities). Escaping &, < and > makes it show a hostile model name literally. */
  function plotlyText(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  global.OtelstatsFormat = { format, exact, plotlyText, NONE };
})(window);
