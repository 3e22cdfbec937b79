// Freshness and results in the monitor: the dashboard's freshness panel, a job's outputs on its
// page, and the "Latest results" page. Loaded after app.js; registers with its extension points
// (P3S.panels, P3S.routes, P3S.jobCards) and draws with its helpers. Text is always inserted as
// text; images are loaded by URL from the API (served with a policy under which an SVG cannot run
// script).
"use strict";

(function () {
  const P = window.P3S;
  const {h, api, link, short, when, stateBadge, debounced, failure, bytes} = P;

  function secs(value) {
    if (value === null || value === undefined) return "–";
    if (value < 0) return "∞";
    return value < 120 ? `${Number(value).toFixed(value < 10 ? 1 : 0)} s` : value < 7200 ? `${(value / 60).toFixed(1)} min` : `${(value / 3600).toFixed(1)} h`;
  }

  function share(value) {
    return value === null || value === undefined ? "–" : `${(value * 100).toFixed(value >= 0.999 || value === 0 ? 0 : 1)} %`;
  }

  // --- the dashboard's freshness panel ----------------------------------------------------------
  function freshnessPanel() {
    const card = h("div", {class: "card", id: "freshness"}, h("h2", {}, "Freshness"), h("p", {class: "muted"}, "Loading…"));
    async function load() {
      if (!card.isConnected) return;
      let report;
      try { report = await api("/freshness"); } catch (error) { card.replaceChildren(h("h2", {}, "Freshness"), h("p", {class: "error"}, error.message)); return; }
      const types = Object.entries(report.types);
      const head = ["type", "ETA", "within ETA: 10 min · 1 h · 24 h", "turnaround p50 / p95 (10 min)", "backlog",
        "predicted wait", "dropped stale / shed (1 h)", "policy"];
      const rows = types.map(([name, t]) => {
        const w = t.windows["10m"], hour = t.windows["1h"], day = t.windows["24h"];
        const low = t.eta && w.share_within_eta !== null && w.share_within_eta < t.alarm_within_eta;
        const late = t.eta && w.turnaround_p95_s !== null && w.turnaround_p95_s > t.eta;
        const policy = [t.order === "newest-first" ? "newest first" : "", t.stale ? "stale" : "", t.stop_running ? "stop running" : "",
          t.shed ? "shed" : ""].filter(Boolean).join(", ") || "–";
        return h("tr", {"data-jobtype": name},
          h("td", {}, link(`/jobs?jobtype=${encodeURIComponent(name)}`, name || "–")),
          h("td", {class: "num", "data-col": "eta"}, t.eta ? secs(t.eta) : "none"),
          h("td", {class: "num"}, h("span", {class: low ? "alarm" : "", "data-col": "share"}, share(w.share_within_eta)),
            h("span", {class: "muted"}, ` · ${share(hour.share_within_eta)} · ${share(day.share_within_eta)}`)),
          h("td", {class: `num ${late ? "alarm" : ""}`, "data-col": "p95"}, `${secs(w.turnaround_p50_s)} / ${secs(w.turnaround_p95_s)}`,
            t.eta ? h("span", {class: "muted"}, ` (ETA ${secs(t.eta)})`) : ""),
          h("td", {class: "num", "data-col": "backlog"}, t.backlog),
          h("td", {class: "num", "data-col": "wait"}, secs(t.predicted_wait_s)),
          h("td", {class: "num", "data-col": "dropped"}, `${hour.dropped.stale} / ${hour.dropped.shed}`),
          h("td", {class: "wrap muted"}, policy));
      });
      const injected = Object.entries(report.injector_dropped["1h"] || {}).map(([reason, n]) => `${reason} ${n}`).join(", ");
      const flows = Object.entries(report.workflows).filter(([_t, w]) => w["1h"]).map(([template, w]) =>
        `${template}: ${w["1h"].done} finished, p50 ${secs(w["1h"].turnaround_p50_s)}, p95 ${secs(w["1h"].turnaround_p95_s)}`).join("; ");
      card.replaceChildren(h("h2", {}, "Freshness: turnaround from data arrival against each type's ETA"),
        types.length ? h("table", {}, h("tr", {}, head.map((x) => h("th", {}, x))), rows) : h("p", {class: "muted"}, "no job types yet"),
        flows ? h("p", {class: "muted", "data-workflows": "turnaround"}, `Workflows, data arrival to finished (last hour): ${flows}`) : "",
        h("p", {class: "muted", "data-injector": "dropped"}, `Files the injector dropped in the last hour: ${injected || "none"}`));
    }
    const timer = setInterval(() => { if (card.isConnected) load(); else if (location.pathname !== "/") clearInterval(timer); }, 10000);
    return {node: card, update: debounced(load, 300)};
  }
  P.panels.push({id: "freshness", order: -10, make: freshnessPanel});

  // --- a job's outputs ----------------------------------------------------------------------------
  function summaryTable(summary) {
    if (summary === null || typeof summary !== "object") return h("pre", {}, JSON.stringify(summary));
    if (summary.error && Object.keys(summary).length === 1) return h("p", {class: "error"}, summary.error);
    const entries = Array.isArray(summary) ? summary.map((v, i) => [String(i), v]) : Object.entries(summary);
    return h("table", {class: "summary"}, entries.map(([key, value]) => h("tr", {},
      h("th", {}, key), h("td", {class: "wrap"}, typeof value === "object" && value !== null ? JSON.stringify(value) : String(value)))));
  }

  function outputsView(out) {
    const images = out.files.filter((f) => f.kind === "image");
    const parts = [];
    if (out.summary !== null && out.summary !== undefined) parts.push(h("h3", {}, "summary.json"), summaryTable(out.summary));
    if (images.length) {
      parts.push(h("div", {class: "images"}, images.map((f) => h("figure", {},
        h("a", {href: f.url}, h("img", {src: f.url, alt: f.name, loading: "lazy"})), h("figcaption", {}, f.name)))));
    }
    if (out.files.length) {
      parts.push(h("table", {class: "files"}, h("tr", {}, ["file", "size", "modified"].map((x) => h("th", {}, x))),
        out.files.map((f) => h("tr", {"data-file": f.name}, h("td", {}, link(f.url, f.name)), h("td", {class: "num"}, bytes(f.size)),
          h("td", {}, when(new Date(f.mtime * 1000).toISOString()))))));
    } else if (out.output_dir) {
      parts.push(h("p", {class: "muted"}, out.readable ? `nothing in ${out.output_dir}` : `${out.output_dir} is not readable by the server (result_dirs)`));
    } else {
      parts.push(h("p", {class: "muted"}, "no output directory (not run yet)"));
    }
    if (out.data.length) {
      parts.push(h("h3", {}, "Output data files"), h("table", {}, out.data.map((d) => h("tr", {},
        h("td", {}, d.datatag || "–"), h("td", {class: "wrap"}, d.url ? link(d.url, `${d.dirpath}/${d.name}`) : `${d.dirpath ? d.dirpath + "/" : ""}${d.name}`),
        h("td", {}, link(`/data/${d.uuid}`, "record")), h("td", {}, stateBadge(d.state))))));
    }
    return parts;
  }

  function jobOutputs(container, job) {
    const card = h("div", {class: "card", id: "outputs"}, h("h2", {}, "Outputs"), h("p", {class: "muted"}, "Loading…"));
    container.append(card);
    api(`/jobs/${job.uuid}/outputs`).then((out) => card.replaceChildren(h("h2", {}, "Outputs ", out.output_dir ? h("span", {class: "muted"}, out.output_dir) : ""), ...outputsView(out)),
      (error) => card.replaceChildren(h("h2", {}, "Outputs"), h("p", {class: "error"}, error.message)));
  }
  P.jobCards.push(jobOutputs);

  // --- latest results -----------------------------------------------------------------------------
  function latestResults() {
    const body = h("div", {class: "results"});
    P.MAIN.replaceChildren(h("h1", {}, "Latest results"), h("p", {class: "muted"}, "Per job type, the newest finished job's outputs."), body);
    let items = [];
    function paintAges() {
      for (const el of body.querySelectorAll("[data-finished]")) {
        el.textContent = `finished ${secs((Date.now() - new Date(el.dataset.finished)) / 1000)} ago`;
      }
    }
    async function load() {
      let reply;
      try { reply = await api("/results/latest"); } catch (error) { return failure(error); }
      items = reply.items;
      body.replaceChildren(...(items.length ? items.map((out) => h("div", {class: "card", "data-jobtype": out.jobtype, "data-job": out.job},
        h("h2", {}, out.jobtype, " ", h("span", {class: "muted"}, "· job "), link(`/jobs/${out.job}`, out.name || short(out.job)), " ",
          h("span", {class: "muted age", "data-finished": out.ts_sto}, "")),
        ...outputsView(out))) : [h("p", {class: "muted"}, "no finished jobs yet")]));
      paintAges();
    }
    load();
    const reload = debounced(load, 1000);
    const timer = setInterval(() => { if (body.isConnected) paintAges(); else clearInterval(timer); }, 5000);
    return {onChange(msg) {
      if (Object.values(msg.jobs || {}).some((j) => j.state === "finished")) reload();
    }};
  }
  P.routes.push([/^\/results$/, latestResults]);
})();
