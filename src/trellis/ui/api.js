// The REST API as the dashboard uses it: the same endpoints and API key as any client.
// The key is entered once and kept in localStorage; an open API (no keys configured) needs none.

const KEY = "trellis.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY) || "";
}

export function setApiKey(value) {
  if (value) localStorage.setItem(KEY, value.trim());
  else localStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export async function api(path, { method = "GET", body, query } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Accept: "application/json" };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data || {});
    if (response.status === 401) window.dispatchEvent(new CustomEvent("trellis:unauthorized"));
    throw error;
  }
  return data;
}

// Follow a run's events over SSE. Calls onEvent once per event, in seq order (the browser
// resumes with Last-Event-ID after a drop; duplicates are skipped). Closes itself once the
// run finished, so the browser does not reconnect to a finished stream forever.
export function followRun(runId, onEvent, after = 0) {
  const url = new URL(`/v1/runs/${encodeURIComponent(runId)}/stream`, location.origin);
  if (after) url.searchParams.set("after", after);
  const key = apiKey();
  if (key) url.searchParams.set("api_key", key);
  const source = new EventSource(url);
  let last = after;
  let closed = false;
  const finished = new Set(["run.succeeded", "run.failed", "run.cancelled"]);
  const handle = (message) => {
    const event = JSON.parse(message.data);
    if (event.seq <= last) return;
    last = event.seq;
    onEvent(event);
    if (finished.has(event.type)) {
      closed = true;
      source.close();
    }
  };
  source.onmessage = handle;
  for (const type of [
    "run.queued", "run.started", "run.waiting", "run.resumed", "run.paused", "run.cancelled",
    "run.succeeded", "run.failed", "node.started", "node.retrying", "node.succeeded",
    "node.failed", "node.progress",
  ]) {
    source.addEventListener(type, handle);
  }
  return {
    close: () => { closed = true; source.close(); },
    get last() { return last; },
    get closed() { return closed; },
  };
}
