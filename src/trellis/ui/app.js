// The dashboard shell: navigation, the API key, a hash router, and the list pages.
// Every page reads the same REST API a client would (see api.js).

import { api, apiKey, ApiError, setApiKey } from "./api.js";
import { ago, badge, clear, duration, h, json, notice, shortId, span, toast } from "./dom.js";
import { renderGraph } from "./graph.js";
import { runPage } from "./run.js";

const root = document.getElementById("app");
const RUN_STATUSES = ["queued", "running", "waiting", "paused", "succeeded", "failed", "cancelled"];
let leaving = [];

function route() {
  const [path, query = ""] = (location.hash.slice(1) || "/runs").split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query) };
}

async function render() {
  for (const fn of leaving) fn();
  leaving = [];
  const ctx = { onLeave: (fn) => leaving.push(fn) };
  const { parts, params } = route();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === (parts[0] || "runs"));
  clear(root, h("p", { class: "muted" }, "Loading…"));
  try {
    const page = parts[0] || "runs";
    if (page === "runs" && parts[1]) await runPage(root, parts[1], ctx);
    else if (page === "runs") await runsPage(params, ctx);
    else if (page === "workflows" && parts[1]) await workflowPage(parts[1]);
    else if (page === "workflows") await workflowsPage();
    else if (page === "agents") await agentsPage(ctx);
    else if (page === "breakers") await breakersPage(ctx);
    else if (page === "queue") await queuePage(ctx);
    else if (page === "analytics") await analyticsPage(params);
    else clear(root, notice(`No page ${location.hash}`));
  } catch (err) {
    const hint = err instanceof ApiError && err.status === 401 ? " Set the API key (top right)." : "";
    clear(root, notice(`${err.message}${hint}`));
  }
}

function every(ms, ctx, fn) {
  const id = setInterval(() => { if (!document.hidden) fn().catch(() => {}); }, ms);
  ctx.onLeave(() => clearInterval(id));
}

// -- runs -------------------------------------------------------------------------------------

async function runsPage(params, ctx) {
  const status = params.get("status") || "";
  const workflow = params.get("workflow") || "";
  const { workflows } = await api("/v1/workflows");
  const statusSelect = h("select", { name: "status", "aria-label": "Status" },
    h("option", { value: "" }, "any status"),
    ...RUN_STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)));
  const workflowSelect = h("select", { name: "workflow", "aria-label": "Workflow" },
    h("option", { value: "" }, "any workflow"),
    ...workflows.map((w) => h("option", { value: w.name, selected: w.name === workflow }, w.name)));
  const apply = () => {
    const q = new URLSearchParams();
    if (statusSelect.value) q.set("status", statusSelect.value);
    if (workflowSelect.value) q.set("workflow", workflowSelect.value);
    location.hash = `#/runs${q.toString() ? `?${q}` : ""}`;
  };
  statusSelect.onchange = apply;
  workflowSelect.onchange = apply;
  const body = h("tbody");
  const more = h("div", { class: "actions" });
  const load = async (cursor) => {
    const page = await api("/v1/runs", { query: { status, workflow, limit: 50, cursor } });
    if (!cursor) clear(body);
    for (const r of page.runs) {
      body.append(h("tr", { class: "clickable", "data-run": r.id, onclick: () => { location.hash = `#/runs/${r.id}`; } },
        h("td", {}, h("a", { href: `#/runs/${r.id}` }, h("code", {}, shortId(r.id)))),
        h("td", {}, `${r.workflow}@${r.version}`),
        h("td", {}, badge(r.status)),
        h("td", { title: r.created_at }, ago(r.created_at)),
        h("td", {}, span(r.started_at, r.finished_at))));
    }
    if (!body.children.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No runs.")));
    clear(more, page.next_cursor ? h("button", { class: "btn", onclick: () => load(page.next_cursor) }, "More") : null);
  };
  clear(root,
    h("div", { class: "page-head" }, h("h1", {}, "Runs"), startForm(workflows, workflow)),
    h("div", { class: "filters" }, statusSelect, workflowSelect),
    h("section", { class: "card" }, h("table", { class: "table", "data-testid": "runs" },
      h("thead", {}, h("tr", {}, ...["Run", "Workflow", "Status", "Created", "Duration"].map((t) => h("th", {}, t)))), body), more));
  await load();
  every(2000, ctx, () => load());
}

