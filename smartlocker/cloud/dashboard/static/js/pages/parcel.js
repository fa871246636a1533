// One parcel: its facts, its history, and the actions its state and the key allow.

import { api } from "../api.js";
import { $, h, replace, link, time, duration, since } from "../dom.js";
import { boot, may, showError, clearError } from "../shell.js";

const PARCEL = $("#app").dataset.parcel;
const PATH = `/parcels/${encodeURIComponent(PARCEL)}`;
let me = null;
let parcel = null;

function fact(name, value) {
  return [h("dt", {}, name), h("dd", {}, value ?? "—")];
}

function render() {
  const p = parcel;
  replace(
    $("#facts"),
    fact("state", h("span", { class: `pill ${p.state}`, id: "state" }, p.state)),
    fact("reference", p.reference),
    fact("recipient", p.recipient ? `${p.recipient} (${p.notify_channel})` : null),
    fact("where", h("span", {}, `${p.site} · `, link(p.cabinet, "cabinets", p.cabinet), ` / ${p.compartment} (${p.size})`)),
    fact("direction", p.direction),
    fact("reserved", time(p.reserved_at)),
    fact("deposited", p.deposited_at ? `${time(p.deposited_at)}${p.state === "deposited" ? ` (${duration(since(p.deposited_at))} ago)` : ""}` : null),
    fact("picked up", p.picked_up_at ? time(p.picked_up_at) : null),
    fact("deadline", p.deadline ? time(p.deadline) : null),
    fact("fee", p.fee ? `${p.fee} ${p.fee_currency}` : null),
    fact("created by", p.created_by),
  );
  replace(
    $("#history"),
    p.history.map((e) => h("tr", {}, h("td", {}, time(e.at)), h("td", {}, e.from_state || "—"), h("td", {}, e.to_state), h("td", {}, e.actor), h("td", {}, e.cause || ""))),
  );
  const parcels = may(me, "parcels");
  const operate = may(me, "operate");
  $("#cancel").hidden = !(parcels && p.state === "reserved");
  $("#return").hidden = !(parcels && p.state === "expired");
  $("#resend").hidden = !(operate && p.state === "deposited");
  $("#extend-form").hidden = !(operate && (p.state === "deposited" || p.state === "expired"));
}

async function load() {
  parcel = await api(PATH);
  render();
  clearError();
}

async function act(label, call) {
  const status = $("#action-status");
  status.textContent = `${label} …`;
  try {
    status.textContent = `${label}: ${await call()}`;
    await load();
  } catch (err) {
    status.textContent = `${label} refused: ${err.message}`;
  }
}

$("#cancel").addEventListener("click", () => act("Cancel", async () => (await api(`${PATH}/cancel`, { method: "POST" })).state));
$("#return").addEventListener("click", () =>
  act("Open for return", async () => (await api(`${PATH}/return`, { method: "POST", query: { wait: 10 } })).status),
);
$("#resend").addEventListener("click", () =>
  act("Resend code", async () => ((await api(`${PATH}/resend-code`, { method: "POST" })).notification ? "sent" : "no contact to send to")),
);
$("#extend-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const local = $("#extend-deadline").value;
  act("Extend", async () => {
    const deadline = new Date(local).toISOString();
    return time((await api(`${PATH}/extend`, { method: "POST", body: { deadline } })).deadline);
  });
});

async function start() {
  me = await boot({ onNote: (note) => ((note.kind === "parcel" && note.id === PARCEL) || note.kind === "resync") && load().catch(showError) });
  await load();
}

start().catch(showError);
