// The p3s monitor: every page is drawn here from the JSON API (/api/v1) and kept current by the
// server's push stream (/api/v1/stream). Text is always inserted as text, never as HTML.
"use strict";

const ROLE = document.body.dataset.role;
const USER = document.body.dataset.user;
// A client may change what it owns; an admin anything (the server checks; this only hides buttons).
const mayChange = (doc) => ROLE === "admin" || (ROLE === "client" && doc.owner === USER);
// Extension points, filled by the other scripts of the monitor before the page is drawn.
const P3S = window.P3S = window.P3S || {};
P3S.routes = P3S.routes || [];                  // [regexp, (…groups) => page]
P3S.panels = P3S.panels || [];                  // dashboard panels: {id, order, make() -> {node, update(summary, stats)}}
P3S.listActions = P3S.listActions || {};        // resource -> (titleElement) => (params, total) => void
P3S.jobCards = P3S.jobCards || [];              // (container, job) => void: more cards on a job's page
const MAIN = document.getElementById("main");
const JOB_STATES = ["template", "defined", "dispatched", "running", "finished", "failed", "timelimit",
  "pilot_lost", "killed", "nonstarter", "cancelled", "stale"];
const PILOT_STATES = ["idle", "running", "stopped", "lost"];
const WORKFLOW_STATES = ["template", "defined", "running", "finished", "failed", "cancelled", "dropped"];
const COLOURS = {finished: "#2e9e4f", running: "#1c8fb8", dispatched: "#5fb7d6", defined: "#3f63c9",
  template: "#a5adbd", failed: "#d13b3b", timelimit: "#e0732c", pilot_lost: "#9b3bd1", killed: "#b33a6a",
  nonstarter: "#7a2e2e", cancelled: "#c9a227", idle: "#3f63c9", stopped: "#a5adbd", lost: "#9b3bd1",
  stale: "#8a6d3b", dropped: "#8a6d3b"};
const PER_PAGE = [25, 50, 100, 200, 400];
const SVG = "http://www.w3.org/2000/svg";

// --- DOM and API helpers ------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) if (value !== undefined && value !== null) el.setAttribute(key, value);
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

async function api(path, options = {}) {
  const headers = {"Accept": "application/json"};
  if (options.method && options.method !== "GET") {
    headers["X-P3S-Request"] = "1";
    headers["Content-Type"] = "application/json";
  }
  const response = await fetch("/api/v1" + path, {credentials: "same-origin", ...options, headers});
  const body = await response.json().catch(() => null);
  if (response.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); }
  if (!response.ok) throw new Error(body && body.error ? body.error.message : response.statusText);
  return body;
}

// Every time the monitor shows is UTC, and says so (the server's JSON times end in Z).
function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
}

// In lists: month, day and time (the column header says UTC).
function whenShort(iso) {
  if (!iso) return "–";
  const full = when(iso);
  return full.slice(5, 19);
}

function clock(date) {
  const d = date || new Date();
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
}

