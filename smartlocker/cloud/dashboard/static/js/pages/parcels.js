// Parcels: search by reference, recipient, state and site; newest first.

import { api } from "../api.js";
import { $, h, replace, link, time, debounce } from "../dom.js";
import { boot, fillSites, showError, clearError } from "../shell.js";

const form = $("#search");
let cursor = null;
let query = {};

function row(p) {
  return h(
    "tr",
    { dataset: { parcel: p.id, state: p.state } },
    h("td", {}, link(p.id, "parcels", p.id)),
    h("td", {}, p.reference || ""),
    h("td", {}, h("span", { class: `pill ${p.state}` }, p.state)),
    h("td", {}, p.site),
    h("td", {}, link(`${p.cabinet} / ${p.compartment}`, "cabinets", p.cabinet)),
    h("td", {}, p.recipient || ""),
    h("td", {}, time(p.reserved_at)),
    h("td", {}, time(p.deadline)),
  );
}

async function load(more = false) {
  const page = await api("/parcels", { query: { ...query, limit: 50, cursor: more ? cursor : null } });
  cursor = page.next_cursor;
  const rows = page.items.map(row);
  if (more) $("#parcels").append(...rows);
  else replace($("#parcels"), rows);
  $("#more").hidden = !cursor;
  clearError();
}

function readForm() {
  const data = new FormData(form);
  query = {};
  for (const [name, value] of data.entries()) if (String(value).trim()) query[name] = String(value).trim();
  const url = new URL(window.location.href);
  url.search = new URLSearchParams(query).toString();
  window.history.replaceState(null, "", url);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  readForm();
  load().catch(showError);
});
$("#more").addEventListener("click", () => load(true).catch(showError));

const reload = debounce(() => load().catch(showError), 300);

async function start() {
  await boot({ onNote: (note) => (note.kind === "parcel" || note.kind === "resync") && reload() });
  await fillSites($("#site-filter"));
  const params = new URLSearchParams(window.location.search);
  for (const [name, value] of params.entries()) if (form.elements[name]) form.elements[name].value = value;
  readForm();
  await load();
}

start().catch(showError);
