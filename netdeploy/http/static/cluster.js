// netdeploy cluster page: nodes per state over time and image throughput, as SVG, drawn from
// the cluster's event rows (embedded in the page) and the live stream. No library, no CDN.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("nd-data").textContent);
  const byId = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const STATES = ["failed", "registered", "pxe", "imaging", "imaged", "held", "released", "starting", "joined", "discovered"];
  const events = data.events; // [ms, mac, kind ("s" state | "h" image transfer), from, to, bytes, seconds]
  const nodes = { ...data.nodes }; // mac -> state now
  let pending = false;

  const svg = (tag, attrs, parent) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.append(node);
    return node;
  };
  const text = (parent, x, y, value, anchor) => {
    const t = svg("text", { x, y, class: "axis", "text-anchor": anchor || "start" }, parent);
    t.textContent = value;
  };
  const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });

  // Nodes per state at every state event, replayed backwards from the states now: exact even
  // when the oldest rows are beyond what the page was given.
  function series(now) {
    const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const state of Object.values(nodes)) counts[state] = (counts[state] || 0) + 1;
    const state = { ...nodes };
    const points = [[now, { ...counts }]];
    for (let i = events.length - 1; i >= 0; i--) {
      const [at, mac, kind, from, to] = events[i];
      if (kind !== "s" || !(mac in nodes) || state[mac] !== to) continue;
      points.push([at, { ...counts }]);
      counts[to] -= 1;
      if (from) counts[from] = (counts[from] || 0) + 1;
      state[mac] = from;
    }
    points.push([points[points.length - 1][0], { ...counts }]);
    return points.reverse();
  }

  function drawStates(points, t0, t1) {
    const box = byId("chart-states");
    const W = 1000, H = 260, L = 40, B = 22;
    const total = Math.max(1, Object.keys(nodes).length);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
    const x = (t) => L + ((W - L - 8) * (t - t0)) / Math.max(1, t1 - t0);
    const y = (n) => H - B - ((H - B - 6) * n) / total;
    const below = points.map(() => 0);
    for (const state of STATES) {
      if (!points.some(([, c]) => c[state] > 0)) continue;
      let top = "", bottom = "";
      points.forEach(([t, c], i) => {
        const next = i + 1 < points.length ? points[i + 1][0] : t;
        const lo = below[i], hi = below[i] + (c[state] || 0);
        top += `${i ? "L" : "M"}${x(t).toFixed(1)},${y(hi).toFixed(1)}L${x(next).toFixed(1)},${y(hi).toFixed(1)}`;
        bottom = `L${x(next).toFixed(1)},${y(lo).toFixed(1)}L${x(t).toFixed(1)},${y(lo).toFixed(1)}` + bottom;
        below[i] = hi;
      });
      svg("path", { d: top + bottom + "Z", class: "a-" + state }, root);
    }
    svg("line", { x1: L, y1: H - B, x2: W - 8, y2: H - B, class: "axisline" }, root);
    text(root, 2, y(total) + 10, String(total));
    text(root, 2, H - B, "0");
    text(root, L, H - 6, clock(t0));
    text(root, W - 8, H - 6, clock(t1), "end");
    box.replaceChildren(root);
    const now = points[points.length - 1][1];
    byId("chart-legend").replaceChildren(
      ...STATES.filter((s) => now[s] > 0).map((s) => {
        const item = document.createElement("li");
        const swatch = document.createElement("span");
        swatch.className = "sw a-" + s;
        item.append(swatch, ` ${s} ${now[s]}`);
        return item;
      }),
    );
    box.setAttribute(
      "aria-label",
      "nodes per state now: " + STATES.filter((s) => now[s] > 0).map((s) => `${now[s]} ${s}`).join(", "),
    );
  }

  function drawBytes(t0, t1) {
    const box = byId("chart-bytes");
    const W = 1000, H = 120, L = 40, B = 22, N = 60;
    const span = Math.max(1, t1 - t0) / N;
    const buckets = new Array(N).fill(0);
    for (const [at, mac, kind, , , bytes, seconds] of events) {
      if (kind !== "h" || !bytes || !(mac in nodes)) continue;
      const start = at - seconds * 1000;
      const rate = bytes / Math.max(1, at - start); // bytes per ms, spread over the transfer
      for (let b = Math.max(0, Math.floor((start - t0) / span)); b < N && t0 + b * span < at; b++) {
        const lo = Math.max(start, t0 + b * span), hi = Math.min(at, t0 + (b + 1) * span);
        if (hi > lo) buckets[b] += rate * (hi - lo);
      }
    }
    const perSecond = buckets.map((b) => b / (span / 1000));
    const peak = Math.max(1, ...perSecond);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
    const w = (W - L - 8) / N;
    perSecond.forEach((v, i) => {
      if (!v) return;
      const h = ((H - B - 6) * v) / peak;
      svg("rect", { x: (L + i * w).toFixed(1), y: (H - B - h).toFixed(1), width: Math.max(1, w - 1).toFixed(1), height: h.toFixed(1), class: "bar" }, root);
    });
    svg("line", { x1: L, y1: H - B, x2: W - 8, y2: H - B, class: "axisline" }, root);
    text(root, 2, 14, `${(peak / 1e6).toFixed(1)} MB/s`);
    text(root, L, H - 6, clock(t0));
    text(root, W - 8, H - 6, clock(t1), "end");
    box.replaceChildren(root);
    const total = buckets.reduce((a, b) => a + b, 0);
    box.setAttribute("aria-label", `image throughput: ${(total / 1e9).toFixed(2)} GB served, peak ${(peak / 1e6).toFixed(1)} MB/s`);
  }

  function draw() {
    pending = false;
    const now = Date.now();
    const t0 = events.length ? Math.min(events[0][0], now - 60000) : now - 60000;
    drawStates(series(now), t0, now);
    drawBytes(t0, now);
  }
  const later = () => {
    if (!pending) {
      pending = true;
      setTimeout(draw, 500); // a burst of events is drawn once
    }
  };

  function apply(ev) {
    const wave = !ev.mac && ev.detail && Array.isArray(ev.detail.macs) ? ev.detail.macs : [];
    if (wave.length) { // one event for every node of a release wave (docs/decisions/0014)
      for (const mac of wave) apply({ ...ev, mac });
      return;
    }
    if (ev.id === null || ev.id === undefined || !(ev.mac in nodes)) {
      if (ev.kind === "gate" && ev.cluster === data.cluster && ev.to) {
        const badge = byId("c-gate");
        badge.className = "gate g-" + ev.to;
        badge.textContent = data.gateLabels[ev.to] || ev.to;
      }
      return;
    }
    const at = Date.parse(ev.at);
    const d = ev.detail || {};
    if (ev.kind === "state" && ev.to) {
      events.push([at, ev.mac, "s", ev.from, ev.to, 0, 0]);
      nodes[ev.mac] = ev.to;
      const row = byId("n-" + ev.mac.replaceAll(":", ""));
      const badge = row && row.querySelector(".state");
      if (badge) {
        badge.className = "state s-" + ev.to;
        badge.textContent = ev.to;
      }
      later();
    } else if (ev.kind === "http" && typeof d.sent === "number") {
      events.push([at, ev.mac, "h", null, null, d.sent, d.seconds || 0]);
      later();
    }
  }

  function connect() {
    const source = new EventSource(`/api/events?since=${encodeURIComponent(data.lastEventId)}`);
    const live = byId("live");
    source.onopen = () => {
      live.className = "live on";
      live.textContent = "live";
    };
    source.onmessage = (m) => apply(JSON.parse(m.data));
    source.addEventListener("reload", () => location.reload());
    source.onerror = () => {
      live.className = "live off";
      live.textContent = "reconnecting…";
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 5000);
    };
  }
  draw();
  setInterval(draw, 30000); // the time axis moves on while nothing happens
  connect();
})();
