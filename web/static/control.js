// The control room: the dashboard (alarms first, counts, charts, per-site and per-host panels and
// whatever panels other scripts add to P3S.panels), the errors and hosts pages, and the admin's bulk
// actions on the jobs list. Everything comes from the API; text is always inserted as text.
"use strict";

(function () {
  const P = window.P3S;
  const {h, api, when, clock, stateBadge, link, short, debounced, failure, MAIN, ROLE} = P;
  const JOB_STATES = P.JOB_STATES, PILOT_STATES = P.PILOT_STATES;

  async function post(path, body) {
    return api(path, {method: "POST", body: JSON.stringify(body || {})});
  }

  // --- alarms: firing first, or one green line ---------------------------------------------------
  function alarmStrip() {
    const node = h("section", {class: "alarms", id: "alarms", "aria-live": "polite"});
    let last = null;            // the last answer, and when it came
    function ackForm(alarm) {
      const reason = h("input", {type: "text", name: "reason", placeholder: "why (shown to everyone)", size: 28, required: true});
      const minutes = h("select", {name: "minutes"}, [15, 30, 60, 120, 240, 480, 1440].map((m) => h("option", {value: m, selected: m === 60}, m < 120 ? `${m} min` : `${m / 60} h`)));
      return h("form", {class: "ack-form", onsubmit: async (ev) => {
        ev.preventDefault();
        try { await post("/alarms/ack", {alarm: alarm.key, reason: reason.value, minutes: Number(minutes.value)}); refresh(); }
        catch (error) { window.alert(error.message); }
      }}, reason, " for ", minutes, " ", h("button", {type: "submit"}, "Silence"));
    }
    function row(alarm) {
      const since = alarm.since ? h("span", {class: "since"}, `since ${clock(new Date(alarm.since))}`) : "";
      const item = h("div", {class: `alarm-row ${alarm.silenced ? "silenced" : "firing"}`, "data-alarm": alarm.key},
        h("span", {class: "alarm-name"}, alarm.silenced ? "SILENCED " : "ALARM ", alarm.name), " ",
        h("span", {class: "alarm-message"}, alarm.message), " ", since, " ",
        h("span", {class: "muted", title: alarm.checks}, `(fires when: ${alarm.checks})`));
      if (alarm.silenced) {
        item.append(h("div", {class: "ack"}, `silenced by ${alarm.ack.by} until ${when(alarm.ack.until)}: `, h("q", {}, alarm.ack.reason), " ",
          h("button", {class: "secondary small", onclick: async () => { try { await post("/alarms/unack", {alarm: alarm.key}); refresh(); } catch (e) { window.alert(e.message); } }}, "Unsilence")));
      } else {
        const open = h("button", {class: "secondary small", onclick: () => { open.replaceWith(ackForm(alarm)); }}, "Acknowledge…");
        item.append(" ", open);
      }
      return item;
    }
    function paint() {
      if (!last) return;
      const firing = last.data.items.filter((a) => a.status === "alarm");
      const rows = firing.map(row);
      if (!firing.some((a) => !a.silenced)) {
        rows.unshift(h("div", {class: "all-clear", id: "all-clear"}, `✔ All clear, as of ${clock(new Date(last.data.as_of))}`,
          last.data.silenced ? ` (${last.data.silenced} silenced)` : ""));
      }
      const checks = h("details", {class: "checks"}, h("summary", {}, `${last.data.items.length} checks`),
        h("table", {}, h("tr", {}, ["check", "status", "value", "threshold", "fires when"].map((x) => h("th", {}, x))),
          last.data.items.map((a) => h("tr", {"data-check": a.key}, h("td", {}, a.name), h("td", {class: a.status === "alarm" ? "alarm" : "ok"}, a.status),
            h("td", {class: "num"}, a.value), h("td", {}, a.threshold), h("td", {class: "wrap muted"}, a.checks)))));
      node.replaceChildren(...rows, checks);
    }
    async function refresh() {
      try {
        last = {data: await api("/alarms"), at: new Date()};
        node.classList.remove("unknown");
        paint();
      } catch (error) {
        // Never "all clear" when the server cannot tell: say what is known and since when.
        node.classList.add("unknown");
        node.replaceChildren(h("div", {class: "alarm-row unknown", id: "alarms-unknown"},
          `Alarms unknown: the server does not answer (${error.message}).`,
          last ? ` Last known at ${clock(last.at)}: ${last.data.firing} firing.` : ""));
      }
    }
    return {node, refresh};
  }

  // --- dashboard ------------------------------------------------------------------------------------
  function countsCard(title, counts, states, hrefOf) {
    return h("div", {class: "card counts-card"}, h("h2", {}, title), h("div", {class: "counts"},
      states.map((st) => h("div", {class: "count", "data-count": st}, h("a", {href: hrefOf(st)},
        h("span", {class: "n"}, counts[st] || 0), stateBadge(st))))));
  }

  function sitesPanel() {
    const node = h("div", {class: "card", id: "sites-panel"}, h("h2", {}, "Sites"));
    let sites = [];
    return {node, async load() { sites = (await api("/sites")).items; },
      update(summary, stats) {
        const names = [...new Set([...sites.map((x) => x.name), ...Object.keys(summary.pilots_by_site)])].sort();
        const nominal = Object.fromEntries(sites.map((x) => [x.name, x.pilots]));
        node.replaceChildren(h("h2", {}, "Sites"), names.length ? h("table", {},
          h("tr", {}, ["site", "live", "nominal", "running", "idle", "lost 1 h"].map((x) => h("th", {class: x === "site" ? "" : "num"}, x))),
          names.map((name) => {
            const c = summary.pilots_by_site[name] || {};
            const live = (c.idle || 0) + (c.running || 0);
            const short_ = nominal[name] !== undefined && live < nominal[name];
            return h("tr", {"data-site": name}, h("td", {}, nominal[name] !== undefined ? link(`/sites/${encodeURIComponent(name)}`, name || "–") : (name || "(none)")),
              h("td", {class: `num ${short_ ? "alarm" : ""}`}, live), h("td", {class: "num"}, nominal[name] ?? "–"),
              h("td", {class: "num"}, c.running || 0), h("td", {class: "num"}, c.idle || 0), h("td", {class: "num"}, (stats.lost_pilots_1h || {})[name] || 0));
          })) : h("p", {class: "muted"}, "no pilots and no sites yet"));
      }};
  }

  function hostsPanel() {
    const node = h("div", {class: "card", id: "hosts-panel"}, h("h2", {}, "Hosts"));
    async function load() {
      const rows = (await api("/hosts")).items.slice(0, 8);
      node.replaceChildren(h("h2", {}, "Hosts ", link("/hosts", "(all)")),
        rows.length ? hostTable(rows, load) : h("p", {class: "muted"}, "no host has run a job lately"));
    }
    return {node, load, update() {}};
  }

  function hostTable(rows, reload) {
    return h("table", {class: "hosts"}, h("tr", {}, ["host", "pilots", "ok", "bad", "failed in a row", "state", ""].map((x) => h("th", {}, x))),
      rows.map((r) => h("tr", {"data-host": r.host, class: r.flagged || r.drained ? "bad-row" : ""},
        h("td", {}, link(`/jobs?host=${encodeURIComponent(r.host)}`, r.host)),
        h("td", {class: "num"}, Object.values(r.pilots).reduce((a, b) => a + b, 0)),
        h("td", {class: "num"}, r.recent_ok), h("td", {class: "num"}, r.recent_bad), h("td", {class: "num"}, r.streak),
        h("td", {}, r.drained ? h("span", {class: "badge bad", title: r.reason || ""}, r.flagged ? "black hole, drained" : "drained")
          : r.flagged ? h("span", {class: "badge bad", title: r.reason || ""}, "black hole") : h("span", {class: "badge ok"}, "ok")),
        h("td", {}, ROLE !== "admin" ? "" : (r.flagged || r.drained)
          ? h("button", {class: "small", "data-action": "clear", onclick: async () => {
            if (!window.confirm(`Clear host ${r.host}? Its pilots get work again.`)) return;
            try { await post(`/hosts/${encodeURIComponent(r.host)}/clear`); reload(); } catch (e) { window.alert(e.message); }
          }}, "Clear")
          : h("button", {class: "small secondary", "data-action": "drain", onclick: async () => {
            if (!window.confirm(`Drain host ${r.host}? Its pilots get no new work until it is cleared.`)) return;
            try { await post(`/hosts/${encodeURIComponent(r.host)}/drain`, {reason: "drained from the monitor"}); reload(); } catch (e) { window.alert(e.message); }
          }}, "Drain")))));
  }

  function dashboard() {
    const alarms = alarmStrip();
    const counts = h("div", {class: "grid counts-row"});
    const throughput = P.chart({unit: "jobs/min", digits: 0, series: [
      {name: "started", colour: "#1c8fb8"}, {name: "finished", colour: "#2e9e4f"}, {name: "failed", colour: "#d13b3b"}]});
    const latency = P.chart({unit: "s", digits: 2, series: [
      {name: "defined→started p50", colour: "#3f63c9"}, {name: "p95", colour: "#3f63c9", dash: [6, 4]},
      {name: "queue wait p50", colour: "#e0732c"}, {name: "p95", colour: "#e0732c", dash: [6, 4]}]});
    const sites = sitesPanel(), hosts = hostsPanel();
    const extra = [...P.panels].sort((a, b) => (a.order || 0) - (b.order || 0)).map((panel) => {
      try { return panel.make(); } catch (error) { return {node: h("div", {class: "card error"}, `${panel.id}: ${error.message}`)}; }
    });
    const windows = h("div", {class: "card"}), byType = h("div", {class: "card"});
    windows.id = "windows";
    MAIN.replaceChildren(h("h1", {class: "sr-only"}, "Dashboard"), alarms.node, counts,
      h("div", {class: "grid charts"},
        h("div", {class: "card"}, h("h2", {}, "Jobs per minute, last hour"), throughput.node),
        h("div", {class: "card"}, h("h2", {}, "Dispatch latency and queue wait (seconds), last hour"), latency.node)),
      h("div", {class: "grid panels"}, sites.node, hosts.node, ...extra.map((x) => x.node)),
      h("div", {class: "grid wide"}, windows, byType));

    function paintSummary(summary) {
      counts.replaceChildren(
        countsCard(`Jobs (${summary.jobs_total})`, summary.jobs, JOB_STATES, (st) => `/jobs?state=${st}`),
        countsCard(`Pilots (${summary.pilots_total})`, summary.pilots, PILOT_STATES, (st) => `/pilots?state=${st}`),
        h("div", {class: "card"}, h("h2", {}, "Broker"), h("dl", {class: "fields"},
          h("dt", {}, "ready jobs"), h("dd", {"data-count": "ready"}, summary.queue.ready),
          h("dt", {}, "pilots waiting"), h("dd", {}, summary.queue.waiting_pilots),
          h("dt", {}, "database"), h("dd", {}, summary.server.database))));
    }

    let stats = null;
    async function load() {
      try {
        [stats] = await Promise.all([api("/stats"), sites.load(), hosts.load(), alarms.refresh()]);
      } catch (error) {
        if (!stats) return failure(error);
        return;                 // keep what is shown: the stale banner and the alarm strip say why
      }
      paintSummary(stats.summary);
      sites.update(stats.summary, stats);
      for (const panel of extra) if (panel.update) try { panel.update(stats.summary, stats); } catch (_e) { /* its own card says */ }
      const rows = stats.series, xs = rows.map((r) => r.t);
      throughput.update(xs, [rows.map((r) => r.started), rows.map((r) => r.finished), rows.map((r) => r.failed)]);
      latency.update(xs, ["latency_p50_s", "latency_p95_s", "wait_p50_s", "wait_p95_s"].map((k) => rows.map((r) => r[k])));
      const events = ["defined", "started", "finished", "failed", "timelimit", "pilot_lost", "nonstarter"];
      windows.replaceChildren(h("h2", {}, "Jobs in the last …"), h("table", {},
        h("tr", {}, h("th", {}, ""), events.map((e) => h("th", {class: "num"}, e))),
        Object.entries(stats.windows).map(([name, w]) => h("tr", {"data-window": name}, h("th", {}, name),
          events.map((e) => h("td", {class: "num"}, w.total[e] ?? 0))))));
      const types = Object.keys(stats.windows["24h"].by_type);
      byType.replaceChildren(h("h2", {}, "By job type (last hour / 24 h) and limits"), h("table", {},
        h("tr", {}, h("th", {}, "type"), ["started", "finished", "failed"].map((e) => h("th", {class: "num"}, e)), h("th", {class: "num"}, "limit"), h("th", {class: "num"}, "active")),
        types.map((t) => h("tr", {}, h("td", {}, link(`/jobs?jobtype=${encodeURIComponent(t)}`, t || "–")),
          ["started", "finished", "failed"].map((e) => h("td", {class: "num"}, `${(stats.windows["1h"].by_type[t] || {})[e] || 0} / ${stats.windows["24h"].by_type[t][e]}`)),
          h("td", {class: "num"}, stats.limits[t] ?? "–"),
          h("td", {class: "num"}, ((stats.summary.jobs_by_type[t] || {}).dispatched || 0) + ((stats.summary.jobs_by_type[t] || {}).running || 0))))));
    }

    const refresh = debounced(load, 2000);
    const poll = setInterval(() => { if (location.pathname === "/") alarms.refresh(); else clearInterval(poll); }, 5000);
    load();
    return {
      onChange(msg) {
        if (msg.summary) { paintSummary(msg.summary); if (stats) sites.update(msg.summary, stats); }
        refresh();
      },
      onReconnect: load,
    };
  }

  // --- errors page ------------------------------------------------------------------------------------
  function errorsPage() {
    const params = new URLSearchParams(location.search);
    const hours = params.get("hours") || "1", by = params.get("by") || "exit_code,host";
    const form = h("form", {class: "filters", onsubmit: (ev) => {
      ev.preventDefault();
      const next = new URLSearchParams({hours: form.elements.hours.value, by: form.elements.by.value});
      history.replaceState(null, "", `/errors?${next}`);
      page.reload();
    }},
    h("label", {}, "last ", h("select", {name: "hours"}, [["1", "hour"], ["24", "day"], ["168", "week"]].map(([v, t]) => h("option", {value: v, selected: v === hours}, t)))),
    h("label", {}, "grouped by job type × ", h("select", {name: "by"}, [["exit_code,host", "exit code × host"], ["error_line,host", "error line × host"],
      ["exit_code", "exit code"], ["error_line", "error line"], ["host", "host"]].map(([v, t]) => h("option", {value: v, selected: v === by}, t)))),
    h("button", {type: "submit"}, "Show"));
    const body = h("div", {class: "card"});
    MAIN.replaceChildren(h("h1", {}, "Errors"), form, body);
    async function load() {
      const q = new URLSearchParams(location.search);
      let reply;
      try { reply = await api(`/errors?hours=${q.get("hours") || 1}&by=${q.get("by") || "exit_code,host"}`); } catch (error) { return failure(error); }
      const keys = reply.by;
      body.replaceChildren(h("p", {class: "muted"}, `${reply.total} unsuccessful job(s) since ${when(reply.since)}${reply.truncated ? " (only the newest counted)" : ""}`),
        reply.items.length ? h("table", {id: "errors"}, h("tr", {}, ["count", "type", "ended", ...keys.map((k) => k.replace("_", " ")), "last", "examples", ""].map((x) => h("th", {}, x))),
          reply.items.map((g) => h("tr", {"data-group": [g.jobtype, g.state, ...keys.map((k) => g[k])].join("|")},
            h("td", {class: "num big-n"}, g.count), h("td", {}, link(`/jobs?jobtype=${encodeURIComponent(g.jobtype)}&state=${g.state}`, g.jobtype || "–")),
            h("td", {}, stateBadge(g.state)), keys.map((k) => h("td", {class: k === "error_line" ? "wrap mono" : ""},
              k === "host" ? (g.host ? link(`/jobs?host=${encodeURIComponent(g.host)}&state=${g.state}`, g.host) : "–") : (g[k] ?? "–"))),
            h("td", {}, when(g.last)),
            h("td", {}, g.examples.map((e) => [link(`/jobs/${e.uuid}`, short(e.uuid)), " "])),
            h("td", {}, ROLE === "admin" ? h("button", {class: "small", onclick: () => bulk("rerun",
              new URLSearchParams({state: g.state, jobtype: g.jobtype, ...(g.host ? {host: g.host} : {})}), load)}, "Rerun these…") : "")))) :
          h("p", {class: "all-clear"}, "No unsuccessful jobs in this window."));
    }
    const page = {reload: load, onChange: debounced(load, 3000), onReconnect: load};
    load();
    return page;
  }

  function hostsPage() {
    const body = h("div", {class: "card"});
    MAIN.replaceChildren(h("h1", {}, "Hosts"), h("p", {class: "muted"},
      "A host whose last jobs all failed is a black hole: flagged, alarmed and (by configuration) drained — its pilots get no new work until an operator clears it."), body);
    async function load() {
      let reply;
      try { reply = await api("/hosts"); } catch (error) { return failure(error); }
      body.replaceChildren(reply.items.length ? hostTable(reply.items, load) : h("p", {class: "muted"}, "no host has run a job lately"));
    }
    load();
    return {onChange: debounced(load, 2000), onReconnect: load};
  }

  // --- bulk actions (admin): a count first, then the action --------------------------------------------
  async function bulk(verb, filter, done) {
    let count;
    try { count = await api(`/jobs/${verb}?${filter}`, {method: "POST", body: JSON.stringify({dry_run: true})}); }
    catch (error) { window.alert(error.message); return; }
    if (!count.matched) { window.alert(`No job matches ${filter} that can be ${verb === "rerun" ? "rerun" : "killed"}.`); return; }
    if (!window.confirm(`${verb === "rerun" ? "Rerun" : "Kill"} ${count.matched} job(s) matching ${filter.toString().replaceAll("&", ", ")}?`)) return;
    try {
      const result = await api(`/jobs/${verb}?${filter}`, {method: "POST", body: JSON.stringify({})});
      const skipped = result.skipped.length ? ` (${result.skipped.length} skipped: ${result.skipped[0].reason})` : "";
      window.alert(`${verb === "rerun" ? "Rerun" : "Killed"}: ${result.done.length} of ${result.matched}${skipped}`);
    } catch (error) { window.alert(error.message); }
    if (done) done();
  }

  P.listActions.jobs = (title) => {
    if (ROLE !== "admin") return null;
    const bar = h("span", {class: "bulk"});
    title.append(" ", bar);
    return (params) => {
      const filter = new URLSearchParams(params);
      for (const k of ["limit", "offset", "sort"]) filter.delete(k);
      bar.replaceChildren(...(filter.toString() ? [
        h("button", {class: "small", "data-action": "rerun-matching", onclick: () => bulk("rerun", filter, () => location.reload())}, "Rerun matching…"), " ",
        h("button", {class: "small danger", "data-action": "kill-matching", onclick: () => bulk("kill", filter, () => location.reload())}, "Kill matching…")] : []));
    };
  };

  P.routes.push([/^\/$/, dashboard], [/^\/errors$/, errorsPage], [/^\/hosts$/, hostsPage]);
})();
