// Sign-in: keep the key in this tab only if the API accepts it.

import { api, setKey, getKey } from "../api.js";
import { $ } from "../dom.js";

function target() {
  const next = new URLSearchParams(window.location.search).get("next") || "";
  // Only a path of this dashboard (no other origin, no scheme-relative URL).
  return /^\/dashboard\/[^/\\]?/.test(next) && !next.startsWith("//") ? next : "/dashboard/";
}

$("#signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = $("#error");
  box.hidden = true;
  const key = $("#key").value.trim();
  setKey(key);
  try {
    const response = await fetch("/api/v1/me", { headers: { Authorization: `Bearer ${key}` } });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      throw new Error(problem.detail || problem.title || `HTTP ${response.status}`);
    }
    window.location.assign(target());
  } catch (err) {
    sessionStorage.clear();
    box.textContent = `Sign-in refused: ${err.message}`;
    box.hidden = false;
  }
});

if (getKey()) {
  api("/me").then(() => window.location.assign(target())).catch(() => sessionStorage.clear());
}
