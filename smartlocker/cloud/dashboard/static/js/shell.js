// What every signed-in page does first: require a key, learn who it is (GET /me),
// fill the header, wire sign-out, and open the live feed.

import { api, getKey, signOut } from "./api.js";
import { $, replace } from "./dom.js";
import { connectLive } from "./live.js";

export async function boot({ onNote } = {}) {
  if (!getKey()) {
    const next = window.location.pathname + window.location.search;
    window.location.assign(`/dashboard/signin?next=${encodeURIComponent(next)}`);
    return new Promise(() => {});
  }
  $("#signout").addEventListener("click", signOut);
  const me = await api("/me");
  const scope = me.sites === null ? "all sites" : me.sites.join(", ");
  replace($("#whoami"), `${me.name} · ${me.role} · ${scope}`);
  document.body.dataset.role = me.role;
  if (onNote) {
    const badge = $("#live");
    connectLive(onNote, (state) => {
      badge.dataset.state = state;
    });
  } else {
    $("#live").hidden = true;
  }
  return me;
}

export function may(me, action) {
  return me.may.includes(action);
}

export function showError(err) {
  const box = $("#error");
  box.textContent = err && err.message ? err.message : String(err);
  box.hidden = false;
}

export function clearError() {
  $("#error").hidden = true;
}

// Fills a <select> with the key's sites (for filters).
export async function fillSites(select) {
  const sites = await api("/sites", { query: { limit: 200 } });
  for (const site of sites.items) {
    const option = document.createElement("option");
    option.value = site.id;
    option.textContent = site.name ? `${site.name} (${site.id})` : site.id;
    select.appendChild(option);
  }
  return sites.items;
}
