// The run page: the graph whose nodes change colour live (SSE), the event timeline, node outputs
// and errors, log lines, state versions with a diff between any two, and the run's actions.

import { api, followRun } from "./api.js";
import { badge, clear, duration, h, json, notice, shortId, span, time, toast } from "./dom.js";
import { renderGraph } from "./graph.js";

const NODE_STATUS = {
  "node.started": "running",
  "node.retrying": "retrying",
  "node.succeeded": "succeeded",
  "node.failed": "failed",
};
const ACTIONS = {
  cancel: ["queued", "running", "waiting", "paused"],
  pause: ["queued", "running"],
  resume: ["paused"],
  retry: ["failed"],
};

function describe(event) {
  const d = event.data || {};
  switch (event.type) {
    case "node.retrying": return `attempt ${event.attempt} failed (${d.error?.title || "error"}), retry in ${duration((d.delay || 0) * 1000)}`;
    case "node.failed": return d.error?.detail || "failed";
    case "node.succeeded": return d.duration_ms !== undefined ? `in ${duration(d.duration_ms)}` : "";
    case "node.progress": return d.message || JSON.stringify(d.value ?? d);
    case "run.failed": return d.error?.detail || "";
    case "run.waiting": return (d.interrupts || []).map((i) => i.title || i.kind).join(", ");
    case "run.queued": return d.reason ? `${d.reason}${d.by ? ` by ${d.by}` : ""}` : "";
    case "run.cancelled": return d.by ? `by ${d.by}` : "";
    case "run.resumed": return d.from ? `from ${d.from}` : "";
    default: return "";
  }
}

