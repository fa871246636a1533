// Alerts, newest first, with acknowledgement for roles that may.

import { api } from "../api.js";
import { $, h, replace, link, time, debounce } from "../dom.js";
import { boot, may, fillSites, showError, clearError } from "../shell.js";

let me = null;
let query = { open: "true" };

function row(a) {
  const ack = may(me, "operate") && !a.acked_at
    ? h("button", { type: "button", class: "ack", onclick: () => acknowledge(a.id) }, "Acknowledge")
    : null;
  return h(
    "tr",
    { dataset: { alert: String(a.id), acked: String(Boolean(a.acked_at)) } },
    h("td", {}, time(a.raised_at)),
    h("td", {}, a.site),
    h("td", {}, link(a.cabinet, "cabinets", a.cabinet)),
    h("td", {}, a.compartment || "—"),
    h("td", {}, a.kind),
    h("td", {}, a.detail || ""),
    h("td", {}, `${a.occurrences}× · ${time(a.last_seen_at)}${a.cleared_at ? ` · cleared ${time(a.cleared_at)}` : ""}`),
    h("td", { class: "acked" }, a.acked_at ? `${time(a.acked_at)} by ${a.acked_by}` : "—"),
    h("td", {}, ack),
  );
}

async function load() {
  const page = await api("/alerts", { query: { ...query, limit: 200 } });
  replace($("#alerts"), page.items.map(row));
  clearError();
}

async function acknowledge(id) {
  try {
    await api(`/alerts/${id}/ack`, { method: "POST" });
    await load();
  } catch (err) {
    showError(err);
  }
}

$("#filter").addEventListener("submit", (event) => {
  event.preventDefault();
  query = {};
  for (const [name, value] of new FormData($("#filter")).entries()) if (value) query[name] = value;
  load().catch(showError);
});

const reload = debounce(() => load().catch(showError), 200);

async function start() {
  me = await boot({ onNote: (note) => (note.kind === "alert" || note.kind === "resync") && reload() });
  await fillSites($("#site-filter"));
  await load();
}

start().catch(showError);
