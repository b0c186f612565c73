// shoal's web UI: one page, hash routes (#/ and #/run/<id>), live through server-sent
// events. The server aggregates; this file only draws (SVG, no libraries, no network but
// its own origin).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const state = { runs: [], leases: [], run: null, es: null, route: null };

// fill sets attrs on el (on* as listeners; with skipEmpty, undefined, null and false leave an
// attribute out) and appends kids, strings as text: what h and s share.
function fill(el, attrs, kids, skipEmpty) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (skipEmpty && (v === undefined || v === null || v === false)) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}

function h(tag, attrs, ...kids) {
  return fill(document.createElement(tag), attrs, kids, true);
}

function s(tag, attrs, ...kids) {
  return fill(document.createElementNS(SVG, tag), attrs, kids, false);
}

const fmt = (x) => (x === undefined || x === null || !isFinite(x)) ? "–" : Number(x).toPrecision(6).replace(/\.?0+$/, "").replace(/\.?0+e/, "e");
const tick = (x) => Number(x).toPrecision(3).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
const gib = (m) => (m / 1024).toFixed(1) + " GiB";
const ago = (t) => {
  const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
  if (!isFinite(s) || s > 1e9) return "–";
  if (s < 60) return Math.round(s) + "s ago";
  if (s < 3600) return Math.round(s / 60) + "m ago";
  return Math.round(s / 3600) + "h ago";
};
const badge = (st) => h("span", { class: "badge " + st }, st);

// ---- routing and the event stream ----

