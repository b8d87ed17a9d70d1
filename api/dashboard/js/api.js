// The public /v1 API with the key the user signed in with. The key lives in this tab's
// sessionStorage only: never in a URL, a cookie or the persistent storage of the browser.

const KEY = "fitserve.key";

export const auth = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  set(key) {
    sessionStorage.setItem(KEY, key);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

export class ApiError extends Error {
  constructor(status, detail) {
    super(describe(detail) || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

// FastAPI's 422 is a list of {loc, msg}; every other refusal is {detail: "..."}.
function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".") || "request"}: ${e.msg}`)
      .join("\n");
  }
  return detail == null ? "" : JSON.stringify(detail);
}

export function headers(extra = {}, key = auth.key) {
  return { Authorization: `Bearer ${key}`, ...extra };
}

function signedOut() {
  auth.clear();
  window.dispatchEvent(new Event("fitserve:signedout"));
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}

// `json`: a body sent as JSON; `form`: FormData (multipart). Answers the parsed JSON (null for 204).
export async function api(path, { method = "GET", json, form, signal, key } = {}) {
  const init = { method, signal, cache: "no-store", headers: headers({}, key ?? auth.key) };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (form !== undefined) {
    init.body = form;
  }
  const res = await fetch(path, init);
  if (res.status === 204) return null;
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    if (res.status === 401 && key === undefined) signedOut();
    throw new ApiError(res.status, body && body.detail !== undefined ? body.detail : null);
  }
  return body;
}

// Every page of a job's metric points (one name, or all), following the cursor.
export async function allMetrics(jobId, name, after = 0, signal) {
  const points = [];
  let cursor = after;
  for (;;) {
    const page = await api(
      `/v1/jobs/${jobId}/metrics${query({ name, after: cursor, limit: 10000 })}`,
      { signal },
    );
    points.push(...page.data);
    cursor = page.next;
    if (!page.has_more) return { points, next: cursor };
  }
}