function startForm(workflows, selected) {
  const choice = h("select", { name: "start-workflow", "aria-label": "Workflow to start" },
    ...workflows.map((w) => h("option", { value: w.name, selected: w.name === selected }, w.name)));
  const input = h("textarea", { name: "start-input", rows: 3, placeholder: "Input (JSON), e.g. {\"name\": \"Ada\"}" });
  const form = h("form", { class: "start-form" },
    choice, input, h("button", { class: "btn primary", type: "submit", "data-action": "start" }, "Start run"));
  form.onsubmit = async (e) => {
    e.preventDefault();
    let body;
    try {
      body = { workflow: choice.value, input: input.value.trim() ? JSON.parse(input.value) : {} };
    } catch (err) { return toast(`Input is not JSON: ${err.message}`, "error"); }
    try {
      const run = await api("/v1/runs", { method: "POST", body });
      location.hash = `#/runs/${run.id}`;
    } catch (err) { toast(err.message, "error"); }
  };
  return workflows.length ? h("details", { class: "start" }, h("summary", { class: "btn primary" }, "New run"), form) : null;
}

// -- workflows --------------------------------------------------------------------------------

async function workflowsPage() {
  const { workflows } = await api("/v1/workflows");
  clear(root, h("div", { class: "page-head" }, h("h1", {}, "Workflows")),
    h("section", { class: "card" }, h("table", { class: "table" },
      h("thead", {}, h("tr", {}, ...["Name", "Version", "Kind", "Registered"].map((t) => h("th", {}, t)))),
      h("tbody", {}, ...workflows.map((w) => h("tr", {},
        h("td", {}, h("a", { href: `#/workflows/${encodeURIComponent(w.name)}` }, w.name)),
        h("td", {}, w.version), h("td", {}, w.kind), h("td", {}, ago(w.created_at))))))));
}

async function workflowPage(name) {
  const [doc, graphDoc, summary] = await Promise.all([
    api(`/v1/workflows/${encodeURIComponent(name)}`),
    api(`/v1/workflows/${encodeURIComponent(name)}/graph`),
    api("/v1/metrics/summary", { query: { workflow: name, since: "7d" } }).catch(() => null),
  ]);
  const graph = renderGraph(graphDoc);
  const stats = summary?.workflows?.[0];
  clear(root,
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, name), h("div", { class: "meta" }, `version ${doc.version} of ${doc.versions.join(", ")} · ${doc.kind}`,
        doc.description ? ` · ${doc.description}` : "")),
      startForm([doc], name)),
    h("div", { class: "run-grid" },
      h("section", { class: "card graph-card" }, h("h2", {}, "Graph"), graph.svg),
      h("section", { class: "card" }, h("h2", {}, "Last 7 days"), stats ? workflowStats(stats) : h("p", { class: "muted" }, "No runs."),
        h("p", {}, h("a", { href: `#/runs?workflow=${encodeURIComponent(name)}` }, "Runs of this workflow →")))));
}

function workflowStats(s) {
  const pct = (v) => (v === null || v === undefined ? "—" : `${(v * 100).toFixed(1)} %`);
  return h("div", {},
    h("div", { class: "stats" },
      stat("runs", s.runs), stat("success rate", pct(s.success_rate)),
      stat("p50", duration(s.duration_seconds.p50 === null ? null : s.duration_seconds.p50 * 1000)),
      stat("p95", duration(s.duration_seconds.p95 === null ? null : s.duration_seconds.p95 * 1000))),
    h("table", { class: "table" },
      h("thead", {}, h("tr", {}, ...["Node", "Count", "Failure rate", "Mean", "p95", "Retries"].map((t) => h("th", {}, t)))),
      h("tbody", {}, ...s.nodes.map((n) => h("tr", {},
        h("td", {}, h("code", {}, n.node)), h("td", {}, n.count), h("td", {}, pct(n.failure_rate)),
        h("td", {}, duration(n.duration_ms.mean)), h("td", {}, duration(n.duration_ms.p95)),
        h("td", {}, Object.entries(n.retries).map(([k, v]) => `${k}:${v}`).join(" ")))))));
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
}

// -- analytics --------------------------------------------------------------------------------

async function analyticsPage(params) {
  const since = params.get("since") || "24h";
  const summary = await api("/v1/metrics/summary", { query: { since } });
  const picker = h("select", { "aria-label": "Window", onchange: (e) => { location.hash = `#/analytics?since=${e.target.value}`; } },
    ...["1h", "24h", "7d", "30d"].map((w) => h("option", { value: w, selected: w === since }, `last ${w}`)));
  const t = summary.tokens;
  clear(root, h("div", { class: "page-head" }, h("h1", {}, "Analytics"), picker),
    ...summary.workflows.map((s) => h("section", { class: "card" }, h("h2", {}, h("a", { href: `#/workflows/${encodeURIComponent(s.workflow)}` }, s.workflow)), workflowStats(s))),
    summary.workflows.length ? null : h("p", { class: "muted" }, "No runs in this window."),
    h("section", { class: "card" }, h("h2", {}, "LLM tokens"),
      h("div", { class: "stats" }, stat("prompt", t.prompt_tokens), stat("completion", t.completion_tokens), stat("calls", t.calls)),
      t.nodes.length ? h("table", { class: "table" },
        h("thead", {}, h("tr", {}, ...["Workflow", "Node", "Model", "Prompt", "Completion", "Calls"].map((x) => h("th", {}, x)))),
        h("tbody", {}, ...t.nodes.map((n) => h("tr", {}, h("td", {}, n.workflow), h("td", {}, h("code", {}, n.node)), h("td", {}, n.model),
          h("td", {}, n.prompt_tokens), h("td", {}, n.completion_tokens), h("td", {}, n.calls))))) : null));
}

