// Fleet overview: each site with its cabinets: online, occupancy, doors open, open alerts.

import { api, all } from "../api.js";
import { $, h, replace, link, time, debounce } from "../dom.js";
import { boot, showError, clearError } from "../shell.js";

const cabinets = new Map(); // id -> detail
let sites = [];
let alerts = [];

function counts(detail) {
  const c = { n: 0, occupied: 0, reserved: 0, free: 0, open: 0, off: 0 };
  for (const comp of detail.compartments) {
    c.n += 1;
    c[comp.occupancy] += 1;
    if (comp.door === "open") c.open += 1;
    if (!comp.enabled || comp.out_of_service) c.off += 1;
  }
  return c;
}

function bar(c) {
  const el = h("div", { class: "bar", title: `${c.occupied} occupied, ${c.reserved} reserved, ${c.free} free` });
  for (const part of ["occupied", "reserved", "free"]) {
    const seg = h("span", { class: `seg ${part}` });
    seg.style.flexGrow = String(c[part]);
    el.appendChild(seg);
  }
  return el;
}

function row(detail) {
  const c = counts(detail);
  const open = alerts.filter((a) => a.cabinet === detail.id).length;
  return h(
    "tr",
    { dataset: { cabinet: detail.id, online: String(detail.online) } },
    h("td", {}, link(detail.id, "cabinets", detail.id)),
    h("td", {}, detail.name || ""),
    h("td", {}, h("span", { class: `badge ${detail.online ? "ok" : "bad"}` }, detail.online ? "online" : "offline")),
    h("td", { class: "occupancy" }, bar(c), ` ${c.occupied} occupied · ${c.reserved} reserved · ${c.free} free of ${c.n}`),
    h("td", {}, String(c.open)),
    h("td", { class: open ? "alerting" : "" }, String(open)),
    h("td", {}, time(detail.last_seen)),
  );
}

function render() {
  const list = [...cabinets.values()];
  const online = list.filter((d) => d.online).length;
  const total = list.reduce((t, d) => {
    const c = counts(d);
    t.n += c.n;
    t.occupied += c.occupied;
    return t;
  }, { n: 0, occupied: 0 });
  replace(
    $("#totals"),
    h("div", { class: "stat" }, h("strong", {}, String(sites.length)), " sites"),
    h("div", { class: "stat" }, h("strong", { id: "online-count" }, `${online}/${list.length}`), " cabinets online"),
    h("div", { class: "stat" }, h("strong", {}, total.n ? `${Math.round((100 * total.occupied) / total.n)}%` : "—"), " occupied"),
    h("div", { class: "stat" }, h("strong", { id: "alert-count" }, String(alerts.length)), " open alerts"),
  );
  const sections = sites.map((site) => {
    const mine = list.filter((d) => d.site === site.id).sort((a, b) => a.id.localeCompare(b.id));
    return h(
      "section",
      { class: "site", dataset: { site: site.id } },
      h("h2", {}, site.name, " ", h("small", {}, `(${site.id})`)),
      mine.length
        ? h(
            "table",
            { class: "list" },
            h("thead", {}, h("tr", {}, ["cabinet", "name", "status", "occupancy", "doors open", "open alerts", "last seen"].map((t) => h("th", {}, t)))),
            h("tbody", {}, mine.map(row)),
          )
        : h("p", { class: "hint" }, "No cabinets yet."),
    );
  });
  replace($("#sites"), sections);
}

async function loadCabinet(id) {
  try {
    cabinets.set(id, await api(`/cabinets/${encodeURIComponent(id)}`));
  } catch (err) {
    if (err.status === 404) cabinets.delete(id);
    else throw err;
  }
}

async function loadAlerts() {
  alerts = await all("/alerts", { open: "true" });
}

async function loadAll() {
  sites = await all("/sites");
  const list = await all("/cabinets");
  cabinets.clear();
  // A few at a time: each is one small request.
  for (let i = 0; i < list.length; i += 6) {
    await Promise.all(list.slice(i, i + 6).map((c) => loadCabinet(c.id)));
  }
  await loadAlerts();
  render();
}

const dirty = new Set();
let alertsDirty = false;
let everything = false;
const flush = debounce(async () => {
  const ids = [...dirty];
  dirty.clear();
  const reloadAll = everything;
  everything = false;
  const reloadAlerts = alertsDirty;
  alertsDirty = false;
  try {
    if (reloadAll) return await loadAll();
    await Promise.all(ids.map(loadCabinet));
    if (reloadAlerts) await loadAlerts();
    render();
    clearError();
  } catch (err) {
    showError(err);
  }
}, 150);

function onNote(note) {
  if (note.kind === "resync" || (note.kind === "cabinet" && !cabinets.has(note.cabinet))) everything = true;
  else if (["presence", "compartment", "cabinet"].includes(note.kind)) dirty.add(note.cabinet);
  else if (note.kind === "alert") alertsDirty = true;
  else return;
  flush();
}

boot({ onNote }).then(loadAll).catch(showError);