function route() {
  const m = location.hash.match(/^#\/run\/([a-z0-9-]{1,64})$/);
  const run = m ? m[1] : null;
  if (state.route !== run || !state.es) {
    state.route = run;
    state.run = run ? { id: run, points: [], summary: null, grid: null, best: null, failures: [], throughput: null, evaluations: 0 } : null;
    connect();
  }
  render();
}

function connect() {
  if (state.es) state.es.close();
  const url = "api/events" + (state.route ? "?run=" + encodeURIComponent(state.route) : "");
  const es = new EventSource(url);
  state.es = es;
  const live = document.getElementById("live");
  es.onopen = () => { live.className = "live on"; live.textContent = "live"; };
  es.onerror = () => { live.className = "live off"; live.textContent = "reconnecting"; };
  es.addEventListener("runs", (e) => { state.runs = JSON.parse(e.data); render(); });
  es.addEventListener("leases", (e) => { state.leases = JSON.parse(e.data); renderLeases(); });
  es.addEventListener("run", (e) => {
    const d = JSON.parse(e.data);
    const r = state.run;
    if (!r || r.id !== d.run) return;
    // Points come as a tail from index d.from; a reconnect starts again from 0.
    r.points = r.points.slice(0, d.from).concat(d.points || []);
    r.evaluations = d.evaluations;
    r.first = d.first; r.last = d.last;
    if (d.summary) r.summary = d.summary;
    if (d.grid) r.grid = d.grid;
    if (d.best) r.best = d.best;
    if (d.failures) r.failures = d.failures;
    if (d.throughput) r.throughput = d.throughput;
    renderRun(d);
  });
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
window.addEventListener("resize", () => { if (state.run) renderRun({ grid: true, best: true, failures: true, throughput: true }); });

// ---- pages ----

function render() {
  const main = document.getElementById("main");
  const crumbs = document.getElementById("crumbs");
  crumbs.replaceChildren(h("a", { href: "#/" }, "runs"));
  if (!state.route) {
    if (!document.getElementById("runs")) {
      main.replaceChildren(
        h("section", { class: "card" }, h("h2", {}, "Runs"), h("div", { id: "runs" })),
        h("section", { class: "card" }, h("h2", {}, "GPU leases"), h("div", { id: "leases" })));
    }
    renderRuns();
    renderLeases();
    return;
  }
  crumbs.append(" / ", state.route);
  if (!document.getElementById("run-page") || document.getElementById("run-page").dataset.run !== state.route) {
    const page = h("div", { id: "run-page", "data-run": state.route },
      h("div", { id: "stats", class: "stats card" }),
      h("div", { class: "grid2" },
        h("section", { class: "card" }, h("h2", {}, "Best score over evaluations"), h("div", { id: "chart-evals" })),
        h("section", { class: "card" }, h("h2", {}, "Best score over time"), h("div", { id: "chart-time" }))),
      h("section", { class: "card" }, h("h2", {}, "Islands × MAP-Elites grid"), h("div", { id: "grid" }), h("div", { id: "cell" })),
      h("div", { class: "grid2" },
        h("section", { class: "card" }, h("h2", {}, "Best program: diff against its parent"), h("div", { id: "best" })),
        h("section", { class: "card" }, h("h2", {}, "Lineage of the best"), h("div", { id: "lineage" }))),
      h("div", { class: "grid2" },
        h("section", { class: "card" }, h("h2", {}, "Failures by reason"), h("div", { id: "failures" })),
        h("section", { class: "card" }, h("h2", {}, "Throughput"), h("div", { id: "throughput" }))),
      h("section", { class: "card" }, h("h2", {}, "GPU leases"), h("div", { id: "leases" })));
    main.replaceChildren(page);
  }
  renderRun({ grid: true, best: true, failures: true, throughput: true });
  renderLeases();
}

function progress(done, budget) {
  const w = 140, frac = budget > 0 ? Math.min(1, done / budget) : 0;
  return h("span", {}, s("svg", { width: w, height: 10, class: "progress" },
    s("rect", { x: 0, y: 0, width: w, height: 10, rx: 3, fill: "#eaeef2" }),
    s("rect", { x: 0, y: 0, width: Math.round(w * frac), height: 10, rx: 3, fill: "#1f6feb" })),
    " ", done + (budget > 0 ? " / " + budget : ""));
}

function renderRuns() {
  const el = document.getElementById("runs");
  if (!el) return;
  if (!state.runs.length) { el.replaceChildren(h("p", { class: "empty" }, "No runs yet: start one with shoal up or shoal seed.")); return; }
  el.replaceChildren(h("table", { id: "runs-table" },
    h("thead", {}, h("tr", {}, ["run", "status", "evaluations / budget", "best", "seed", "failed", "population", "in flight", "updated", "stop reason"].map((t, i) => h("th", { class: i >= 3 && i <= 7 ? "num" : "" }, t)))),
    h("tbody", {}, state.runs.map((r) => h("tr", { "data-run": r.run },
      h("td", {}, h("a", { href: "#/run/" + r.run }, r.run)),
      h("td", {}, badge(r.status)),
      h("td", {}, progress(r.evaluations, r.budget)),
      h("td", { class: "num best" }, fmt(r.best)),
      h("td", { class: "num" }, fmt(r.seed_score)),
      h("td", { class: "num" }, r.failed),
      h("td", { class: "num" }, r.population),
      h("td", { class: "num" }, r.in_flight),
      h("td", {}, ago(r.updated)),
      h("td", { class: "muted" }, r.stop_reason || ""))))));
}

function renderRun(d) {
  const r = state.run;
  if (!r || !document.getElementById("run-page")) return;
  const sm = r.summary || {};
  document.getElementById("stats").replaceChildren(
    stat("status", badge(sm.status || "seeded")),
    stat("evaluations / budget", progress(sm.evaluations || 0, sm.budget || 0)),
    stat("best score", h("span", { id: "best-score" }, fmt(r.best ? r.best.score : sm.best))),
    stat("results folded", r.evaluations),
    stat("failed", sm.failed || 0),
    stat("population", sm.population || 0),
    stat("in flight", sm.in_flight || 0));
  lineChart(document.getElementById("chart-evals"), r.points, (p) => p.n, r.evaluations, "evaluations", (x) => Math.round(x));
  lineChart(document.getElementById("chart-time"), r.points, (p) => p.t, r.last, "time", (x) => new Date(x).toLocaleTimeString());
  if (d.grid) renderGrid();
  if (d.best) renderBest();
  if (d.failures) renderFailures();
  if (d.throughput) renderThroughput();
}

function stat(k, v) { return h("div", { class: "stat" }, h("div", { class: "v" }, v), h("div", { class: "k" }, k)); }

// lineChart draws the best score as a step line over x, carried on to xEnd.
function lineChart(el, points, xOf, xEnd, xName, xLabel) {
  if (!el) return;
  const W = Math.max(300, el.clientWidth || 560), H = 230, L = 62, R = 14, T = 10, B = 30;
  if (!points.length) { el.replaceChildren(h("p", { class: "empty" }, "No results yet.")); return; }
  const xs = points.map(xOf), ys = points.map((p) => p.best);
  let x0 = Math.min(...xs), x1 = Math.max(...xs, xEnd || 0);
  if (x1 <= x0) x1 = x0 + 1;
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 <= y0) { y1 = y0 + Math.abs(y0 || 1) * 0.1; y0 = y0 - Math.abs(y0 || 1) * 0.1; }
  const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
  const X = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const Y = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  let d = "";
  points.forEach((p, i) => {
    const x = X(xOf(p)), y = Y(p.best);
    d += i === 0 ? `M${x.toFixed(1)},${y.toFixed(1)}` : `H${x.toFixed(1)}V${y.toFixed(1)}`;
  });
  d += `H${X(x1).toFixed(1)}`;
  const g = s("svg", { width: W, height: H, class: "chart" });
  g.append(s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }), s("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    g.append(s("text", { x: L - 6, y: Y(y) + 4, "text-anchor": "end" }, tick(y)));
    g.append(s("line", { class: "axis", x1: L, x2: W - R, y1: Y(y), y2: Y(y), "stroke-dasharray": "2,3" }));
    const x = x0 + (x1 - x0) * i / 4;
    g.append(s("text", { x: X(x), y: H - B + 16, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, xLabel(x)));
  }
  g.append(s("path", { class: "line", d }));
  points.forEach((p) => g.append(s("circle", { class: "dot", cx: X(xOf(p)), cy: Y(p.best), r: 2.5 }, s("title", {}, `${fmt(p.best)} after ${p.n} evaluations`))));
  g.append(s("text", { x: W - R, y: T + 10, "text-anchor": "end" }, `${points.length} improvements; x: ${xName}`));
  el.replaceChildren(g);
}

// color maps t in [0,1] to a viridis-like ramp.
function color(t) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  t = Math.max(0, Math.min(1, isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
  const c = stops[i].map((v, k) => Math.round(v + (stops[i + 1][k] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function renderGrid() {
  const el = document.getElementById("grid");
  const grid = state.run.grid;
  if (!el) return;
  if (!grid || !grid.islands || !grid.islands.length) { el.replaceChildren(h("p", { class: "empty" }, "No programs yet.")); return; }
  const dims = grid.dimensions || [];
  const bx = dims[0] ? dims[0].bins : 1, by = dims[1] ? dims[1].bins : 1;
  let lo = Infinity, hi = -Infinity;
  for (const isl of grid.islands) for (const c of isl.cells) { lo = Math.min(lo, c.score); hi = Math.max(hi, c.score); }
  if (!(hi > lo)) { hi = lo + 1; }
  const size = Math.max(6, Math.min(22, Math.floor(260 / Math.max(bx, by))));
  const wrap = h("div", { class: "islands" });
  for (const isl of grid.islands) {
    // Cells beyond two dimensions fold onto the first two, keeping the best.
    const best = new Map();
    for (const c of isl.cells) {
      const k = (c.coords[0] || 0) + "," + (c.coords[1] || 0);
      if (!best.has(k) || best.get(k).score < c.score) best.set(k, c);
    }
    const g = s("svg", { width: bx * size + 2, height: by * size + 2, class: "heat", "data-island": isl.island });
    for (let x = 0; x < bx; x++) for (let y = 0; y < by; y++) {
      const c = best.get(x + "," + y);
      const attrs = { x: 1 + x * size, y: 1 + (by - 1 - y) * size, width: size - 1, height: size - 1, rx: 2 };
      if (c) {
        g.append(s("rect", Object.assign(attrs, { class: "cell filled", fill: color((c.score - lo) / (hi - lo)), onclick: () => showProgram(c.program) }),
          s("title", {}, `island ${isl.island} cell ${c.coords.join(",")}: ${c.program} score ${fmt(c.score)}`)));
      } else {
        g.append(s("rect", Object.assign(attrs, { class: "cell", fill: "#eef1f4" })));
      }
    }
    wrap.append(h("div", { class: "island" }, g,
      h("div", { class: "cap" }, `island ${isl.island}: ${isl.cells.length} cells, ${isl.programs} programs, ${isl.migrations} migrations`)));
  }
  const legend = s("svg", { width: 160, height: 12 });
  for (let i = 0; i < 32; i++) legend.append(s("rect", { x: i * 5, y: 0, width: 5, height: 12, fill: color(i / 31) }));
  el.replaceChildren(wrap, h("div", { class: "legend" },
    h("span", {}, `x: ${dims[0] ? dims[0].name : "–"}, y: ${dims[1] ? dims[1].name : "–"}; cell colour: best score in the cell`),
    h("span", {}, fmt(lo), " ", legend, " ", fmt(hi))));
}

async function showProgram(id) {
  const el = document.getElementById("cell");
  const res = await fetch("api/runs/" + encodeURIComponent(state.route) + "/programs/" + encodeURIComponent(id));
  if (!res.ok) { el.replaceChildren(h("p", { class: "empty" }, await res.text())); return; }
  const p = await res.json();
  el.replaceChildren(h("h3", {}, `program ${p.id} (lineage: ${p.lineage.length} programs)`), h("pre", {}, p.code));
}

function renderBest() {
  const b = state.run.best, el = document.getElementById("best"), lin = document.getElementById("lineage");
  if (!el) return;
  if (!b) { el.replaceChildren(h("p", { class: "empty" }, "No program yet.")); lin.replaceChildren(); return; }
  const meta = h("p", { class: "muted" }, `${b.id} · score ${fmt(b.score)} · generation ${b.generation} · island ${b.island}` + (b.parent_id ? ` · parent ${b.parent_id}` : " · a seed"));
  const pre = h("pre", { id: "best-diff" });
  if (b.diff && b.diff.length) {
    for (const l of b.diff) pre.append(h("span", { class: l.op === "+" ? "add" : l.op === "-" ? "del" : "same" }, l.op + " " + l.text));
  } else {
    pre.append(b.code);
  }
  el.replaceChildren(meta, pre);
  lin.replaceChildren(h("ol", { class: "lineage", id: "lineage-list" }, (b.lineage || []).map((a) =>
    h("li", {}, h("a", { href: "#" + location.hash.slice(1), onclick: (e) => { e.preventDefault(); showProgram(a.id); document.getElementById("cell").scrollIntoView(); } }, a.id),
      ` · gen ${a.generation} · island ${a.island} · ${a.status} · score ${fmt(a.score)}` + (a.copy ? " (copy)" : "")))));
}

function renderFailures() {
  const el = document.getElementById("failures");
  const fs = state.run.failures || [];
  if (!el) return;
  if (!fs.length) { el.replaceChildren(h("p", { class: "empty" }, "No failures.")); return; }
  el.replaceChildren(h("table", { id: "failures-table" },
    h("thead", {}, h("tr", {}, h("th", { class: "num" }, "count"), h("th", {}, "status"), h("th", {}, "reason and an example"))),
    h("tbody", {}, fs.map((f) => h("tr", {},
      h("td", { class: "num" }, f.count), h("td", {}, badge(f.status)),
      h("td", {}, h("details", {}, h("summary", {}, f.reason || "(no reason given)"),
        h("p", { class: "muted" }, "example: " + f.example),
        f.detail && f.detail !== f.reason ? h("pre", {}, f.detail) : null,
        Object.entries(f.artifacts || {}).map(([k, v]) => [h("h3", {}, k), h("pre", {}, v)]))))))));
}

function renderThroughput() {
  const el = document.getElementById("throughput");
  const t = state.run.throughput;
  if (!el) return;
  if (!t || (!t.by_generator.length && !t.by_model.length)) { el.replaceChildren(h("p", { class: "empty" }, "No generated candidates yet.")); return; }
  const table = (title, rows) => [h("h3", {}, title), h("table", { class: "throughput" },
    h("thead", {}, h("tr", {}, h("th", {}, "name"), ["results", "ok", "per minute", "generate ms", "evaluate ms"].map((x) => h("th", { class: "num" }, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, r.name), h("td", { class: "num" }, r.results), h("td", { class: "num" }, r.ok),
      h("td", { class: "num" }, r.per_minute.toFixed(1)), h("td", { class: "num" }, Math.round(r.generate_ms)), h("td", { class: "num" }, Math.round(r.eval_ms))))))];
  el.replaceChildren(...table("per generator replica", t.by_generator), ...table("per model", t.by_model));
}

// ---- the GPU lease map ----

const palette = ["#1f6feb", "#e16f24", "#8250df", "#1a7f37", "#bf3989", "#0a7ea4", "#9a6700"];
let modelColors = new Map();
// holderColor gives each model of the lease map its own colour, in the order of their names.
function holderColor(model) { return modelColors.get(model) || palette[0]; }

function renderLeases() {
  const el = document.getElementById("leases");
  if (!el) return;
  if (!state.leases.length) { el.replaceChildren(h("p", { class: "empty" }, "No GPU inventory or leases yet: generators with GPUs publish them.")); return; }
  const models = [...new Set(state.leases.flatMap((host) => host.gpus.flatMap((g) => g.holders.map((ho) => ho.model))))].sort();
  modelColors = new Map(models.map((m, i) => [m, palette[i % palette.length]]));
  const hosts = state.leases.map((host) => {
    const rows = host.gpus.map((g) => {
      const W = 520, H = 22, x = (m) => Math.max(0, Math.min(W, W * m / Math.max(1, g.total_mib)));
      const bar = s("svg", { width: W, height: H, class: "gpubar" },
        s("rect", { x: 0, y: 0, width: W, height: H, rx: 3, fill: "#f6f8fa", stroke: "#d0d7de" }),
        s("rect", { x: x(g.usable_mib), y: 0, width: W - x(g.usable_mib), height: H, fill: "#d0d7de" }, s("title", {}, "reserve " + gib(g.total_mib - g.usable_mib))));
      let off = 0;
      for (const ho of g.holders) {
        bar.append(s("rect", { class: "holder", x: x(off), y: 2, width: Math.max(1, x(ho.mib) - 1), height: H - 4, rx: 2, fill: holderColor(ho.model), opacity: ho.state === "loading" ? 0.5 : 1 },
          s("title", {}, `${ho.holder}: ${ho.model}/${ho.variant} ${gib(ho.mib)} ${ho.state}, renews within ${Math.round(ho.expires_in_s)}s`)));
        if (x(ho.mib) > 70) bar.append(s("text", { class: "onbar", x: x(off) + 4, y: 15 }, ho.model));
        off += ho.mib;
      }
      if (g.used_mib >= 0) bar.append(s("line", { class: "used", x1: x(g.used_mib), x2: x(g.used_mib), y1: 0, y2: H, stroke: "#cf222e", "stroke-width": 2 }, s("title", {}, "used (NVML) " + gib(g.used_mib))));
      return h("div", { class: "gpu" },
        h("div", { class: "name" }, h("b", {}, `GPU ${g.index}`), ` ${g.name}`, h("br"),
          h("span", { class: "muted" }, `leased ${gib(g.leased_mib)} of ${gib(g.usable_mib)} usable` + (g.used_mib >= 0 ? `, used ${gib(g.used_mib)}` : ", used: no reading (declared)"))),
        h("div", {}, bar, h("div", { class: "muted" }, g.holders.map((ho) => `${ho.holder} (${ho.model}/${ho.variant}, ${gib(ho.mib)}, ${ho.state})`).join("; ") || "free")));
    });
    return h("div", { class: "host", "data-host": host.host },
      h("h3", {}, `host ${host.host} (${host.source || "?"}) · ${host.generators.length} generator replicas`),
      rows,
      host.waiters.length ? h("p", { class: "waiting" }, h("b", {}, "waiting: "), host.waiters.map((w) => `${w.holder} ${w.model}/${w.variant} needs ${gib(w.need_mib)} since ${new Date(w.since).toLocaleTimeString()}`).join("; ")) : null,
      host.expired.length ? h("p", { class: "muted" }, "expired: " + host.expired.map((a) => `${a.holder} ${a.model}/${a.variant}`).join("; ")) : null,
      host.generators.length ? h("p", { class: "muted" }, "generators: " + host.generators.map((g) => `${g.id} (${g.in_flight}/${g.concurrency} in flight${g.models ? ", " + g.models.join(",") : ""})`).join("; ")) : null);
  });
  el.replaceChildren(h("div", { class: "legend" }, h("span", {}, h("span", { class: "sw leased" }), "leased (colour: model)"),
    h("span", {}, h("span", { class: "sw reserve" }), "reserve"), h("span", {}, h("span", { class: "sw used" }), "used, as NVML read it")), ...hosts);
}