// -- agents, breakers, queue ------------------------------------------------------------------

async function agentsPage(ctx) {
  const body = h("tbody");
  const load = async () => {
    const { agents } = await api("/v1/agents");
    clear(body, ...agents.map((a) => h("tr", {},
      h("td", {}, h("code", {}, a.name)), h("td", {}, a.base_url),
      h("td", {}, badge(a.enabled ? (a.healthy ? "healthy" : "unhealthy") : "disabled")),
      h("td", {}, ago(a.health_changed_at)), h("td", {}, ago(a.last_probe_at)))));
    if (!agents.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No agents registered.")));
  };
  clear(root, h("div", { class: "page-head" }, h("h1", {}, "Agents")),
    h("section", { class: "card" }, h("table", { class: "table" },
      h("thead", {}, h("tr", {}, ...["Agent", "URL", "Health", "Changed", "Last probe"].map((t) => h("th", {}, t)))), body)));
  await load();
  every(5000, ctx, load);
}

async function breakersPage(ctx) {
  const body = h("tbody");
  const load = async () => {
    const { breakers } = await api("/v1/breakers");
    clear(body, ...breakers.map((b) => h("tr", {},
      h("td", {}, h("code", {}, b.key)), h("td", {}, badge(b.state)),
      h("td", {}, (b.failures || []).length), h("td", {}, ago(b.changed_at)),
      h("td", {}, b.last_error?.detail || b.last_error?.title || ""),
      h("td", {}, b.state !== "closed" ? h("button", { class: "btn small", onclick: async () => {
        try { await api(`/v1/breakers/${encodeURIComponent(b.key)}/reset`, { method: "POST" }); toast(`${b.key} closed`); load(); } catch (err) { toast(err.message, "error"); }
      } }, "Close") : null))));
    if (!breakers.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No circuit breaker has been used yet.")));
  };
  clear(root, h("div", { class: "page-head" }, h("h1", {}, "Circuit breakers")),
    h("section", { class: "card" }, h("table", { class: "table" },
      h("thead", {}, h("tr", {}, ...["Key", "State", "Failures", "Changed", "Last error", ""].map((t) => h("th", {}, t)))), body)));
  await load();
  every(5000, ctx, load);
}

async function queuePage(ctx) {
  const box = h("div");
  const load = async () => {
    const q = await api("/v1/queue");
    clear(box,
      h("div", { class: "stats" },
        ...Object.entries(q.depth).map(([s, d]) => stat(s, d.total)),
        stat("oldest queued", q.oldest_queued_age_seconds === null ? "—" : duration(q.oldest_queued_age_seconds * 1000))),
      h("section", { class: "card" }, h("h2", {}, "Workers"), h("table", { class: "table" },
        h("thead", {}, h("tr", {}, ...["Worker", "Running", "Slots", "Heartbeat", "State"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...q.workers.map((w) => h("tr", {},
          h("td", {}, h("code", {}, w.id)), h("td", {}, w.running), h("td", {}, w.concurrency), h("td", {}, ago(w.heartbeat_at)),
          h("td", {}, badge(w.alive ? (w.draining ? "draining" : "alive") : "dead"))))))),
      h("section", { class: "card" }, h("h2", {}, "Leases"), q.leases.length ? h("table", { class: "table" },
        h("thead", {}, h("tr", {}, ...["Run", "Workflow", "Owner", "Expires"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...q.leases.map((l) => h("tr", {},
          h("td", {}, h("a", { href: `#/runs/${l.run_id}` }, h("code", {}, shortId(l.run_id)))), h("td", {}, l.workflow),
          h("td", {}, h("code", {}, l.owner || "")), h("td", {}, l.expired ? badge("expired") : new Date(l.expires_at).toLocaleTimeString()))))) : h("p", { class: "muted" }, "No run is executing.")));
  };
  clear(root, h("div", { class: "page-head" }, h("h1", {}, "Queue")), box);
  await load();
  every(3000, ctx, load);
}

// -- the API key ------------------------------------------------------------------------------

function keyButton() {
  const button = document.getElementById("key");
  const label = () => { button.textContent = apiKey() ? "API key ✓" : "API key"; };
  label();
  button.onclick = () => {
    const value = prompt("API key (trl_…). Leave empty for an open API.", apiKey());
    if (value === null) return;
    setApiKey(value);
    label();
    render();
  };
  window.addEventListener("trellis:unauthorized", () => button.classList.add("attention"));
}

keyButton();
window.addEventListener("hashchange", render);
render();
