//! The HTML report: one self-contained page (no file or network fetched) with the summary,
//! the expectations, a timeline of the cluster (faults shaded; nodes up, suspected and dead;
//! tasks running and ended, reassignments) and, when load ran, charts of throughput, latency
//! percentiles over time and the latency distribution. The data sits in the page as JSON; a
//! small script draws the charts as SVG and marks the page `data-rendered` with the number of
//! charts drawn, which the browser tests check.

use dtest_core::measure::{self, LATENCY_US_MAX};
use dtest_core::report::{Mode, Report};

/// The page for `report`.
pub fn page(report: &Report) -> String {
    let distribution = report
        .histogram
        .as_deref()
        .and_then(|h| measure::decode(h, 3).ok())
        .filter(|h| !h.is_empty())
        .map(|h| {
            // The percentile spectrum, as HdrHistogram plots it: 0%, 90%, 99%, 99.9%, … finely.
            (0..=50)
                .map(|k| {
                    let q = 1.0 - 10f64.powf(-f64::from(k) / 10.0);
                    let q = if k == 50 { 1.0 } else { q };
                    let us = h.value_at_quantile(q).min(LATENCY_US_MAX);
                    serde_json::json!({ "q": q, "ms": us as f64 / 1e3 })
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    // The timeline is left out of the JSON report; the page draws it (an empty one, drawn
    // nowhere, for `dtest load`).
    let timeline = (report.mode != Mode::Load).then_some(&report.timeline);
    let data = serde_json::json!({ "report": report, "distribution": distribution, "timeline": timeline });
    // `</` cannot end the script element from inside the data.
    let data = data.to_string().replace("</", "<\\/");
    let title = escape(&format!("dtest {}: {}", report.mode.name(), report.scenario));
    TEMPLATE.replace("{{title}}", &title).replace("{{data}}", &data)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const TEMPLATE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}}</title>
<style>
  body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #1d2430; padding: 0 1rem; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  .verdict { font-weight: 600; padding: .1rem .5rem; border-radius: .3rem; }
  .passed { background: #d7f5dd; color: #14532d; } .failed { background: #fde1e1; color: #7f1d1d; }
  table { border-collapse: collapse; margin: .5rem 0 1.5rem; }
  td, th { padding: .2rem .8rem .2rem 0; text-align: left; vertical-align: top; }
  th { color: #5b6472; font-weight: 500; }
  .chart { margin: 1rem 0 2rem; }
  .chart h2 { font-size: 1.05rem; margin: 0 0 .3rem; }
  svg { width: 100%; height: auto; background: #fbfcfe; border: 1px solid #e3e7ee; border-radius: .3rem; }
  .axis text { font-size: 11px; fill: #5b6472; } .axis line, .grid line { stroke: #e3e7ee; }
  .legend { font-size: 12px; color: #5b6472; } .legend span { display: inline-block; width: .8rem; height: .25rem; margin: 0 .3rem .15rem 1rem; vertical-align: middle; }
  .line { fill: none; stroke-width: 1.8; }
  .fault { fill: #f59e0b; fill-opacity: .16; } .legend .fault-key { background: #f59e0b; opacity: .4; height: .7rem; }
</style>
</head>
<body>
<h1 id="title"></h1>
<div id="summary"></div>
<div id="charts"></div>
<script id="data" type="application/json">{{data}}</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const r = data.report;
const NS = "http://www.w3.org/2000/svg";
const colors = ["#2563eb", "#dc2626", "#9333ea", "#16a34a"];

function el(tag, attrs, parent, text) {
  const e = document.createElementNS(tag === "svg" || parent instanceof SVGElement ? NS : "http://www.w3.org/1999/xhtml", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function fmt(v) {
  if (typeof v !== "number") return String(v);
  return Math.abs(v) >= 100 || Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(2);
}

function summary() {
  const passed = r.expectations.every(e => e.ok) && r.violations.length === 0;
  const title = document.getElementById("title");
  title.textContent = "dtest " + r.mode + ": " + r.scenario + " ";
  el("span", { class: "verdict " + (passed ? "passed" : "failed") }, title, passed ? "PASSED" : "FAILED");
  if (r.interrupted) title.appendChild(document.createTextNode(" (interrupted: what ran until the stop)"));
  const box = document.getElementById("summary");
  const t = el("table", {}, box);
  const row = (k, v) => { const tr = el("tr", {}, t); el("th", {}, tr, k); el("td", {}, tr, v); };
  if (r.requests !== undefined) {
    row("requests", fmt(r.requests) + " in " + fmt(r.duration_s) + " s: " + fmt(r.rps) + " per second");
    row("errors", fmt(r.errors) + " (" + fmt(r.requests ? 100 * r.errors / r.requests : 0) + "%), " + fmt(r.dropped) + " arrivals dropped, " + fmt(r.late) + " sent late");
    if (r.latency_ms) row("latency", "p50 " + fmt(r.latency_ms.p50) + " ms, p90 " + fmt(r.latency_ms.p90) + " ms, p99 " + fmt(r.latency_ms.p99) + " ms, max " + fmt(r.latency_ms.max) + " ms (from each request's due time)");
    if (r.latency_uncorrected_ms) row("uncorrected", "p50 " + fmt(r.latency_uncorrected_ms.p50) + " ms, p99 " + fmt(r.latency_uncorrected_ms.p99) + " ms (from sending)");
    if (r.status) row("answers", Object.entries(r.status).map(([k, v]) => k + " " + fmt(v)).join(", "));
  }
  if (r.tasks && r.mode !== "load") row("tasks", fmt(r.tasks.submitted) + " submitted, " + fmt(r.tasks.completed) + " completed, " + fmt(r.tasks.failed) + " failed, " + fmt(r.tasks.lost) + " lost");
  if (r.nodes && r.mode !== "load") row("nodes", fmt(r.nodes.total) + " nodes, " + fmt(r.nodes.declared_dead) + " declared dead");
  if (r.recovery) {
    const c = r.recovery.conditions.map(x => x.condition.replace("_", " ") + (x.recovered_after_ms === undefined ? " never" : " +" + fmt(x.recovered_after_ms / 1000) + " s"));
    row("liveness", "after the last fault healed at " + fmt(r.recovery.quiet_from_ms / 1000) + " s: " + c.join(", ") + " (bound " + fmt(r.recovery.bound_ms / 1000) + " s)");
  }
  if (r.expectations.length) {
    el("h2", {}, box, "Expectations");
    const e = el("table", {}, box);
    for (const x of r.expectations) {
      const tr = el("tr", {}, e);
      el("td", { class: "verdict " + (x.ok ? "passed" : "failed") }, tr, x.ok ? "ok" : "FAIL");
      el("td", {}, tr, x.name); el("td", {}, tr, "actual " + fmt(x.actual) + ", limit " + fmt(x.limit));
    }
  }
  if (r.alerts && r.alerts.length) {
    el("h2", {}, box, "Alerts");
    const a = el("table", {}, box);
    for (const x of r.alerts) {
      const tr = el("tr", {}, a);
      el("td", {}, tr, x.severity); el("td", {}, tr, x.rule + " on " + x.subject);
      el("td", {}, tr, "fired at " + fmt(x.fired_at_ms / 1000) + " s (value " + fmt(x.value) + "), " +
        (x.resolved_at_ms === null ? "still firing at the end" : "resolved at " + fmt(x.resolved_at_ms / 1000) + " s"));
    }
  }
  if (r.violations.length) {
    el("h2", {}, box, "Invariant violations");
    const ul = el("ul", {}, box);
    for (const v of r.violations) el("li", {}, ul, v.what);
  }
}

// A line chart: xs, a list of named series, axis labels; `logx` draws x as percentiles.
function chart(title, xs, series, xlabel, ylabel, opts) {
  opts = opts || {};
  const box = el("div", { class: "chart" }, document.getElementById("charts"));
  el("h2", {}, box, title);
  const legend = el("div", { class: "legend" }, box);
  series.forEach((s, i) => { el("span", { style: "background:" + colors[i] }, legend); legend.appendChild(document.createTextNode(s.name)); });
  const W = 1000, H = 300, L = 60, R = 15, T = 12, B = 38;
  const svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": title }, box);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1e-9);
  const ymax = Math.max(1e-9, ...series.flatMap(s => s.ys)) * 1.08;
  const X = x => L + (W - L - R) * (x - x0) / (x1 - x0);
  const Y = y => H - B - (H - B - T) * y / ymax;
  // Windows (faults) shaded behind everything, each with its kind as a tooltip.
  for (const w of opts.spans || []) {
    const a = X(Math.max(x0, w.from_s)), b = X(Math.min(x1, w.to_s));
    const rect = el("rect", { class: "fault", x: a.toFixed(1), y: T, width: Math.max(1, b - a).toFixed(1), height: H - B - T, "data-kind": w.kind }, svg);
    el("title", {}, rect, w.kind + ": " + fmt(w.from_s) + " s to " + fmt(w.to_s) + " s");
  }
  if ((opts.spans || []).length) { el("span", { class: "fault-key" }, legend); legend.appendChild(document.createTextNode("faults")); }
  const axis = el("g", { class: "axis" }, svg);
  for (let i = 0; i <= 4; i++) {
    const y = ymax * i / 4;
    el("line", { x1: L, x2: W - R, y1: Y(y), y2: Y(y) }, axis);
    el("text", { x: L - 6, y: Y(y) + 4, "text-anchor": "end" }, axis, fmt(Math.round(y * 100) / 100));
  }
  const ticks = opts.xticks || Array.from({ length: 6 }, (_, i) => ({ x: x0 + (x1 - x0) * i / 5, label: fmt(Math.round(x0 + (x1 - x0) * i / 5)) }));
  for (const t of ticks) el("text", { x: X(t.x), y: H - B + 16, "text-anchor": "middle" }, axis, t.label);
  el("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, axis, xlabel);
  el("text", { x: 12, y: T + (H - B) / 2, transform: "rotate(-90 12 " + (T + (H - B) / 2) + ")", "text-anchor": "middle" }, axis, ylabel);
  series.forEach((s, i) => {
    const d = s.ys.map((y, j) => (j ? "L" : "M") + X(xs[j]).toFixed(1) + "," + Y(y).toFixed(1)).join(" ");
    const line = el("path", { class: "line", d: d, stroke: colors[i], "data-series": s.name }, svg);
    if (s.dash) line.setAttribute("stroke-dasharray", "6 4");
  });
  return svg;
}

function charts() {
  const s = r.series || [];
  let drawn = 0;
  const tl = data.timeline;
  if (tl && tl.t_s.length > 1) {
    chart("Nodes over time", tl.t_s, [
      { name: "up", ys: tl.nodes_up },
      { name: "dead", ys: tl.nodes_dead },
      { name: "suspected", ys: tl.nodes_suspected },
    ], "seconds", "nodes", { spans: tl.faults });
    drawn++;
    chart("Tasks over time", tl.t_s, [
      { name: "running", ys: tl.tasks_running },
      { name: "reassigned (so far)", ys: tl.reassignments },
      { name: "ended", ys: tl.tasks_ended, dash: true },
    ], "seconds", "tasks", { spans: tl.faults });
    drawn++;
  }
  if (s.length) {
    const t = s.map(p => p.t_s);
    chart("Throughput", t, [
      { name: "requests/s", ys: s.map(p => p.requests) },
      { name: "errors/s", ys: s.map(p => p.errors) },
      { name: "dropped/s", ys: s.map(p => p.dropped) },
    ], "seconds", "per second");
    drawn++;
    chart("Latency over time", t, [
      { name: "p50", ys: s.map(p => p.p50_ms) },
      { name: "p99", ys: s.map(p => p.p99_ms) },
      { name: "p99 uncorrected", ys: s.map(p => p.p99_uncorrected_ms), dash: true },
    ], "seconds", "ms");
    drawn++;
  }
  const dist = data.distribution;
  if (dist.length) {
    // x: the number of nines, so the tail gets the room it deserves.
    const nines = q => q >= 1 ? 5 : -Math.log10(1 - q);
    const xticks = [0, 1, 2, 3, 4, 5].map(n => ({ x: n, label: n === 0 ? "0%" : n === 5 ? "max" : (100 - 100 / 10 ** n) + "%" }));
    chart("Latency distribution (corrected, all requests)", dist.map(p => nines(p.q)), [
      { name: "latency", ys: dist.map(p => p.ms) },
    ], "percentile", "ms", { xticks: xticks });
    drawn++;
  }
  return drawn;
}

summary();
document.body.dataset.rendered = String(charts());
</script>
</body>
</html>
"##;
