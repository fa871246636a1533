// One cabinet: its compartments laid out as the cabinet looks, each cell's state and
// dwell time; remote unlock (with a reason) and switches for roles that may; open
// alerts, recent events, and a temperature chart for temperature-controlled ones.

import { api, ApiError } from "../api.js";
import { $, h, replace, link, time, duration, since, debounce } from "../dom.js";
import { lineChart } from "../chart.js";
import { boot, may, showError, clearError } from "../shell.js";

const CABINET = $("#app").dataset.cabinet;
const PATH = `/cabinets/${encodeURIComponent(CABINET)}`;
const FAULTS = new Set(["forced_open", "held_open", "unlock_failed", "lock_fault", "temperature"]);
const HEIGHT = { xs: 1, s: 1, m: 2, l: 3, xl: 4 };
const LABEL = {
  free: "free",
  reserved: "reserved",
  occupied: "occupied",
  "door-open": "door open",
  "out-of-service": "out of service",
  disabled: "disabled",
  fault: "fault",
};

let me = null;
let cabinet = null;
let openAlerts = [];
let selected = null;

function faultsOf(id) {
  return openAlerts.filter((a) => a.compartment === id && FAULTS.has(a.kind));
}

export function cellState(comp, faults) {
  if (comp.door === "open") return "door-open";
  if (faults.length) return "fault";
  if (comp.out_of_service) return "out-of-service";
  if (!comp.enabled) return "disabled";
  if (comp.occupancy === "occupied") return "occupied";
  if (comp.occupancy === "reserved") return "reserved";
  return "free";
}

// Columns from ids like A1, A2, B1 (letters: the column, number: top to bottom);
// any other ids go in one column, in id order.
function columns(compartments) {
  const byColumn = new Map();
  for (const comp of compartments) {
    const m = /^([A-Za-z]+)-?(\d+)$/.exec(comp.id);
    const key = m ? m[1].toUpperCase() : "";
    const order = m ? Number(m[2]) : 0;
    if (!byColumn.has(key)) byColumn.set(key, []);
    byColumn.get(key).push({ comp, order });
  }
  return [...byColumn.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([, cells]) => cells.sort((x, y) => x.order - y.order || x.comp.id.localeCompare(y.comp.id)).map((c) => c.comp));
}

function cell(comp) {
  const faults = faultsOf(comp.id);
  const state = cellState(comp, faults);
  const dwell = comp.occupied_since ? duration(since(comp.occupied_since)) : null;
  const el = h(
    "button",
    {
      type: "button",
      class: `cell size-${comp.size}${selected === comp.id ? " selected" : ""}`,
      dataset: { compartment: comp.id, state },
      title: faults.map((f) => f.kind).join(", ") || LABEL[state],
      onclick: () => select(comp.id),
    },
    h("span", { class: "cell-id" }, comp.id),
    h("span", { class: "cell-state" }, LABEL[state]),
    dwell ? h("span", { class: "cell-dwell" }, dwell) : null,
    comp.temperature_controlled && comp.temperature_c !== null ? h("span", { class: "cell-temp" }, `${comp.temperature_c.toFixed(1)} °C`) : null,
  );
  el.style.flexGrow = String(HEIGHT[comp.size] || 1);
  return el;
}

function renderGrid() {
  const cols = columns(cabinet.compartments).map((col) => h("div", { class: "column" }, col.map(cell)));
  replace($("#grid"), cols);
  replace(
    $("#summary"),
    h("span", { class: `badge ${cabinet.online ? "ok" : "bad"}`, id: "online" }, cabinet.online ? "online" : "offline"),
    ` ${cabinet.name || ""} · site `,
    cabinet.site,
    ` · last seen ${time(cabinet.last_seen)} · agent ${cabinet.agent_version || "?"} · desired state v${cabinet.desired_version} (applied v${cabinet.reported_version})`,
  );
  renderDetail();
}

function fact(name, value) {
  return [h("dt", {}, name), h("dd", {}, value)];
}

function renderDetail() {
  const comp = cabinet && cabinet.compartments.find((c) => c.id === selected);
  $("#detail").hidden = !comp;
  if (!comp) return;
  replace($("#detail-title"), `Compartment ${comp.id}`);
  const faults = faultsOf(comp.id);
  replace(
    $("#detail-facts"),
    fact("state", LABEL[cellState(comp, faults)]),
    fact("size", comp.size),
    fact("door", comp.door),
    fact("lock", comp.lock),
    fact("occupancy", comp.occupancy),
    fact("parcel", comp.parcel ? link(comp.parcel, "parcels", comp.parcel) : "—"),
    fact("inside for", comp.occupied_since ? duration(since(comp.occupied_since)) : "—"),
    fact("enabled", comp.enabled ? "yes" : "no"),
    fact("out of service", comp.out_of_service ? "yes" : "no"),
    comp.temperature_controlled ? fact("temperature", comp.temperature_c === null ? "—" : `${comp.temperature_c.toFixed(1)} °C`) : null,
    faults.length ? fact("alerts", faults.map((f) => f.kind).join(", ")) : null,
  );
  const operate = me && may(me, "operate");
  $("#unlock-form").hidden = !operate;
  $("#switches").hidden = !operate;
  if (operate) {
    $("#toggle-enabled").textContent = comp.enabled ? "Disable" : "Enable";
    $("#toggle-service").textContent = comp.out_of_service ? "Back in service" : "Out of service";
  }
}

