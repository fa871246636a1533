// Occupancy and dwell time per site over time, from GET /stats/occupancy (the
// database's time buckets), summed over each site's cabinets.

import { api } from "../api.js";
import { $, h, replace } from "../dom.js";
import { lineChart } from "../chart.js";
import { boot, fillSites, showError, clearError } from "../shell.js";

const SPAN = { h: 3600e3, d: 86400e3 };
let sites = [];

function perBucket(items) {
  const buckets = new Map();
  for (const p of items) {
    const b = buckets.get(p.bucket) || { n: 0, occupied: 0, reserved: 0, dwellSum: 0, dwellMax: null };
    b.n += p.compartments;
    b.occupied += p.occupied;
    b.reserved += p.reserved;
    if (p.dwell_avg_s !== null) b.dwellSum += p.dwell_avg_s * p.occupied;
    if (p.dwell_max_s !== null) b.dwellMax = Math.max(b.dwellMax ?? 0, p.dwell_max_s);
    buckets.set(p.bucket, b);
  }
  return [...buckets.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([t, b]) => ({ x: new Date(t), ...b }));
}

async function load() {
  const [span, bucket] = $("#filter").elements.period.value.split("/");
  const ms = Number(span.slice(0, -1)) * SPAN[span.slice(-1)];
  const since = new Date(Date.now() - ms).toISOString();
  const sections = [];
  for (const site of sites) {
    const series = await api("/stats/occupancy", { query: { site: site.id, bucket, since } });
    const points = perBucket(series.items);
    const occupancy = h("div", { class: "chart" });
    const dwell = h("div", { class: "chart" });
    lineChart(occupancy, [
      { name: "occupied (%)", points: points.map((p) => ({ x: p.x, y: p.n ? (100 * p.occupied) / p.n : null })) },
      { name: "reserved (%)", points: points.map((p) => ({ x: p.x, y: p.n ? (100 * p.reserved) / p.n : null })) },
    ], { unit: "%" });
    lineChart(dwell, [
      { name: "average dwell (h)", points: points.map((p) => ({ x: p.x, y: p.occupied ? p.dwellSum / p.occupied / 3600 : null })) },
      { name: "longest dwell (h)", points: points.map((p) => ({ x: p.x, y: p.dwellMax === null ? null : p.dwellMax / 3600 })) },
    ], { unit: "h" });
    sections.push(
      h("section", { class: "site", dataset: { site: site.id } },
        h("h2", {}, site.name, " ", h("small", {}, `(${site.id})`)),
        h("div", { class: "charts" },
          h("figure", {}, h("figcaption", {}, "Occupancy"), occupancy),
          h("figure", {}, h("figcaption", {}, "Dwell time"), dwell))),
    );
  }
  replace($("#charts"), sections);
  clearError();
}

$("#filter").addEventListener("submit", (event) => {
  event.preventDefault();
  load().catch(showError);
});

async function start() {
  await boot();
  sites = await fillSites(document.createElement("select"));
  await load();
}

start().catch(showError);
