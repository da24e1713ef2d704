// netdeploy dashboard: live updates over Server-Sent Events, and admin actions in place.
// Plain JavaScript, no build step. The page works without it (forms post, links filter);
// this script only keeps it current. Text from the network is only ever set as textContent,
// never parsed as HTML.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("nd-data").textContent);
  const byId = (id) => document.getElementById(id);
  const rowOf = (mac) => byId("n-" + mac.replaceAll(":", ""));
  const tileOf = (mac) => byId("t" + mac.replaceAll(":", ""));
  // the gate's words name CLI commands; the page has buttons (as dashboard_view.without_commands)
  const withoutCommands = (text) =>
    text.replace(/\s*\(`netdeploy[^)]*\)/, "").replace(/[;:]\s*[^;:]*`netdeploy[^`]*`[^;]*$/, "");
  const rates = new Map(); // mac -> {t, amount, unit, rate}: successive progress reports
  const MAX_LOG_ROWS = 300;
  let lastId = data.lastEventId;
  let logFilter = data.logFilter;

  const el = (tag, text, cls) => {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  };
  const setText = (node, text) => {
    if (node && node.textContent !== text) node.textContent = text;
  };
  const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1);

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const pad = (n) => String(n).padStart(2, "0");
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  function localTime(iso) {
    const when = new Date(iso);
    return isNaN(when) ? "" : when.toLocaleTimeString([], { hour12: false });
  }

  // ---------------------------------------------------------------- time in state, staleness
  // Rows carry data-heard (epoch s of the node's last request or change of state) and data-lim
  // (seconds of quiet after which it is stale; netdeploy/rollout/liveness.py). Ticking them
  // here marks a frozen node within a second of its limit, without asking the server.
  const epoch = (iso) => Math.floor(Date.parse(iso) / 1000);
  let attentionKey = null;

  function tick() {
    const now = Date.now() / 1000;
    for (const cell of document.querySelectorAll("td.since[data-since]")) {
      const since = Number(cell.dataset.since);
      if (since) setText(cell, duration(now - since));
    }
    let stale = 0;
    for (const row of document.querySelectorAll("table.nodes tr[data-heard]")) {
      const heard = Number(row.dataset.heard);
      if (!heard) continue;
      const quiet = now - heard;
      setText(row.querySelector("td.seen"), duration(quiet) + " ago");
      const lim = row.dataset.lim === undefined ? null : Number(row.dataset.lim);
      const isStale = lim !== null && quiet > lim;
      stale += isStale;
      if (row.classList.contains("stale") !== isStale) {
        row.classList.toggle("stale", isStale);
        const tile = tileOf(row.dataset.mac);
        if (tile) tile.classList.toggle("stale", isStale);
      }
    }
    const count = byId("stale-count");
    count.hidden = stale === 0 && filter !== "stale";
    setText(count.querySelector("b"), String(stale));
    renderAttention();
  }

  // ---------------------------------------------------------------- needs attention
  function renderAttention() {
    const rows = [...document.querySelectorAll("table.nodes tr[data-state]")].filter(
      (r) => r.dataset.state === "failed" || r.classList.contains("stale") || r.querySelector(".alarm"),
    );
    const rank = (r) => (r.querySelector(".alarm") ? 0 : r.dataset.state === "failed" ? 1 : 2);
    rows.sort((a, b) => rank(a) - rank(b) || Number(a.dataset.heard) - Number(b.dataset.heard));
    const key = rows.map((r) => r.dataset.mac + r.dataset.state + r.className).join();
    if (key === attentionKey) {
      for (const item of byId("attention-list").children) {
        const row = rowOf(item.dataset.mac);
        if (row) setText(item.querySelector(".ago"), "last report " + row.querySelector("td.seen").textContent);
      }
      return;
    }
    attentionKey = key;
    byId("attention-list").replaceChildren(
      ...rows.map((row) => {
        const item = el("li");
        item.dataset.mac = row.dataset.mac;
        const link = el("a", row.dataset.label);
        link.href = "/node/" + encodeURIComponent(row.dataset.label);
        const state = row.dataset.state;
        item.append(link, " ", el("span", state, "state s-" + state));
        if (row.classList.contains("stale")) item.append(" ", el("span", "stale", "stale-mark"));
        const card = row.closest("article.cluster");
        const where = card ? card.dataset.cluster + " · " : "";
        item.append(" ", el("span", where, "meta"), el("span", "last report " + row.querySelector("td.seen").textContent, "meta ago"));
        item.append(" ", el("span", row.querySelector("td.msg").textContent, "msg"));
        return item;
      }),
    );
    setText(byId("attention-n"), String(rows.length));
    document.querySelector("#attention .empty").hidden = rows.length > 0;
  }

  // ---------------------------------------------------------------- filter by state
  let filter = data.stateFilter || "";
  function setFilter(state) {
    filter = filter === state ? "" : state;
    for (const row of document.querySelectorAll("table.nodes tr[data-state]")) {
      row.hidden = !!filter && !(row.dataset.state === filter || (filter === "stale" && row.classList.contains("stale")));
    }
    for (const tile of document.querySelectorAll(".tiles a")) {
      const row = rowOf(tile.id.slice(1).match(/../g).join(":"));
      tile.classList.toggle("dim", !!row && row.hidden);
    }
    for (const link of document.querySelectorAll("#counts a.count")) {
      const on = !!filter && link.dataset.state === filter;
      link.classList.toggle("on", on);
      if (on) link.setAttribute("aria-current", "true");
      else link.removeAttribute("aria-current");
    }
    document.querySelector("#counts a.all").hidden = !filter;
    const query = new URLSearchParams(location.search);
    if (filter) query.set("state", filter);
    else query.delete("state");
    history.replaceState(null, "", (query.toString() ? "?" + query : location.pathname) + location.hash);
  }

  // ---------------------------------------------------------------- live status
  function live(cls, text) {
    const badge = byId("live");
    badge.className = "live " + cls;
    setText(badge, text);
  }

  // ---------------------------------------------------------------- node rows
  function renderActions(row, state) {
    if (!data.admin || !row.closest("table").querySelector("thead th.act-h")) return;
    let cell = row.querySelector("td.act");
    if (!cell) row.append((cell = el("td", undefined, "act")));
    const label = row.dataset.label;
    const wanted = Object.keys(data.nodeActions).filter((a) => data.nodeActions[a].includes(state));
    const have = [...cell.querySelectorAll("button")].map((b) => b.dataset.action);
    if (wanted.join() === have.join()) return;
    cell.replaceChildren(
      ...wanted.map((action) => {
        const button = el("button", cap(action));
        Object.assign(button, { type: "submit", name: "mac", value: row.dataset.mac });
        button.setAttribute("form", "act");
        button.setAttribute("formaction", "/actions/" + action);
        button.setAttribute("aria-label", `${cap(action)} ${label}`);
        Object.assign(button.dataset, { action, label });
        return button;
      }),
    );
  }

  function showProgress(row, ev, percent, detail) {
    let bar = row.querySelector("progress");
    if (!bar) {
      bar = el("progress");
      bar.max = 100;
      row.querySelector("td.prog").prepend(bar);
    }
    bar.hidden = false;
    const tile = tileOf(row.dataset.mac);
    if (tile) tile.className = tile.className.replace(/\bp\d+\b/, "p" + Math.min(10, Math.floor(percent / 10)));
    bar.value = Math.max(0, Math.min(100, percent));
    // rate and ETA from successive reports, timed by the server's clock (ev.at), smoothed
    const mac = row.dataset.mac;
    const useBytes = typeof detail.bytes === "number" && typeof detail.total === "number";
    const unit = useBytes ? "bytes" : "percent";
    const amount = useBytes ? detail.bytes : percent;
    const total = useBytes ? detail.total : 100;
    const t = Date.parse(ev.at) / 1000;
    const prev = rates.get(mac);
    let rate = prev && prev.unit === unit ? prev.rate : null;
    if (prev && prev.unit === unit && t > prev.t && amount >= prev.amount) {
      const now = (amount - prev.amount) / (t - prev.t);
      rate = rate === null ? now : 0.7 * rate + 0.3 * now;
    }
    const entry = { t, amount, total, unit, rate };
    rates.set(mac, entry);
    progressLine(row, percent, entry);
  }

  function progressLine(row, percent, { amount, total, unit, rate }) {
    let line = `${Math.round(percent)}%`;
    if (rate > 0) {
      line += unit === "bytes" ? ` · ${(rate / 1e6).toFixed(1)} MB/s` : ` · ${(rate * 60).toFixed(1)} %/min`;
      line += ` · ETA ${duration((total - amount) / rate)}`;
    }
    setText(row.querySelector(".rate"), line);
  }

  function hideProgress(row) {
    const bar = row.querySelector("progress");
    if (bar) bar.hidden = true;
    setText(row.querySelector(".rate"), "—");
    rates.delete(row.dataset.mac);
  }

  function addDiscovered(ev) {
    const body = document.querySelector("#discovered tbody");
    const row = el("tr");
    row.id = "n-" + ev.mac.replaceAll(":", "");
    Object.assign(row.dataset, { mac: ev.mac, state: ev.to || "discovered", label: ev.mac });
    const head = el("th");
    head.scope = "row";
    head.append(el("span", "—", "host"), " ", el("span", ev.mac, "mac"));
    const cells = [
      ["unknown", "role"],
      ["", ""],
      ["", "prog"],
      ["", "since"],
      ["", "seen"],
      ["", "msg"],
    ].map(([text, cls]) => el("td", text, cls));
    cells[1].append(el("span", ev.to || "discovered", "state s-" + (ev.to || "discovered")));
    cells[2].append(el("span", "—", "rate"));
    cells[3].dataset.since = epoch(ev.at);
    row.dataset.heard = epoch(ev.at);
    row.append(head, ...cells);
    body.append(row);
    document.querySelector("#discovered .empty").hidden = true;
    return row;
  }

  const STATES = ["discovered", "registered", "pxe", "imaging", "imaged", "held", "released", "starting", "joined", "failed"];
  function recount() {
    const counts = new Map();
    for (const row of document.querySelectorAll("table.nodes tr[data-state]")) {
      counts.set(row.dataset.state, (counts.get(row.dataset.state) || 0) + 1);
    }
    const list = byId("counts");
    const keep = [...list.querySelectorAll("a.count[data-state='stale'], a.count.all")].map((a) => a.parentElement);
    list.replaceChildren(
      ...STATES.filter((state) => counts.has(state)).map((state) => {
        const item = el("li");
        const link = el("a", undefined, "count" + (filter === state ? " on" : ""));
        link.href = `?state=${state}#overview`;
        link.dataset.state = state;
        link.append(el("span", state, "state s-" + state), " ", el("b", String(counts.get(state))));
        item.append(link);
        return item;
      }),
      ...keep,
    );
  }

  function applyToNode(ev, many) {
    const detail = ev.detail || {};
    let row = rowOf(ev.mac);
    if (!row) {
      if (ev.to !== "discovered" && ev.kind !== "discovered") return;
      row = addDiscovered(ev);
    }
    if (HEARD.has(ev.kind) && ev.at) row.dataset.heard = epoch(ev.at);
    if (ev.kind === "state" && ev.to) {
      row.dataset.state = ev.to;
      const badge = row.querySelector(".state");
      badge.className = "state s-" + ev.to;
      setText(badge, ev.to);
      row.querySelector("td.since").dataset.since = epoch(ev.at);
      const card = row.closest("article.cluster");
      const limits = data.staleLimits[(card && card.dataset.cluster) || ""] || {};
      if (limits[ev.to] === undefined || row.querySelector("td.role").textContent === "unknown") delete row.dataset.lim;
      else row.dataset.lim = limits[ev.to];
      const tile = tileOf(ev.mac);
      if (tile) {
        const full = ["imaged", "held", "released", "starting", "joined"].includes(ev.to) ? 10 : 0;
        tile.className = `s-${ev.to} p${full}` + (row.classList.contains("stale") ? " stale" : "");
        tile.title = `${row.dataset.label}: ${ev.to}`;
      }
      if (filter) row.hidden = !(row.dataset.state === filter || (filter === "stale" && row.classList.contains("stale")));
      if (ev.to !== "imaging") hideProgress(row);
      else if (typeof detail.progress !== "number") showProgress(row, ev, 0, {}); // the bar, at 0
      renderActions(row, ev.to);
      if (!many) recount(); // a wave counts once, after its last node
    }
    let percent = typeof detail.progress === "number" ? detail.progress : null;
    if (percent === null && typeof detail.bytes === "number" && detail.total > 0) {
      percent = (100 * detail.bytes) / detail.total;
    }
    if (percent !== null && row.dataset.state === "imaging") showProgress(row, ev, percent, detail);
    // the node's own last word (the store's `message`); a transition's reason is in the log
    if (typeof detail.message === "string") setText(row.querySelector("td.msg"), detail.message);
    row.classList.remove("flash");
    void row.offsetWidth; // restart the highlight animation
    row.classList.add("flash");
  }

  function applyToCluster(ev) {
    const detail = ev.detail || {};
    const gate = detail.gate ?? (ev.kind === "gate" ? ev.to : undefined);
    if (typeof gate !== "string") return;
    const card = document.querySelector(`article.cluster[data-cluster="${CSS.escape(ev.cluster)}"]`);
    if (!card) return;
    const rack = document.querySelector(`.rackgroup[data-cluster="${CSS.escape(ev.cluster)}"]`);
    for (const badge of [card.querySelector(".gate"), rack && rack.querySelector(".gate")]) {
      if (!badge) continue;
      badge.className = "gate g-" + gate;
      badge.dataset.gate = gate;
      setText(badge, data.gateLabels[gate] || gate);
    }
    // buttons rendered for another gate (Retry the blocker, Release next) would mislead now
    const actions = card.querySelector(".gate-actions");
    if (actions) actions.hidden = actions.dataset.gate !== gate;
    const text = detail.gate_detail ?? detail.message ?? detail.reason;
    if (typeof text === "string") setText(card.querySelector(".gdetail"), withoutCommands(text));
  }

  // issue 16: the member list the cluster itself reported (event kind "members"), beside
  // each node's own state; mirrors netdeploy.rollout.membership.in_cluster_label
  function applyMembers(ev) {
    const card = document.querySelector(`article.cluster[data-cluster="${CSS.escape(ev.cluster)}"]`);
    if (!card || ev.kind !== "members") return;
    const members = (ev.detail && ev.detail.members) || [];
    const byName = new Map(members.map((m) => [String(m.name).toLowerCase(), m]));
    const rows = [...card.querySelectorAll("tr[data-mac]")];
    const configured = new Set(rows.map((r) => r.dataset.label.toLowerCase()));
    const listed = members
      .map((m) => `${m.name} ${m.state}` + (configured.has(String(m.name).toLowerCase()) ? "" : " (not configured)"))
      .join(", ");
    setText(card.querySelector(".members"), `the cluster lists: ${listed || "nobody"} (reported by ${ev.detail.reported_by})`);
    for (const row of rows) {
      const m = byName.get(row.dataset.label.toLowerCase());
      const joined = row.dataset.state === "joined";
      let label = "";
      if (!m) label = joined ? "joined, but not in the cluster's list" : "not listed";
      else if (m.up) label = "up";
      else label = joined ? `joined, but the cluster says ${m.state}` : m.state;
      setText(row.querySelector(".incluster"), " · in cluster: " + label);
    }
  }

  // ---------------------------------------------------------------- event log
  function labelOf(mac) {
    const row = mac && rowOf(mac);
    return row ? row.dataset.label : mac || "";
  }

  function clusterOfMac(mac) {
    const row = mac && rowOf(mac);
    const card = row && row.closest("article.cluster");
    return card ? card.dataset.cluster : "";
  }

  function matchesFilter(ev) {
    const node = (logFilter.node || "").trim().toLowerCase();
    if (node && ![ev.mac || "", labelOf(ev.mac)].some((v) => v.toLowerCase() === node)) {
      const bare = node.replace(/[^0-9a-f]/g, "");
      if (!(bare.length === 12 && (ev.mac || "").replaceAll(":", "") === bare)) return false;
    }
    const cluster = logFilter.cluster || "";
    return !cluster || ev.cluster === cluster || clusterOfMac(ev.mac) === cluster;
  }

  function logRow(ev) {
    const row = el("tr");
    row.dataset.id = ev.id;
    const time = el("time", localTime(ev.at));
    time.dateTime = ev.at || "";
    const first = el("td");
    first.append(time);
    row.className = "sev-" + (ev.severity || "info");
    row.append(first, el("td", labelOf(ev.mac)), el("td", ev.cluster || ""));
    const kind = el("td");
    kind.append(el("span", ev.kind, "kind"));
    if (ev.severity && ev.severity !== "info") kind.append(" ", el("span", ev.severity, "sev"));
    row.append(kind, el("td", ev.text));
    return row;
  }

  function prependLog(ev) {
    // progress reports without an id are announced, not recorded: the log shows the record
    if (ev.id === null || ev.id === undefined || !matchesFilter(ev)) return;
    const body = byId("log-rows");
    body.prepend(logRow(ev));
    while (body.rows.length > MAX_LOG_ROWS) body.deleteRow(-1);
  }

  async function loadLog(event) {
    event.preventDefault();
    const form = event.target;
    logFilter = { node: form.node.value.trim(), cluster: form.cluster.value };
    const query = new URLSearchParams({ ...logFilter, limit: "100" });
    const error = byId("log-error");
    const answer = await fetch("/api/events/log?" + query, { headers: { Accept: "application/json" } });
    const body = await answer.json().catch(() => ({ error: `HTTP ${answer.status}` }));
    history.replaceState(null, "", "?" + new URLSearchParams(logFilter) + "#log");
    if (!answer.ok) {
      error.hidden = false;
      setText(error, body.error || `HTTP ${answer.status}`);
      byId("log-rows").replaceChildren();
      return;
    }
    error.hidden = true;
    byId("log-rows").replaceChildren(...body.events.map(logRow));
  }

  // ---------------------------------------------------------------- multicast sessions
  // Built like the server renders them (templates/_multicast.html, http/multicast_view.py).
  // Polled every MC_POLL_MS only while a session waits or runs; a multicast event on the
  // stream (a join, a start, a verdict) triggers a fresh look, so an idle page asks nothing.
  const MC_POLL_MS = 2000;
  const MC_ACTIVE = ["waiting", "running", "repairing"];
  const mc = { timer: null, busy: false, again: false };
  const percent = (n) => `${Math.round(n)}%`;

  function size(n) {
    if (typeof n !== "number") return "—";
    if (n < 1024) return `${n} B`;
    let value = n;
    for (const unit of ["KiB", "MiB", "GiB", "TiB"]) {
      value /= 1024;
      if (value < 1024 || unit === "TiB") return `${value.toFixed(1)} ${unit}`;
    }
  }

  function mcLabel(r) {
    const row = r.mac && rowOf(r.mac);
    return (row && row.dataset.label) || r.name || r.mac || r.ip;
  }

  function mcTally(s) {
    const counts = new Map();
    for (const r of s.receivers) counts.set(r.state, (counts.get(r.state) || 0) + 1);
    const sorted = [...counts].sort(([a], [b]) => (a < b ? -1 : 1));
    return sorted.map(([state, n]) => `${n} ${state}`).join(", ") || "none";
  }

  function mcFacts(s) {
    const active = MC_ACTIVE.includes(s.state);
    const title = `${s.image} → ${s.cluster || "no cluster"}`;
    let detail = s.detail || "";
    if (s.state === "waiting") {
      detail = `${s.receivers.length} joined` + (s.expected ? ` of ${s.expected} expected` : "");
    }
    let rate = "—";
    if (active && s.state !== "waiting") rate = `${s.rate_mbit.toFixed(1)} Mbit/s`;
    else if (!active && s.elapsed) {
      rate = `${((s.bytes_sent * 8) / s.elapsed / 1e6).toFixed(1)} Mbit/s average`;
    }
    const ratio = s.size ? `${(s.bytes_sent / s.size).toFixed(2)}×` : "—";
    return { active, title, detail, rate, ratio, hex: s.id.toString(16).padStart(8, "0") };
  }

  function progressBar(value, label) {
    const bar = el("progress");
    Object.assign(bar, { max: 100, value });
    bar.setAttribute("aria-label", label);
    return bar;
  }

  function mcReceiver(r) {
    const row = el("tr");
    Object.assign(row.dataset, { mac: r.mac || "", state: r.state });
    const label = mcLabel(r);
    const head = el("th");
    head.scope = "row";
    head.append(el("span", label, "host"), " ", el("span", r.mac || "", "mac"));
    const cell = (h, cls, ...content) => {
      const td = el("td", undefined, cls);
      td.dataset.h = h;
      td.append(...content);
      return td;
    };
    const state = [el("span", r.state, "state r-" + r.state)];
    if (r.state === "dropped") state.push(" ", el("span", "finishing by HTTP", "via"));
    let note = (r.reason || "").replace(/; finishes by unicast$/, "");
    if (!note && r.state === "done" && typeof r.done_after === "number") {
      note = `verified after ${r.done_after.toFixed(1)} s`;
    }
    row.append(
      head,
      cell("IP", "ip", r.ip || ""),
      cell("State", "", ...state),
      cell(
        "Progress",
        "prog",
        progressBar(r.progress, `${label} multicast progress`),
        el("span", percent(r.progress), "rate"),
      ),
      cell("Loss", "loss", `${(100 * r.loss).toFixed(1)}%`),
      cell("Note", "msg", note),
    );
    return row;
  }

  function mcSession(s, open) {
    const f = mcFacts(s);
    const article = el("article", undefined, "mcs");
    article.id = "mc-" + f.hex;
    Object.assign(article.dataset, { session: f.hex, state: s.state });
    article.setAttribute("aria-labelledby", `mc-${f.hex}-h`);
    const head = el(f.active ? "div" : "summary", undefined, "chead");
    const title = el("span", f.title, "mtitle");
    title.id = `mc-${f.hex}-h`;
    const meta = `session ${f.hex} · ${s.group}:${s.port} · receivers: ${mcTally(s)}`;
    // spaced like the template: a folded session's summary line is inline text
    head.append(title, " ", el("span", s.state, "state m-" + s.state), " ");
    head.append(el("span", f.detail, "gdetail"), " ", el("span", meta, "meta"));

    const stats = el("dl", undefined, "mcstats");
    const fact = (term, ...content) => {
      const box = el("div");
      const dd = el("dd");
      dd.append(...content);
      box.append(el("dt", term), dd);
      stats.append(box);
      return dd;
    };
    const bar = progressBar(s.progress, `session ${f.hex} progress`);
    const progress = [bar, " ", el("span", percent(s.progress), "pct")];
    if (s.round) progress.push(" ", el("span", `repair round ${s.round}`, "meta"));
    fact("Progress", ...progress);
    fact("Rate", f.rate).className = "mrate";
    fact("Sent", `${size(s.bytes_sent)}: ${f.ratio} the image (${size(s.size)})`).className = "sent";
    fact("Repairs", `${s.repair_slices} slices`).className = "repairs";

    const table = el("table", undefined, "receivers");
    const caption = el("caption", `Receivers of multicast session ${f.hex} (${f.title})`, "vh");
    const header = el("tr");
    for (const name of ["Receiver", "IP", "State", "Progress", "Loss", "Note"]) {
      const th = el("th", name);
      th.scope = "col";
      header.append(th);
    }
    const thead = el("thead");
    thead.append(header);
    const body = el("tbody");
    // by name, as the node tables are (and as the server sorts them)
    const byLabel = (a, b) => (mcLabel(a) < mcLabel(b) ? -1 : mcLabel(a) > mcLabel(b) ? 1 : 0);
    if (s.receivers.length) body.append(...[...s.receivers].sort(byLabel).map(mcReceiver));
    else {
      const empty = el("tr");
      const td = el("td", "No receiver has joined yet.");
      td.colSpan = 6;
      empty.append(td);
      body.append(empty);
    }
    table.append(caption, thead, body);

    if (f.active) {
      article.append(head, stats, table);
    } else {
      const details = el("details");
      details.open = open;
      details.append(head, stats, table);
      article.append(details);
    }
    return article;
  }

  function mcSummary(status) {
    if (!status.sessions.length) return "No multicast session running.";
    return status.sessions.map((s) => `${mcFacts(s).title} ${s.state}: ${mcTally(s)}`).join("; ") + ".";
  }

  function renderMulticast(status) {
    // finished sessions fold; keep whatever the admin opened or closed across refreshes
    const opened = new Map();
    for (const details of document.querySelectorAll("#mc-finished details")) {
      opened.set(details.parentElement.dataset.session, details.open);
    }
    const hex = (s) => s.id.toString(16).padStart(8, "0");
    byId("mc-sessions").replaceChildren(...status.sessions.map((s) => mcSession(s, true)));
    byId("mc-finished").replaceChildren(
      ...status.finished.map((s, i) => mcSession(s, opened.get(hex(s)) ?? i === 0)),
    );
    byId("mc-finished-h").hidden = status.finished.length === 0;
    byId("mc-empty").hidden = status.sessions.length + status.finished.length > 0;
    setText(byId("mc-status"), mcSummary(status)); // spoken only when it changes
  }

  async function refreshMulticast() {
    if (mc.busy) {
      mc.again = true; // one more look once this one is back
      return;
    }
    mc.busy = true;
    clearTimeout(mc.timer);
    mc.timer = null;
    let active = false;
    try {
      const answer = await fetch("/api/multicast/sessions", {
        headers: { Accept: "application/json" },
      });
      // 401: logged out elsewhere; 503: no multicast service. Either way stop asking.
      if (answer.ok) {
        const status = await answer.json();
        renderMulticast(status);
        active = status.sessions.length > 0;
      }
    } catch (err) {
      active = true; // the server is unreachable (restarting?): look again in a moment
    } finally {
      mc.busy = false;
    }
    if (mc.again) {
      mc.again = false;
      refreshMulticast();
    } else if (active) {
      mc.timer = setTimeout(refreshMulticast, MC_POLL_MS);
    }
  }

  // ---------------------------------------------------------------- the stream
  function apply(ev) {
    if (ev.mac) applyToNode(ev);
    // a release wave is one event naming every node it released (docs/decisions/0014)
    const wave = !ev.mac && ev.detail && Array.isArray(ev.detail.macs) ? ev.detail.macs : [];
    for (const mac of wave) applyToNode({ ...ev, mac }, true);
    if (wave.length) recount();
    if (ev.cluster) applyToCluster(ev);
    if (ev.cluster) applyMembers(ev);
    if (ev.kind === "multicast" && data.multicast.available) refreshMulticast();
    prependLog(ev);
  }

  function connect() {
    // `since` covers the first connection; on reconnects the browser sends Last-Event-ID itself
    const source = new EventSource(`/api/events?since=${encodeURIComponent(lastId)}`);
    source.onopen = () => live("on", "live");
    source.onmessage = (message) => {
      // "42", or "42/41" while id 41 may still commit (see netdeploy/http/event_cursor.py)
      lastId = message.lastEventId || lastId;
      apply(JSON.parse(message.data));
    };
    source.addEventListener("reload", () => location.reload());
    source.onerror = () => {
      live("off", "reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        // refused (HTTP error): the browser gives up, so try again ourselves, gently
        setTimeout(connect, 5000);
      }
    };
  }

  // ---------------------------------------------------------------- admin actions
  function notice(text, isError) {
    const box = byId("notice");
    box.className = "notice" + (isError ? " error" : "");
    box.setAttribute("role", isError ? "alert" : "status");
    setText(box, text);
  }

  async function act(button) {
    const action = button.dataset.action;
    const row = button.closest("tr");
    const label = button.dataset.label || (row && row.dataset.label) || button.value;
    const body = new URLSearchParams({ csrf: data.csrf });
    body.set(button.name, button.value);
    if (action === "fail") {
      const reason = prompt(`Why mark ${label} failed?`, "marked failed from the dashboard");
      if (reason === null) return;
      body.set("reason", reason);
    }
    if (action === "reset" && !confirm(`Reset cluster ${label} for a new rollout?`)) return;
    button.disabled = true;
    try {
      const answer = await fetch(button.getAttribute("formaction"), {
        method: "POST",
        headers: { Accept: "application/json", "X-CSRF-Token": data.csrf },
        body,
      });
      const result = await answer.json().catch(() => ({ error: `HTTP ${answer.status}` }));
      notice(result.message || result.error || `HTTP ${answer.status}`, !answer.ok);
    } catch (err) {
      notice(`${action} ${label}: the server did not answer (${err.message}); nothing confirmed`, true);
    } finally {
      button.disabled = false;
    }
  }

  // events that mean the node itself (or its firmware) was heard from
  const HEARD = new Set(["state", "progress", "report", "health", "boot", "dhcp", "tftp", "http", "answer"]);

  document.addEventListener("click", (event) => {
    const count = event.target.closest("#counts a.count");
    if (count) {
      event.preventDefault();
      setFilter(count.dataset.state);
      return;
    }
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    event.preventDefault();
    act(button);
  });
  byId("log-filter").addEventListener("submit", loadLog);
  for (const time of document.querySelectorAll("#log-rows time")) {
    time.textContent = localTime(time.dateTime);
  }
  // Progress reports are announced, not stored: keep the rates across a reload of this tab,
  // so rate and ETA show at once instead of after the next two reports.
  try {
    const saved = JSON.parse(sessionStorage.getItem("nd-rates") || "{}");
    for (const [mac, entry] of Object.entries(saved)) {
      const row = rowOf(mac);
      const bar = row && row.querySelector("progress");
      if (!bar || bar.hidden || row.dataset.state !== "imaging") continue;
      rates.set(mac, entry);
      progressLine(row, bar.value, entry);
    }
  } catch (err) {
    sessionStorage.removeItem("nd-rates");
  }
  addEventListener("pagehide", () => {
    sessionStorage.setItem("nd-rates", JSON.stringify(Object.fromEntries(rates)));
  });
  // The rows are rendered lean (500 of them); give each what the script reads: its MAC, label,
  // when it was last heard from and after how much quiet it is stale.
  function prepare(row) {
    row.dataset.mac = row.id.slice(2).match(/../g).join(":");
    const host = row.querySelector("th a, th .host");
    row.dataset.label = host && host.textContent !== "—" ? host.textContent : row.dataset.mac;
    if (!row.dataset.heard) row.dataset.heard = row.querySelector("td.since").dataset.since;
    const card = row.closest("article.cluster");
    const limits = data.staleLimits[(card && card.dataset.cluster) || ""] || {};
    const lim = limits[row.dataset.state];
    if (lim !== undefined && row.querySelector("td.role").textContent !== "unknown") row.dataset.lim = lim;
    const tile = tileOf(row.dataset.mac);
    if (tile) tile.title = `${row.dataset.label}: ${row.dataset.state}`;
    renderActions(row, row.dataset.state);
  }
  for (const row of document.querySelectorAll("table.nodes tbody tr[id^='n-']")) prepare(row);
  tick();
  setInterval(tick, 1000);
  if (data.multicast.active) mc.timer = setTimeout(refreshMulticast, MC_POLL_MS);
  live("off", "connecting…");
  connect();
})();
