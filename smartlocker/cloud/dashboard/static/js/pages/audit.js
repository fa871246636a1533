// The audit trail: cabinet events and operator actions, filtered, newest first.

import { api } from "../api.js";
import { $, h, replace, link, time } from "../dom.js";
import { boot, fillSites, showError, clearError } from "../shell.js";

let query = {};
let cursor = null;

function detail(d) {
  if (!d) return "";
  const text = JSON.stringify(d);
  return text.length > 160 ? `${text.slice(0, 157)}…` : text;
}

function row(e) {
  return h(
    "tr",
    { dataset: { source: e.source, type: e.type } },
    h("td", {}, time(e.at)),
    h("td", {}, e.source),
    h("td", {}, e.type),
    h("td", {}, e.site || ""),
    h("td", {}, e.cabinet ? link(e.cabinet, "cabinets", e.cabinet) : ""),
    h("td", {}, e.compartment || ""),
    h("td", {}, e.actor || ""),
    h("td", { class: "detail" }, detail(e.detail)),
  );
}

async function load(more = false) {
  const page = await api("/events", { query: { ...query, limit: 50, cursor: more ? cursor : null } });
  cursor = page.next_cursor;
  const rows = page.items.map(row);
  if (more) $("#events").append(...rows);
  else replace($("#events"), rows);
  $("#more").hidden = !cursor;
  clearError();
}

$("#filter").addEventListener("submit", (event) => {
  event.preventDefault();
  query = {};
  for (const [name, value] of new FormData($("#filter")).entries()) {
    if (!value) continue;
    query[name] = name === "since" || name === "until" ? new Date(value).toISOString() : value;
  }
  load().catch(showError);
});
$("#more").addEventListener("click", () => load(true).catch(showError));

async function start() {
  await boot();
  await fillSites($("#site-filter"));
  await load();
}

start().catch(showError);
