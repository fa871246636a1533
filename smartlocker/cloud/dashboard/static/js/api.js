// The REST API with the signed-in key: the key lives in this tab's sessionStorage
// and goes only into the Authorization header (never a URL, a cookie or the page).

const KEY = "smartlocker.key";

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
  window.location.assign("/dashboard/signin");
}

// A problem (RFC 9457) answered by the API, or a network failure (status 0).
export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title;
    this.detail = detail;
  }
}

export function authHeaders() {
  return { Authorization: `Bearer ${getKey() || ""}` };
}

// JSON of `path` (a path under /api/v1, with its query), or throws ApiError.
export async function api(path, { method = "GET", body, query } = {}) {
  const url = new URL(`/api/v1${path}`, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { ...authHeaders(), Accept: "application/json" };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, "Network error", String(err));
  }
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    const next = window.location.pathname + window.location.search;
    window.location.assign(`/dashboard/signin?next=${encodeURIComponent(next)}`);
    throw new ApiError(401, "Signed out", "the key was refused");
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, data && data.title, data && data.detail);
  }
  return data;
}

// Every item of a paginated list (bounded by `max`).
export async function all(path, query = {}, max = 1000) {
  const items = [];
  let cursor = null;
  do {
    const page = await api(path, { query: { ...query, limit: 200, cursor } });
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}