function select(id) {
  selected = id;
  $("#detail-status").textContent = "";
  renderGrid();
}

async function loadCabinet() {
  cabinet = await api(PATH);
  renderGrid();
}

async function loadAlerts() {
  const page = await api("/alerts", { query: { cabinet: CABINET, open: "true", limit: 200 } });
  openAlerts = page.items;
  replace(
    $("#alerts"),
    openAlerts.map((a) =>
      h("tr", { dataset: { alert: String(a.id) } }, h("td", {}, time(a.raised_at)), h("td", {}, a.compartment || "—"), h("td", {}, a.kind), h("td", {}, a.detail || "")),
    ),
  );
  if (cabinet) renderGrid();
}

async function loadEvents() {
  const page = await api("/events", { query: { cabinet: CABINET, limit: 15 } });
  replace(
    $("#events"),
    page.items.map((e) =>
      h("tr", {}, h("td", {}, time(e.at)), h("td", {}, e.source), h("td", {}, e.type), h("td", {}, e.compartment || "—"), h("td", {}, e.actor || "")),
    ),
  );
}

async function loadTemperature() {
  const controlled = cabinet.compartments.filter((c) => c.temperature_controlled);
  $("#temperature").hidden = !controlled.length;
  if (!controlled.length) return;
  const series = await api(`${PATH}/telemetry`, { query: { bucket: "5m" } });
  lineChart(
    $("#temperature-chart"),
    controlled.map((c) => ({
      name: c.id,
      points: series.items.map((b) => ({ x: new Date(b.bucket), y: b.compartment_temps_c[c.id] ?? null })),
    })),
    { unit: "°" },
  );
}

async function act(what, call) {
  const status = $("#detail-status");
  status.textContent = `${what} …`;
  try {
    const result = await call();
    status.textContent = result;
    clearError();
  } catch (err) {
    status.textContent = `${what} refused: ${err.message}`;
  }
}

$("#unlock-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = selected;
  const reason = $("#unlock-reason").value.trim();
  act(`Unlocking ${id}`, async () => {
    const command = await api(`${PATH}/compartments/${encodeURIComponent(id)}/unlock`, {
      method: "POST",
      body: { reason },
      query: { wait: 10 },
    });
    return `Unlock ${id}: ${command.status}${command.outcome_reason ? ` (${command.outcome_reason})` : ""}`;
  });
});

function patch(body, label) {
  const id = selected;
  act(label, async () => {
    await api(`${PATH}/compartments/${encodeURIComponent(id)}`, { method: "PATCH", body });
    await loadCabinet();
    return `${label}: done`;
  });
}

$("#toggle-enabled").addEventListener("click", () => {
  const comp = cabinet.compartments.find((c) => c.id === selected);
  patch({ enabled: !comp.enabled }, comp.enabled ? `Disabling ${comp.id}` : `Enabling ${comp.id}`);
});
$("#toggle-service").addEventListener("click", () => {
  const comp = cabinet.compartments.find((c) => c.id === selected);
  patch({ out_of_service: !comp.out_of_service }, `Switching ${comp.id}`);
});

let want = new Set();
const refresh = debounce(async () => {
  const now = want;
  want = new Set();
  try {
    if (now.has("cabinet")) await loadCabinet();
    if (now.has("alerts")) await loadAlerts();
    if (now.has("events")) await loadEvents();
    clearError();
  } catch (err) {
    showError(err);
  }
}, 100);

function onNote(note) {
  if (note.kind === "resync") want = new Set(["cabinet", "alerts", "events"]);
  else if (note.cabinet !== CABINET) return;
  else if (note.kind === "compartment" || note.kind === "presence" || note.kind === "parcel") want.add("cabinet");
  else if (note.kind === "alert") want.add("alerts");
  else if (note.kind === "events") want.add("events");
  else return;
  refresh();
}

async function start() {
  me = await boot({ onNote });
  try {
    await loadCabinet();
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      $("#app").dataset.missing = "true";
      showError(`No cabinet ${CABINET} (or not in your sites).`);
      return;
    }
    throw err;
  }
  await Promise.all([loadAlerts(), loadEvents(), loadTemperature()]);
  // Dwell times move with the clock.
  setInterval(() => cabinet && renderGrid(), 30000);
}

start().catch(showError);