function seconds(s) {
  return s < 120 ? `${s.toFixed(1)} s` : s < 7200 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`;
}

function duration(a, b) {
  if (!a || !b) return "–";
  return seconds((new Date(b) - new Date(a)) / 1000);
}

// A run time: fixed once stopped; while running, a cell that ticks every second (see tick()).
function runTime(start, stop) {
  if (!start) return "–";
  if (stop) return duration(start, stop);
  return h("span", {class: "elapsed", "data-since": start}, seconds(Math.max(0, (Date.now() - new Date(start)) / 1000)));
}

function tick() {
  for (const el of document.querySelectorAll("[data-since]")) {
    el.textContent = seconds(Math.max(0, (Date.now() - new Date(el.dataset.since)) / 1000));
  }
}

function bytes(n) {
  if (n === undefined || n === null) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

const short = (uuid) => (uuid ? uuid.slice(0, 8) : "–");
const stateBadge = (state) => h("span", {class: `state ${state}`, "data-state": state}, state);
const link = (href, text) => h("a", {href}, text);
// Calls coalesced: one run ``ms`` after the first call (never postponed by later ones, so a page
// under a constant stream of changes still refreshes).
const debounced = (fn, ms) => { let t = null; return () => { if (t === null) t = setTimeout(() => { t = null; fn(); }, ms); }; };

function failure(error) {
  MAIN.replaceChildren(h("h1", {}, "Error"), h("p", {class: "error"}, error.message || String(error)));
}

function confirmAndPost(question, path, done) {
  return h("button", {class: "danger", onclick: async () => {
    if (!window.confirm(question)) return;
    try { await api(path, {method: "POST"}); done(); } catch (error) { window.alert(error.message); }
  }}, question.split(" ")[0]);
}

// --- legends -----------------------------------------------------------------------------------
function legend(series) {
  const swatch = (colour) => { const i = h("i", {}); i.style.background = colour; return i; };
  return h("div", {class: "legend"}, series.map((line) => h("span", {}, swatch(line.colour), line.name)));
}

// --- DAG picture --------------------------------------------------------------------------------
function layers(names, edges) {
  const parents = Object.fromEntries(names.map((n) => [n, new Set()]));
  for (const e of edges) if (parents[e.target]) parents[e.target].add(e.source);
  const depth = {};
  const level = (n, seen = new Set()) => {
    if (depth[n] !== undefined) return depth[n];
    if (seen.has(n)) return 0;
    seen.add(n);
    depth[n] = Math.max(-1, ...[...parents[n]].map((p) => level(p, seen))) + 1;
    return depth[n];
  };
  names.forEach((n) => level(n));
  const byLayer = [];
  for (const n of names) (byLayer[depth[n]] = byLayer[depth[n]] || []).push(n);
  const order = {};
  byLayer.forEach((layer, i) => {
    if (i > 0) {   // one barycentre sweep: children near their parents
      const centre = (n) => { const ps = [...parents[n]]; return ps.length ? ps.reduce((a, p) => a + order[p], 0) / ps.length : 0; };
      layer.sort((a, b) => centre(a) - centre(b));
    }
    layer.forEach((n, j) => { order[n] = j; });
  });
  return {byLayer, order, depth};
}

function dagPicture(nodes, edges, hrefOf) {
  // nodes: [{name, state, noop}], edges: [{source, target, label}]
  const names = nodes.map((n) => n.name);
  const {byLayer, order, depth} = layers(names, edges);
  const W = 150, H = 34, GX = 70, GY = 26;
  const rows = Math.max(...byLayer.map((l) => l.length));
  const width = byLayer.length * (W + GX) + 20, height = rows * (H + GY) + 20;
  const pos = {};
  for (const n of names) {
    const layerSize = byLayer[depth[n]].length;
    pos[n] = {x: 10 + depth[n] * (W + GX), y: 10 + (order[n] + (rows - layerSize) / 2) * (H + GY)};
  }
  const svg = s("svg", {class: "dag", viewBox: `0 0 ${width} ${height}`, width: Math.min(width, 1600), role: "img"},
    s("defs", {}, s("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse"},
      s("path", {d: "M 0 0 L 10 5 L 0 10 z", fill: "#7d8597"}))));
  const seen = {};
  for (const e of edges) {
    if (!pos[e.source] || !pos[e.target]) continue;
    const key = e.source + "\u0000" + e.target;
    const k = (seen[key] = (seen[key] || 0) + 1) - 1;
    const a = pos[e.source], b = pos[e.target];
    const x1 = a.x + W, y1 = a.y + H / 2 + (k ? (k % 2 ? 6 : -6) * Math.ceil(k / 2) : 0), x2 = b.x, y2 = b.y + H / 2;
    const bend = (k % 2 ? 1 : -1) * 12 * Math.ceil(k / 2);
    const path = s("path", {class: "edge", "marker-end": "url(#arrow)",
      d: `M ${x1} ${y1} C ${x1 + GX / 2} ${y1 + bend}, ${x2 - GX / 2} ${y2 + bend}, ${x2} ${y2}`});
    path.append(s("title", {}, e.label || ""));
    svg.append(path);
  }
  for (const n of nodes) {
    const p = pos[n.name];
    const colour = n.state ? COLOURS[n.state] || "#a5adbd" : (n.noop ? "#a5adbd" : "#3f63c9");
    const group = s("g", {class: "node", "data-vertex": n.name, "data-state": n.state || ""},
      s("rect", {x: p.x, y: p.y, width: W, height: H, fill: colour}),
      s("text", {x: p.x + W / 2, y: p.y + H / 2 + 4, "text-anchor": "middle"}, n.name.length > 20 ? n.name.slice(0, 19) + "…" : n.name),
      s("title", {}, `${n.name}${n.state ? ": " + n.state : ""}${n.noop ? " (noop)" : ""}`));
    const href = hrefOf && hrefOf(n);
    svg.append(href ? s("a", {href}, group) : group);
  }
  return svg;
}

function paintNode(svg, vertex, state) {
  const node = svg && svg.querySelector(`g.node[data-vertex="${CSS.escape(vertex)}"]`);
  if (!node) return;
  node.dataset.state = state;
  node.querySelector("rect").setAttribute("fill", COLOURS[state] || "#a5adbd");
  node.querySelector("title").textContent = `${vertex}: ${state}`;
}

// --- list pages ---------------------------------------------------------------------------------
const LISTS = {
  jobs: {title: "Jobs", states: JOB_STATES, filters: ["jobtype", "user", "site", "host", "workflow", "pilot", "q"],
    sort: "-ts_def", columns: [
      ["uuid", "job", (j) => link(`/jobs/${j.uuid}`, short(j.uuid))], ["name", "name", (j) => j.name, "wrap"],
      ["state", "state", (j) => stateBadge(j.state)], ["jobtype", "type"], ["priority", "prio", null, "num"],
      ["host", "host", (j) => j.pilot ? link(`/pilots/${j.pilot}`, j.host || short(j.pilot)) : "–"],
      ["exit_code", "exit", null, "num"], ["workflow", "workflow", (j) => j.workflow ? link(`/workflows/${j.workflow}`, short(j.workflow)) : ""],
      ["ts_def", "defined (UTC)", (j) => whenShort(j.ts_def)], ["ts_sta", "started (UTC)", (j) => whenShort(j.ts_sta)],
      ["ts_sto", "stopped (UTC)", (j) => whenShort(j.ts_sto)], [null, "run time", (j) => runTime(j.ts_sta, j.ts_sto), "num"]]},
  pilots: {title: "Pilots", states: PILOT_STATES, filters: ["site", "host", "job"], sort: "-ts_reg", columns: [
    ["uuid", "pilot", (p) => link(`/pilots/${p.uuid}`, short(p.uuid))], ["state", "state", (p) => stateBadge(p.state)],
    ["host", "host", (p) => [p.host, hostMark(p.host)]], ["site", "site", (p) => p.site ? link(`/sites/${p.site}`, p.site) : "–"],
    ["job", "job", (p) => p.job ? link(`/jobs/${p.job}`, short(p.job)) : "–"], ["njobs", "jobs run", null, "num"],
    ["ts_reg", "registered (UTC)", (p) => whenShort(p.ts_reg)], ["ts_lhb", "last contact (UTC)", (p) => whenShort(p.ts_lhb)],
    [null, "life", (p) => duration(p.ts_reg, p.ts_lhb), "num"]]},
  workflows: {title: "Workflows", states: WORKFLOW_STATES, filters: ["template", "user", "q"], sort: "-ts_def", columns: [
    ["uuid", "workflow", (w) => link(`/workflows/${w.uuid}`, short(w.uuid))], ["name", "name", null, "wrap"],
    ["state", "state", (w) => stateBadge(w.state)], ["template", "template", (w) => link(`/templates/${w.template}`, `${w.template} v${w.template_version}`)],
    [null, "done", (w) => `${w.ndone}/${w.njobs}`, "num"], ["ts_def", "defined (UTC)", (w) => whenShort(w.ts_def)],
    ["ts_sto", "stopped (UTC)", (w) => whenShort(w.ts_sto)], ["error", "why", (w) => w.error || "", "wrap"]]},
  data: {title: "Data files", states: ["defined", "template", "ready", "skipped"], filters: ["q", "datatype", "workflow", "dirpath"],
    sort: "-ts_reg", columns: [
      ["uuid", "file", (d) => link(`/data/${d.uuid}`, short(d.uuid))], ["name", "name", null, "wrap"], ["dirpath", "directory", null, "wrap"],
      ["datatype", "type"], ["state", "state", (d) => stateBadge(d.state)], ["size", "size", (d) => bytes(d.size), "num"],
      ["workflow", "workflow", (d) => d.workflow ? link(`/workflows/${d.workflow}`, short(d.workflow)) : ""],
      ["ts_reg", "registered", (d) => when(d.ts_reg)]]},
  events: {title: "Events", states: null, filters: ["kind", "severity", "job", "pilot", "site"], sort: "-ts", columns: [
    ["ts", "time (UTC)", (e) => whenShort(e.ts)], ["severity", "severity", (e) => h("span", {class: e.severity === "info" ? "" : "alarm"}, e.severity)],
    ["kind", "kind"], [null, "message", (e) => e.message, "wrap"],
    [null, "about", (e) => [e.job && link(`/jobs/${e.job}`, "job " + short(e.job)), " ", e.pilot && link(`/pilots/${e.pilot}`, "pilot " + short(e.pilot))]]]},
  templates: {title: "DAG templates", states: null, filters: [], plain: true, columns: [
    ["name", "name", (t) => link(`/templates/${t.name}`, t.name)], ["version", "version", null, "num"],
    ["nvertices", "jobs", null, "num"], ["nedges", "files", null, "num"], ["workflows", "workflows", null, "num"],
    ["description", "description", null, "wrap"], ["ts_def", "added", (t) => when(t.ts_def)]]},
  sites: {title: "Sites", states: null, filters: [], plain: true, columns: [
    ["name", "site", (x) => link(`/sites/${x.name}`, x.name)], ["pilots", "nominal pilots", null, "num"],
    [null, "live pilots", (x) => liveAt(x.name), "num"], ["period", "period", null, "num"], ["beat", "beat", null, "num"],
    ["cycles", "cycles", null, "num"], ["comment", "comment", null, "wrap"]]},
};

let lastSummary = null;
let drainedHosts = {};          // host -> its row of /hosts, for the flagged or drained ones
const hostMark = (host) => {
  const row = drainedHosts[host];
  if (!row) return null;
  return h("span", {class: "badge bad", title: row.reason || ""}, row.drained ? " drained" : " black hole");
};
const liveAt = (site) => {
  const counts = (lastSummary && lastSummary.pilots_by_site[site]) || {};
  return (counts.idle || 0) + (counts.running || 0);
};

function listPage(resource) {
  const spec = LISTS[resource];
  const params = new URLSearchParams(location.search);
  const title = h("h1", {}, spec.title);
  const table = h("table", {"data-resource": resource});
  const pager = h("div", {class: "pager"});
  const filters = h("form", {class: "filters", onsubmit: (ev) => { ev.preventDefault(); apply(); }});
  const checked = new Set((params.get("state") || "").split(",").filter(Boolean));
  if (spec.states) {
    filters.append(h("span", {class: "muted"}, "state:"),
      ...spec.states.map((st) => h("label", {}, h("input", {type: "checkbox", name: "state", value: st, checked: checked.has(st)}), " ", st)));
  }
  for (const f of spec.filters) {
    filters.append(h("label", {}, `${f === "q" ? "name contains" : f} `, h("input", {type: "text", name: f, value: params.get(f) || "", size: 12})));
  }
  if (!spec.plain) {
    filters.append(h("label", {}, "per page ", h("select", {name: "limit", onchange: apply},
      PER_PAGE.map((n) => h("option", {value: n, selected: String(n) === (params.get("limit") || "25")}, n)))));
    filters.append(h("button", {type: "submit"}, "Apply"));
  }
  MAIN.replaceChildren(title, filters, h("div", {class: "card"}, table, pager));

  function apply(extra = {}) {
    const next = new URLSearchParams();
    const states = [...filters.querySelectorAll("input[name=state]:checked")].map((i) => i.value);
    if (states.length) next.set("state", states.join(","));
    for (const f of spec.filters) { const v = filters.elements[f].value.trim(); if (v) next.set(f, v); }
    if (filters.elements.limit) next.set("limit", filters.elements.limit.value);
    if (params.get("sort")) next.set("sort", params.get("sort"));
    for (const [k, v] of Object.entries(extra)) if (v === null) next.delete(k); else next.set(k, v);
    history.replaceState(null, "", `${location.pathname}?${next}`);
    params.forEach((_v, k) => params.delete(k));
    next.forEach((v, k) => params.set(k, v));
    load();
  }

  const rowOf = (item) => h("tr", {"data-key": item.uuid || item.name || item.id},
    spec.columns.map(([key, _l, fmt, cls]) => h("td", {class: cls, "data-col": key}, fmt ? fmt(item) : (item[key] ?? "–"))));
  let shown = {};                 // key -> the item as last drawn

  async function load() {
    let reply;
    const query = new URLSearchParams(params);
    if (!spec.plain && !query.get("limit")) query.set("limit", "25");       // what the select shows
    try {
      const extra = [];
      if (resource === "sites") extra.push(api("/summary").then((x) => { lastSummary = x; }));
      if (resource === "pilots") extra.push(api("/hosts").then((x) => { drainedHosts = Object.fromEntries(x.items.filter((r) => r.flagged || r.drained).map((r) => [r.host, r])); }));
      [reply] = await Promise.all([api(`/${resource}?${query}`), ...extra]);
    } catch (error) { return failure(error); }
    const items = reply.items;
    shown = Object.fromEntries(items.map((i) => [i.uuid || i.name || i.id, i]));
    const sort = params.get("sort") || spec.sort;
    const head = h("tr", {}, spec.columns.map(([key, label, _f, cls]) => {
      const sortable = key && !spec.plain;
      const th = h("th", {class: [cls, sortable && "sortable", sortable && sort.replace("-", "") === key && (sort.startsWith("-") ? "sorted-desc" : "sorted-asc")].filter(Boolean).join(" ")}, label);
      if (sortable) th.addEventListener("click", () => apply({sort: sort === `-${key}` ? key : `-${key}`, offset: null}));
      return th;
    }));
    const rows = items.map(rowOf);
    table.replaceChildren(h("thead", {}, head), h("tbody", {}, rows));
    if (actions) actions(params, reply.total);
    if (spec.plain) { pager.replaceChildren(h("span", {class: "muted"}, `${items.length} shown`)); return; }
    const offset = reply.offset, limit = reply.limit;
    pager.replaceChildren(
      h("button", {class: "secondary", disabled: offset === 0, onclick: () => apply({offset: Math.max(0, offset - limit)})}, "‹ previous"),
      h("span", {class: "count-label"}, reply.total ? `${offset + 1}–${offset + items.length} of ${reply.total}` : "none"),
      h("button", {class: "secondary", disabled: offset + items.length >= reply.total, onclick: () => apply({offset: offset + limit})}, "next ›"));
  }

  const actions = P3S.listActions[resource] ? P3S.listActions[resource](title) : null;
  const reload = debounced(load, 700);
  load();
  return {onChange(msg) {
    const changed = msg[resource] || {};
    let unseen = false;
    for (const [key, change] of Object.entries(changed)) {
      const row = table.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
      if (row && shown[key] && change.state !== "deleted") {
        shown[key] = {...shown[key], ...change};         // the whole row, redrawn from the change
        row.replaceWith(rowOf(shown[key]));
      }
      if (!row) unseen = true;
    }
    if ((unseen || (resource === "events" && msg.events.length) || (resource === "sites")) && !Number(params.get("offset"))) reload();
  }, onReconnect: load};
}

// --- detail pages -------------------------------------------------------------------------------
function fields(object, keys) {
  return h("dl", {class: "fields"}, keys.flatMap(([key, label, fmt]) =>
    [h("dt", {}, label || key), h("dd", {"data-field": key}, fmt ? fmt(object[key], object) : (typeof object[key] === "object" && object[key] !== null ? JSON.stringify(object[key]) : (object[key] ?? "–")))]));
}

const UNSUCCESSFUL = ["failed", "timelimit", "pilot_lost", "killed", "nonstarter"];

function jobPage(uuid) {
  const cpu = P3S.chart({unit: "%", series: [{name: "CPU", colour: "#1c8fb8"}], digits: 1});
  const rss = P3S.chart({unit: "MB", series: [{name: "RSS", colour: "#9b3bd1"}], digits: 1});
  async function load() {
    let job;
    try { job = await api(`/jobs/${uuid}`); } catch (error) { return failure(error); }
    const active = ["dispatched", "running", "defined", "template"].includes(job.state);
    const series = job.usage_series || [];
    const stderrCard = h("div", {class: "card"}, h("h2", {}, "stderr (last lines) ", job.log_dir ? link(`/api/v1/jobs/${uuid}/log/err`, "full log") : ""), h("pre", {class: "stderr"}, job.stderr_tail || ""));
    const stdoutCard = h("div", {class: "card"}, h("h2", {}, "stdout (last lines) ", job.log_dir ? link(`/api/v1/jobs/${uuid}/log/out`, "full log") : ""), h("pre", {class: "stdout"}, job.stdout_tail || ""));
    const failed = UNSUCCESSFUL.includes(job.state);
    const why = failed ? h("div", {class: "card why", id: "why"}, h("h2", {}, `Why it ended ${job.state}`),
      fields(job, [["error", "error"], ["exit_code", "exit code"], ["host", "host", (v) => [v || "–", hostMark(v)]], ["ts_sto", "ended", when]]),
      job.stderr_tail ? h("pre", {class: "stderr"}, job.stderr_tail.split("\n").slice(-15).join("\n")) : h("p", {class: "muted"}, "no stderr was reported"),
      job.log_dir ? h("p", {}, link(`/api/v1/jobs/${uuid}/log/err`, "whole stderr"), " · ", link(`/api/v1/jobs/${uuid}/log/out`, "whole stdout")) : "") : null;
    const rerunnable = failed || job.state === "cancelled";
    MAIN.replaceChildren(
      h("h1", {}, "Job ", h("span", {class: "job-name"}, job.name || short(job.uuid)), " ", stateBadge(job.state),
        " ", mayChange(job) && active ? confirmAndPost(job.state === "defined" || job.state === "template" ? "Cancel this job?" : "Kill this job?", `/jobs/${uuid}/kill`, load) : "",
        " ", ROLE === "admin" && rerunnable && !job.workflow ? h("button", {class: "rerun", onclick: async () => {
          if (!window.confirm("Rerun this job as a new attempt?")) return;
          try { await api(`/jobs/${uuid}/rerun`, {method: "POST"}); load(); } catch (error) { window.alert(error.message); }
        }}, "Rerun") : ""),
      why,
      h("div", {class: "grid"},
        h("div", {class: "card"}, h("h2", {}, "Job"), fields(job, [["uuid"], ["name"], ["jobtype", "type"], ["user"], ["priority"],
          ["payload", "payload"], ["params"], ["env", "env"], ["input_file", "input file"], ["site", "site wanted"],
          ["timelimit", "time limit (s)"], ["arrived", "data arrived", when],
          ["deadline", "deadline", (v, j) => (v ? `${when(v)} (ETA ${j.eta} s)` : "–")],
          ["attempts", "attempts", (v, j) => `${v} of ${j.max_attempts}`],
          ["workflow", "workflow", (v, j) => v ? link(`/workflows/${v}`, `${short(v)} (${j.vertex})`) : "–"],
          ["error"]])),
        h("div", {class: "card"}, h("h2", {}, "Where and when"), fields(job, [["pilot", "pilot", (v) => v ? link(`/pilots/${v}`, v) : "–"],
          ["host"], ["pilot_site", "site"], ["pid"], ["exit_code", "exit code"],
          ["ts_def", "defined", when], ["ts_dis", "dispatched", when], ["ts_sta", "started", when], ["ts_sto", "stopped", when],
          [null, "queue wait", () => duration(job.ts_def, job.ts_dis)], [null, "run time", () => runTime(job.ts_sta, job.ts_sto)],
          ["usage", "peak RSS", (u) => bytes((u || {}).peak_rss)], ["usage", "CPU time", (u) => (u && u.cpu_time !== undefined ? `${u.cpu_time} s` : "–")]]))),
      failed ? "" : h("div", {class: "grid"}, stdoutCard, stderrCard),
      series.length ? h("div", {class: "grid"},
        h("div", {class: "card"}, h("h2", {}, "CPU (%)"), cpu.node),
        h("div", {class: "card"}, h("h2", {}, "Memory, RSS (MB)"), rss.node)) : "",
      failed ? h("div", {class: "grid"}, stdoutCard, stderrCard) : "");
    for (const add of P3S.jobCards) add(MAIN, job);       // freshness.js: the job's outputs
    const xs = series.map((x) => x.t);
    cpu.update(xs, [series.map((x) => x.cpu_percent ?? null)]);
    rss.update(xs, [series.map((x) => (x.rss === undefined ? null : x.rss / 1048576))]);
  }
  const reload = debounced(load, 300);
  load();
  return {onChange(msg) { if (msg.jobs[uuid]) reload(); }, onReconnect: load};
}

function pilotPage(uuid) {
  async function load() {
    let pilot, jobs;
    try { [pilot, jobs] = await Promise.all([api(`/pilots/${uuid}`), api(`/jobs?pilot=${uuid}&limit=100`)]); } catch (error) { return failure(error); }
    const current = pilot.job ? await api(`/jobs/${pilot.job}`).catch(() => null) : null;
    const beats = ((current && current.usage_series) || []).slice(-20).reverse();
    MAIN.replaceChildren(
      h("h1", {}, "Pilot ", short(uuid), " ", stateBadge(pilot.state), " ",
        ROLE === "admin" && ["idle", "running"].includes(pilot.state) ? confirmAndPost("Stop this pilot?", `/pilots/${uuid}/kill`, load) : ""),
      h("div", {class: "grid"},
        h("div", {class: "card"}, fields(pilot, [["uuid"], ["host"], ["site", "site", (v) => v ? link(`/sites/${v}`, v) : "–"], ["pid"], ["extra"],
          ["jobtypes", "job types", (v) => (v && v.length ? v.join(", ") : "any")], ["job", "current job", (v) => v ? link(`/jobs/${v}`, v) : "–"],
          ["njobs", "jobs run"], ["ts_reg", "registered", when], ["ts_lhb", "last heartbeat", when], ["ts_stop", "stopped", when],
          ["reason"], ["version"]])),
        h("div", {class: "card"}, h("h2", {}, "Heartbeats of the current job"), beats.length ? h("table", {},
          h("tr", {}, ["time", "CPU %", "RSS", "processes", "threads"].map((x) => h("th", {}, x))),
          beats.map((b) => h("tr", {}, h("td", {}, when(new Date(b.t * 1000).toISOString())), h("td", {class: "num"}, b.cpu_percent),
            h("td", {class: "num"}, bytes(b.rss)), h("td", {class: "num"}, b.nprocs), h("td", {class: "num"}, b.threads)))) : h("p", {class: "muted"}, "none"))),
      h("h2", {}, `Jobs (${jobs.total})`), h("div", {class: "card"}, h("table", {},
        h("tr", {}, ["job", "name", "state", "type", "exit", "started", "run time"].map((x) => h("th", {}, x))),
        jobs.items.map((j) => h("tr", {"data-key": j.uuid}, h("td", {}, link(`/jobs/${j.uuid}`, short(j.uuid))), h("td", {}, j.name),
          h("td", {"data-col": "state"}, stateBadge(j.state)), h("td", {}, j.jobtype), h("td", {class: "num"}, j.exit_code ?? "–"),
          h("td", {}, when(j.ts_sta)), h("td", {class: "num"}, duration(j.ts_sta, j.ts_sto)))))));
  }
  const reload = debounced(load, 500);
  load();
  return {onChange(msg) { if (msg.pilots[uuid] || Object.values(msg.jobs).some((j) => j.pilot === uuid)) reload(); }, onReconnect: load};
}

function workflowPage(uuid) {
  let picture = null;
  async function load() {
    let wf;
    try { wf = await api(`/workflows/${uuid}`); } catch (error) { return failure(error); }
    const nodes = wf.jobs.map((j) => ({name: j.vertex, state: j.state, noop: j.noop, uuid: j.uuid}));
    const edges = wf.data.map((d) => ({source: d.source, target: d.target, label: `${d.datatag || d.edge}: ${d.dirpath ? d.dirpath + "/" : ""}${d.name} (${d.state})`}));
    picture = dagPicture(nodes, edges, (n) => `/jobs/${n.uuid}`);
    MAIN.replaceChildren(
      h("h1", {}, "Workflow ", h("span", {class: "wf-name"}, wf.name), " ", h("span", {id: "wf-state"}, stateBadge(wf.state)), " ",
        mayChange(wf) && ["template", "defined", "running"].includes(wf.state) ? confirmAndPost("Cancel this workflow?", `/workflows/${uuid}/cancel`, load) : ""),
      wf.error ? h("div", {class: "card why", id: "why"}, h("h2", {}, `Why it ${wf.state === "cancelled" ? "was cancelled" : "ended " + wf.state}`),
        h("p", {class: "error"}, wf.error)) : "",
      h("div", {class: "card"}, fields(wf, [["uuid"], ["template", "template", (v) => link(`/templates/${v}`, `${v} v${wf.template_version}`)],
        ["user"], ["description"], ["ndone", "done", (v) => `${v} of ${wf.njobs} jobs`], ["error"], ["ts_def", "defined", when],
        ["ts_sta", "started", when], ["ts_sto", "stopped", when]])),
      h("h2", {}, "DAG"), h("div", {class: "card dag-card"}, picture, legend(Object.entries(COLOURS).filter(([k]) => JOB_STATES.includes(k)).map(([name, colour]) => ({name, colour})))),
      h("h2", {}, "Jobs"), h("div", {class: "card"}, h("table", {},
        h("tr", {}, ["vertex", "job", "state", "host", "exit", "started", "stopped"].map((x) => h("th", {}, x))),
        wf.jobs.map((j) => h("tr", {"data-key": j.uuid}, h("td", {}, j.vertex), h("td", {}, link(`/jobs/${j.uuid}`, short(j.uuid))),
          h("td", {"data-col": "state"}, stateBadge(j.state)), h("td", {}, j.host || "–"), h("td", {class: "num"}, j.exit_code ?? "–"),
          h("td", {}, when(j.ts_sta)), h("td", {}, when(j.ts_sto)))))),
      h("h2", {}, "Data"), h("div", {class: "card"}, h("table", {},
        h("tr", {}, ["edge", "from", "to", "tag", "file", "state"].map((x) => h("th", {}, x))),
        wf.data.map((d) => h("tr", {}, h("td", {}, d.edge || "–"), h("td", {}, d.source), h("td", {}, d.target), h("td", {}, d.datatag || "–"),
          h("td", {class: "wrap"}, link(`/data/${d.uuid}`, `${d.dirpath ? d.dirpath + "/" : ""}${d.name}`)), h("td", {}, stateBadge(d.state)))))));
    MAIN.dataset.vertices = JSON.stringify(Object.fromEntries(wf.jobs.map((j) => [j.uuid, j.vertex])));
  }
  const reload = debounced(load, 1500);
  load();
  return {onChange(msg) {
    const vertices = JSON.parse(MAIN.dataset.vertices || "{}");
    for (const [job, change] of Object.entries(msg.jobs)) {
      if (!vertices[job]) continue;
      paintNode(picture, vertices[job], change.state);
      const cell = MAIN.querySelector(`tr[data-key="${CSS.escape(job)}"] td[data-col="state"]`);
      if (cell) cell.replaceChildren(stateBadge(change.state));
    }
    if (msg.workflows[uuid]) {
      const badge = document.getElementById("wf-state");     // none yet while the first load is pending
      if (badge) badge.replaceChildren(stateBadge(msg.workflows[uuid].state));
      reload();
    }
  }, onReconnect: load};
}

function templatePage(name) {
  (async () => {
    let t;
    try { t = await api(`/templates/${encodeURIComponent(name)}`); } catch (error) { return failure(error); }
    const spec = t.spec;
    MAIN.replaceChildren(h("h1", {}, "Template ", t.name, ` v${t.version}`), h("p", {}, t.description),
      h("div", {class: "card"}, dagPicture(spec.vertices.map((v) => ({name: v.name, noop: v.noop})),
        spec.edges.map((e) => ({source: e.source, target: e.target, label: `${e.id}: ${e.datatag || ""} ${e.name || ""}`})))),
      h("h2", {}, "Jobs"), h("div", {class: "card"}, h("table", {},
        h("tr", {}, ["vertex", "type", "payload", "priority", "time limit"].map((x) => h("th", {}, x))),
        spec.vertices.map((v) => h("tr", {}, h("td", {}, v.name), h("td", {}, v.noop ? "noop" : v.jobtype), h("td", {class: "wrap"}, v.payload),
          h("td", {class: "num"}, v.priority), h("td", {class: "num"}, v.timelimit ?? "–"))))),
      h("h2", {}, "Data edges"), h("div", {class: "card"}, h("table", {},
        h("tr", {}, ["id", "from", "to", "tag", "type", "file", "directory"].map((x) => h("th", {}, x))),
        spec.edges.map((e) => h("tr", {}, [e.id, e.source, e.target, e.datatag, e.datatype, e.name, e.dirpath].map((x) => h("td", {}, x || "–")))))),
      h("p", {}, link(`/workflows?template=${encodeURIComponent(t.name)}`, "workflows of this template"), " · ",
        link(`/api/v1/templates/${encodeURIComponent(t.name)}?format=yaml`, "YAML")));
  })();
  return {onChange() {}};
}

function sitePage(name) {
  async function load() {
    let site, pilots, rounds;
    try { [site, pilots, rounds] = await Promise.all([api(`/sites/${encodeURIComponent(name)}`), api(`/pilots?site=${encodeURIComponent(name)}&state=idle,running`),
      api(`/events?kind=fleet.topup&site=${encodeURIComponent(name)}&limit=1`)]); } catch (error) { return failure(error); }
    const round = rounds.items[0];   // the pilot factory's last round (p3s-fleet top-up --every)
    MAIN.replaceChildren(h("h1", {}, "Site ", site.name),
      h("div", {class: "card"}, fields(site, [["pilots", "nominal pilots"], [null, "live pilots", () => pilots.total], ["period"], ["beat"],
        ["cycles"], ["lifetime"], ["server"], ["env"], ["comment"]])),
      round ? h("div", {class: "card", id: "factory"}, h("h3", {}, "Pilot factory"), fields({...round.data, ts: round.ts}, [["wanted"], ["submitted"],
        ["queued", "queued in the batch system"], ["registered"], ["backend"], ["ts", "last round", when], ["error"]])) : "",
      h("h2", {}, "Live pilots"), h("div", {class: "card"}, h("table", {},
        h("tr", {}, ["pilot", "state", "host", "job", "last contact"].map((x) => h("th", {}, x))),
        pilots.items.map((p) => h("tr", {}, h("td", {}, link(`/pilots/${p.uuid}`, short(p.uuid))), h("td", {}, stateBadge(p.state)),
          h("td", {}, p.host), h("td", {}, p.job ? link(`/jobs/${p.job}`, short(p.job)) : "–"), h("td", {}, when(p.ts_lhb)))))));
  }
  const reload = debounced(load, 1000);
  load();
  return {onChange(msg) { if (Object.values(msg.pilots).some((p) => p.site === name)) reload(); }, onReconnect: load};
}

function dataPage(uuid) {
  (async () => {
    let d;
    try { d = await api(`/data/${uuid}`); } catch (error) { return failure(error); }
    MAIN.replaceChildren(h("h1", {}, "Data file ", d.name, " ", stateBadge(d.state)), h("div", {class: "card"}, fields(d, [["uuid"], ["name"],
      ["dirpath", "directory"], ["datatype", "type"], ["size", "size", bytes], ["comment"], ["metadata"], ["datatag", "data tag"],
      ["workflow", "workflow", (v) => v ? link(`/workflows/${v}`, v) : "–"], ["source_job", "made by", (v, x) => v ? link(`/jobs/${v}`, x.source) : "–"],
      ["target_job", "read by", (v, x) => v ? link(`/jobs/${v}`, x.target) : "–"], ["ts_reg", "registered", when], ["ts_upd", "updated", when]])));
  })();
  return {onChange() {}};
}

// --- routing and live updates -------------------------------------------------------------------
const ROUTES = [
  [/^\/jobs\/([^/]+)$/, jobPage], [/^\/pilots\/([^/]+)$/, pilotPage],
  [/^\/workflows\/([^/]+)$/, workflowPage], [/^\/templates\/([^/]+)$/, templatePage], [/^\/sites\/([^/]+)$/, sitePage],
  [/^\/data\/([^/]+)$/, dataPage], [/^\/(jobs|pilots|workflows|templates|data|events|sites)$/, listPage],
];

let page = null;
function route() {
  for (const [pattern, make] of [...P3S.routes, ...ROUTES]) {
    const match = location.pathname.match(pattern);
    if (match) { page = make(...match.slice(1).map(decodeURIComponent)); break; }
  }
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("current", a.getAttribute("href") === location.pathname);
}

// The live stream. The moment it drops, a banner says the page is stale and since when; the
// server also sends a ping every few seconds, so a stream that silently stalls counts as dropped.
const STALE_AFTER = 12000;
let lastHeard = null;
function connect() {
  const dot = document.getElementById("live");
  const banner = document.getElementById("stale");
  const stream = new EventSource("/api/v1/stream");
  const alive = () => {
    lastHeard = new Date();
    dot.className = "live on";
    banner.hidden = true;
    document.body.classList.remove("stale");
  };
  const dead = () => {
    dot.className = "live off";
    banner.replaceChildren(h("strong", {}, "Live updates lost: "), `what you see is data as of ${lastHeard ? clock(lastHeard) : "page load"}`,
      " · reconnecting …");
    banner.hidden = false;
    document.body.classList.add("stale");
  };
  stream.addEventListener("hello", (ev) => {
    const wasStale = document.body.classList.contains("stale");
    alive();
    lastSummary = JSON.parse(ev.data).summary;
    if (wasStale && page && page.onReconnect) page.onReconnect();
  });
  stream.addEventListener("ping", alive);
  stream.addEventListener("change", (ev) => {
    alive();
    const msg = JSON.parse(ev.data);
    lastSummary = msg.summary;
    if (page && page.onChange) page.onChange(msg);
  });
  stream.onerror = dead;
  // Close the stream when the page is left: a page kept in the back-forward cache would otherwise
  // hold one of the browser's six connections to the server for good.
  window.addEventListener("pagehide", () => stream.close());
  setInterval(() => { if (lastHeard && Date.now() - lastHeard > STALE_AFTER) dead(); }, 2000);
}

// What other scripts (control.js, the freshness and fleet panels …) extend: routes, dashboard
// panels, list actions; and the helpers they draw with. They load after this file and register
// before the page is drawn (on DOMContentLoaded).
Object.assign(P3S, {h, s, api, when, clock, duration, runTime, seconds, bytes, short, stateBadge, link, debounced, failure,
  confirmAndPost, fields, COLOURS, JOB_STATES, PILOT_STATES, ROLE, MAIN, summary: () => lastSummary});

document.addEventListener("DOMContentLoaded", () => {
  route();
  connect();
  setInterval(tick, 1000);
});