export async function runPage(root, runId, ctx) {
  let run = await api(`/v1/runs/${runId}`);
  const graphDoc = await api(`/v1/workflows/${encodeURIComponent(run.workflow)}/versions/${run.version}/graph`).catch(() => null);
  const graph = graphDoc ? renderGraph(graphDoc) : null;

  const header = h("div", { class: "page-head" });
  const actions = h("div", { class: "actions" });
  const approval = h("div");
  const timeline = h("ol", { class: "timeline", "data-testid": "timeline" });
  const tabs = {
    timeline: h("div", {}, timeline),
    nodes: h("div"),
    logs: h("div"),
    versions: h("div"),
    data: h("div"),
  };
  const tabBar = h("div", { class: "tabs", role: "tablist" });
  const tabBody = h("div", { class: "tab-body" });
  let current = "timeline";
  const show = (name) => {
    current = name;
    for (const b of tabBar.children) b.setAttribute("aria-selected", b.dataset.tab === name);
    clear(tabBody, tabs[name]);
    if (name === "nodes") loadNodes();
    if (name === "logs") loadLogs();
    if (name === "versions") loadVersions();
    if (name === "data") loadData();
  };
  for (const [name, label] of [["timeline", "Timeline"], ["nodes", "Nodes"], ["logs", "Logs"], ["versions", "State versions"], ["data", "Input / output"]]) {
    tabBar.append(h("button", { class: "tab", role: "tab", dataset: { tab: name }, onclick: () => show(name) }, label));
  }

  const drawHeader = () => {
    clear(header,
      h("div", {},
        h("h1", {}, "Run ", h("code", { title: run.id }, shortId(run.id))),
        h("div", { class: "meta" },
          h("a", { href: `#/workflows/${encodeURIComponent(run.workflow)}` }, `${run.workflow}@${run.version}`),
          " · created ", time(run.created_at),
          " · ", span(run.started_at, run.finished_at),
        ),
      ),
      h("span", { "data-testid": "run-status" }, badge(run.status)),
    );
    clear(actions, ...Object.entries(ACTIONS).map(([name, allowed]) =>
      h("button", {
        class: `btn ${name === "cancel" ? "danger" : ""}`,
        "data-action": name,
        disabled: !allowed.includes(run.status),
        onclick: () => act(name),
      }, name[0].toUpperCase() + name.slice(1))));
    drawApproval();
  };

  const drawApproval = () => {
    const gates = (run.waiting_for?.interrupts || []).filter((i) => i.kind === "approval");
    const decided = new Set(Object.keys(run.waiting_for?.resume || {}));
    const open = run.status === "waiting" ? gates.filter((g) => !decided.has(g.id)) : [];
    if (!open.length) return clear(approval);
    clear(approval, ...open.map((gate) => {
      const comment = h("textarea", { rows: 2, placeholder: "Comment (optional)", "data-testid": "approval-comment" });
      const decide = (verb) => async () => {
        try {
          run = await api(`/v1/runs/${runId}/${verb}`, { method: "POST", body: { comment: comment.value || null, node: gate.node } });
          toast(`${verb === "approve" ? "Approved" : "Rejected"} ${gate.node}`);
          drawHeader();
        } catch (err) { toast(err.message, "error"); }
      };
      return h("section", { class: "card approval", "data-testid": "approval" },
        h("h2", {}, "Waiting for approval: ", gate.title || gate.node),
        gate.description ? h("p", {}, gate.description) : null,
        gate.data !== undefined ? json(gate.data) : null,
        comment,
        h("div", { class: "actions" },
          h("button", { class: "btn primary", "data-action": "approve", onclick: decide("approve") }, "Approve"),
          h("button", { class: "btn danger", "data-action": "reject", onclick: decide("reject") }, "Reject")));
    }));
  };

  const act = async (name, body) => {
    try {
      const answer = await api(`/v1/runs/${runId}/${name}`, { method: "POST", body: body || {} });
      toast(`${name}: requested`);
      run = answer.id ? answer : await api(`/v1/runs/${runId}`);
      drawHeader();
      if (stream.closed && !["succeeded", "failed", "cancelled"].includes(run.status)) restartStream();
    } catch (err) { toast(err.message, "error"); }
  };

  async function loadNodes() {
    const [{ nodes }, { versions }] = await Promise.all([
      api(`/v1/runs/${runId}/nodes`),
      api(`/v1/runs/${runId}/history`).catch(() => ({ versions: [] })),
    ]);
    // A node's input is the state version it ran on: the newest one that lists it as next
    // (a map item `node[3]` ran on its map's version; inner nodes of branches have none here).
    const inputOf = (node) => versions.find((v) => (v.next || []).includes(node.replace(/\[\d+\]$/, "")))?.values;
    clear(tabs.nodes, nodes.length ? h("table", { class: "table" },
      h("thead", {}, h("tr", {}, ...["Node", "Status", "Attempt", "Duration", "Input / output / error"].map((t) => h("th", {}, t)))),
      h("tbody", {}, ...nodes.map((n) => h("tr", { "data-node": n.node },
        h("td", {}, h("code", {}, n.node)),
        h("td", {}, badge(n.status)),
        h("td", {}, n.attempt),
        h("td", {}, duration(n.duration_ms)),
        h("td", {},
          inputOf(n.node) !== undefined ? h("details", {}, h("summary", {}, "input (the state it ran on)"), json(inputOf(n.node))) : null,
          n.error ? h("details", { class: "error-details" }, h("summary", {}, n.error.detail || n.error.title), json(n.error)) : null,
          n.data?.output !== undefined ? h("details", {}, h("summary", {}, "output"), json(n.data.output)) : null))))
    ) : h("p", { class: "muted" }, "No node has started yet."));
  }

  async function loadLogs() {
    const { logs } = await api(`/v1/runs/${runId}/logs`, { query: { limit: 2000 } });
    clear(tabs.logs, logs.length ? h("table", { class: "table logs" },
      h("tbody", {}, ...logs.map((l) => h("tr", { class: `level-${l.level}` },
        h("td", { class: "nowrap" }, time(l.ts)),
        h("td", {}, h("span", { class: `level level-${l.level}` }, l.level)),
        h("td", {}, h("code", {}, `${l.node ?? ""}${l.attempt > 1 ? ` #${l.attempt}` : ""}`)),
        h("td", {}, l.message, l.data ? h("span", { class: "muted" }, " ", JSON.stringify(l.data)) : null))))
    ) : h("p", { class: "muted" }, "No log lines. Nodes log with ctx.log(...) or Python logging."));
  }

  async function loadVersions() {
    let versions;
    try {
      ({ versions } = await api(`/v1/runs/${runId}/history`));
    } catch (err) {
      return clear(tabs.versions, notice(err.message));
    }
    const result = h("div", { id: "diff-result", "data-testid": "diff-result" });
    const compare = async () => {
      const a = tabs.versions.querySelector("input[name=diff-a]:checked")?.value;
      const b = tabs.versions.querySelector("input[name=diff-b]:checked")?.value;
      if (!a || !b) return clear(result, notice("Pick a version in each column (A = before, B = after).", "info"));
      const d = await api(`/v1/runs/${runId}/history/${b}/diff`, { query: { against: a } });
      clear(result, d.changes.length ? h("table", { class: "table diff" },
        h("thead", {}, h("tr", {}, h("th", {}, "Change"), h("th", {}, "Path"), h("th", {}, "A"), h("th", {}, "B"))),
        h("tbody", {}, ...d.changes.map((c) => h("tr", { class: `op-${c.op}` },
          h("td", {}, c.op), h("td", {}, h("code", {}, c.path)),
          h("td", {}, c.old !== undefined ? json(c.old) : ""), h("td", {}, c.new !== undefined ? json(c.new) : "")))))
        : notice("No difference between these versions.", "info"));
    };
    clear(tabs.versions,
      h("p", { class: "muted" }, "Newest first. Pick A (before) and B (after) to compare, or roll the run back to a version."),
      h("table", { class: "table versions" },
        h("thead", {}, h("tr", {}, ...["A", "B", "Step", "Source", "Time", "Next", "Version", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...versions.map((v, i) => h("tr", { "data-checkpoint": v.checkpoint_id },
          h("td", {}, h("input", { type: "radio", name: "diff-a", value: v.checkpoint_id, checked: i === 1 })),
          h("td", {}, h("input", { type: "radio", name: "diff-b", value: v.checkpoint_id, checked: i === 0 })),
          h("td", {}, v.step ?? "—"), h("td", {}, v.source ?? ""), h("td", {}, time(v.created_at)),
          h("td", {}, (v.next || []).join(", ")),
          h("td", {}, h("code", { title: v.checkpoint_id }, shortId(v.checkpoint_id))),
          h("td", {}, h("button", { class: "btn small", "data-action": "rollback", onclick: () => {
            if (confirm(`Roll run back to version ${v.checkpoint_id} (step ${v.step})?`)) act("rollback", { checkpoint_id: v.checkpoint_id });
          } }, "Roll back")))))),
      h("div", { class: "actions" }, h("button", { class: "btn primary", "data-action": "diff", onclick: compare }, "Compare A → B")),
      result);
  }

  async function loadData() {
    clear(tabs.data,
      h("h3", {}, "Input"), json(run.input),
      h("h3", {}, "Output"), run.output !== null ? json(run.output) : h("p", { class: "muted" }, "—"),
      run.error ? [h("h3", {}, "Error"), json(run.error)] : null);
  }

  const statuses = new Map();
  const onEvent = (event) => {
    timeline.append(h("li", { class: `ev ev-${event.type.replace(".", "-")}`, "data-type": event.type },
      h("span", { class: "ts" }, time(event.ts)),
      h("span", { class: "type" }, event.type),
      event.node ? h("code", { class: "node" }, event.node) : null,
      h("span", { class: "detail" }, describe(event))));
    if (graph) {
      if (NODE_STATUS[event.type] && event.node) {
        const status = event.type === "node.failed" && event.data?.caught_by ? "failed" : NODE_STATUS[event.type];
        statuses.set(event.node, status);
        graph.setStatus(event.node, status);
      }
      if (event.type === "run.started" || event.type === "run.resumed") graph.setStatus("__start__", "succeeded");
      if (event.type === "run.waiting" && event.node) graph.setStatus(event.node, "waiting");
      if (event.type === "run.succeeded") graph.setStatus("__end__", "succeeded");
      if (event.type === "run.cancelled") for (const n of event.data?.nodes || []) graph.setStatus(n, "cancelled");
    }
    if (event.type.startsWith("run.")) refresh();
    else if (current === "nodes") scheduleReload(loadNodes);
    if (current === "logs" && event.type.startsWith("node.")) scheduleReload(loadLogs);
  };

  let pending = null;
  const scheduleReload = (fn) => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; fn().catch(() => {}); }, 300);
  };
  const refresh = async () => {
    run = await api(`/v1/runs/${runId}`);
    drawHeader();
    if (current !== "timeline" && current !== "versions") show(current);
  };

  let stream = null;
  const restartStream = () => {
    stream?.close();
    stream = followRun(runId, onEvent, stream ? stream.last : 0);
  };

  drawHeader();
  clear(root,
    header, actions, approval,
    h("div", { class: "run-grid" },
      h("section", { class: "card graph-card" }, h("h2", {}, "Graph"), graph ? graph.svg : notice("The graph of this workflow version is not available.", "info"),
        h("div", { class: "legend" }, ...["pending", "running", "retrying", "waiting", "succeeded", "failed", "cancelled"].map((s) => h("span", { class: `dot status-${s}` }, s)))),
      h("section", { class: "card" }, tabBar, tabBody)));
  show("timeline");
  restartStream();
  // A finished stream closes; a retry or rollback queues the run again: follow it anew.
  const poll = setInterval(async () => {
    if (document.hidden) return;
    const latest = await api(`/v1/runs/${runId}`).catch(() => null);
    if (latest && latest.updated_at !== run.updated_at) {
      run = latest;
      drawHeader();
      if (stream.closed && !["succeeded", "failed", "cancelled"].includes(run.status)) restartStream();
    }
  }, 2000);
  ctx.onLeave(() => { stream?.close(); clearInterval(poll); });
}
