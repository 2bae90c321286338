// The workflow graph as SVG, drawn from GET /v1/workflows/{name}/graph (its node list and the
// edges of its Mermaid text), laid out in layers from the start node. No library: a small
// longest-path layering with one barycenter pass is enough for workflow-sized graphs.

const NS = "http://www.w3.org/2000/svg";
const W = 156, H = 44, GAP_X = 28, GAP_Y = 58, PAD = 24;

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

const EDGE = /^\s*([\w.\-]+)\s*(-->|-\.->|==>)\s*(?:\|"?(.*?)"?\|)?\s*([\w.\-]+);?\s*$/;
const DOTTED_LABEL = /^\s*([\w.\-]+)\s+-\.\s+(.*?)\s+\.->\s+([\w.\-]+);?\s*$/;

export function parseEdges(mermaid) {
  const edges = [];
  for (const line of mermaid.split("\n")) {
    let m = line.match(EDGE);
    if (m) {
      edges.push({ from: m[1], to: m[4], dotted: m[2] === "-.->", label: (m[3] || "").replace(/#quot;/g, '"') });
      continue;
    }
    m = line.match(DOTTED_LABEL);
    if (m) edges.push({ from: m[1], to: m[3], dotted: true, label: m[2].replace(/&nbsp;/g, "").trim() });
  }
  return edges;
}

function layers(ids, edges, start) {
  const out = new Map(ids.map((id) => [id, []]));
  for (const e of edges) if (out.has(e.from) && out.has(e.to)) out.get(e.from).push(e.to);
  // Depth-first from the start marks back edges (loops), which the layering ignores.
  const state = new Map(), back = new Set(), order = [];
  const visit = (id) => {
    state.set(id, 1);
    for (const next of out.get(id)) {
      if (state.get(next) === 1) back.add(`${id}>${next}`);
      else if (!state.has(next)) visit(next);
    }
    state.set(id, 2);
    order.push(id);
  };
  if (out.has(start)) visit(start);
  for (const id of ids) if (!state.has(id)) visit(id);
  const layer = new Map(ids.map((id) => [id, 0]));
  for (const id of order.reverse()) {
    for (const next of out.get(id)) {
      if (!back.has(`${id}>${next}`)) layer.set(next, Math.max(layer.get(next), layer.get(id) + 1));
    }
  }
  return { layer, back };
}

export function renderGraph(doc) {
  const declared = doc.nodes.map((n) => n.id);
  const edges = parseEdges(doc.mermaid || "");
  const ids = [...new Set([...(declared.includes("__start__") ? [] : ["__start__"]), ...declared])];
  for (const e of edges) for (const id of [e.from, e.to]) if (!ids.includes(id)) ids.push(id);
  const types = new Map(doc.nodes.map((n) => [n.id, n.type]));
  const { layer, back } = layers(ids, edges, "__start__");

  const rows = [];
  for (const id of ids) (rows[layer.get(id)] ||= []).push(id);
  const x = new Map();
  rows.forEach((row, depth) => {
    if (depth > 0) {
      const preds = (id) => edges.filter((e) => e.to === id && x.has(e.from)).map((e) => x.get(e.from));
      const center = (id) => { const p = preds(id); return p.length ? p.reduce((a, b) => a + b) / p.length : 0; };
      row.sort((a, b) => center(a) - center(b));
    }
    row.forEach((id, i) => x.set(id, i - (row.length - 1) / 2));
  });
  const widest = Math.max(...rows.map((r) => r.length));
  const width = widest * (W + GAP_X) - GAP_X + PAD * 2 + 60;
  const height = rows.length * (H + GAP_Y) - GAP_Y + PAD * 2;
  const pos = new Map(ids.map((id) => [id, {
    x: width / 2 + x.get(id) * (W + GAP_X) - 30,
    y: PAD + layer.get(id) * (H + GAP_Y),
  }]));

  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "graph", role: "img" });
  svg.style.maxWidth = `${width}px`;
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  defs.append(marker);
  svg.append(defs);

  const edgeLayer = el("g", { class: "edges" });
  for (const e of edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    let d;
    let lx, ly;
    if (back.has(`${e.from}>${e.to}`) || layer.get(e.to) <= layer.get(e.from)) {
      const sx = a.x + W, sy = a.y + H / 2, tx = b.x + W, ty = b.y + H / 2;
      const bulge = Math.max(sx, tx) + 40;
      d = `M ${sx} ${sy} C ${bulge} ${sy}, ${bulge} ${ty}, ${tx} ${ty}`;
      lx = bulge - 8; ly = (sy + ty) / 2;
    } else {
      const sx = a.x + W / 2, sy = a.y + H, tx = b.x + W / 2, ty = b.y;
      const my = (sy + ty) / 2;
      d = `M ${sx} ${sy} C ${sx} ${my}, ${tx} ${my}, ${tx} ${ty}`;
      lx = (sx + tx) / 2; ly = my;
    }
    const g = el("g", { class: `edge${e.dotted ? " dotted" : ""}`, "data-from": e.from, "data-to": e.to });
    g.append(el("path", { d, "marker-end": "url(#arrow)" }));
    if (e.label) {
      const text = e.label.length > 28 ? `${e.label.slice(0, 27)}…` : e.label;
      g.append(el("text", { x: lx, y: ly - 3, class: "edge-label", "text-anchor": "middle" }, text));
    }
    edgeLayer.append(g);
  }
  svg.append(edgeLayer);

  const nodeLayer = el("g", { class: "nodes" });
  const boxes = new Map();
  for (const id of ids) {
    const p = pos.get(id);
    const marker = id === "__start__" || id === "__end__";
    const g = el("g", { class: `node status-pending${marker ? " marker" : ""}`, "data-node": id, "data-status": "pending", transform: `translate(${p.x},${p.y})` });
    g.append(el("rect", { width: W, height: H, rx: marker ? H / 2 : 8 }));
    const label = id === "__start__" ? "start" : id === "__end__" ? "end" : id;
    g.append(el("text", { x: W / 2, y: types.get(id) && !marker ? 19 : 27, "text-anchor": "middle", class: "node-id" }, label.length > 20 ? `${label.slice(0, 19)}…` : label));
    if (types.get(id) && !marker) g.append(el("text", { x: W / 2, y: 34, "text-anchor": "middle", class: "node-type" }, types.get(id)));
    const title = el("title", {}, `${id}${types.get(id) ? ` (${types.get(id)})` : ""}`);
    g.append(title);
    nodeLayer.append(g);
    boxes.set(id, g);
  }
  svg.append(nodeLayer);

  // A node key from an event (``classify[2]``, ``branch/step``) → the graph node it belongs to.
  const find = (key) => {
    if (boxes.has(key)) return boxes.get(key);
    const plain = key.replace(/\[\d+\]/g, "");
    if (boxes.has(plain)) return boxes.get(plain);
    const last = plain.split("/").pop();
    return boxes.get(last);
  };
  return {
    svg,
    setStatus(key, status) {
      const g = find(key);
      if (!g) return;
      g.setAttribute("class", `node status-${status}`);
      g.dataset.status = status;
    },
    onClick(handler) {
      for (const [id, g] of boxes) g.addEventListener("click", () => handler(id));
    },
  };
}
