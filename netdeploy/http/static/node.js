// netdeploy node page: new steps of this machine's boot path appear as they are recorded.
// Text from the network is only ever set as textContent.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("nd-data").textContent);
  const byId = (id) => document.getElementById(id);
  const PHASES = { dhcp: "ProxyDHCP", tftp: "TFTP", boot: "boot decision", http: "image download",
    answer: "answer file", state: "state", report: "agent", progress: "agent", health: "cluster service",
    auth: "refused", rejected: "refused", admin: "admin", gate: "cluster gate" };
  const live = (cls, text) => { const b = byId("live"); b.className = "live " + cls; b.textContent = text; };
  function add(ev) {
    if (ev.id === null || ev.id === undefined) return; // progress is announced, not recorded
    const item = document.createElement("li");
    item.className = "sev-" + (ev.severity || "info");
    item.dataset.id = ev.id;
    const time = document.createElement("time");
    time.dateTime = ev.at || "";
    time.textContent = (ev.at || "").slice(11, 19);
    const phase = document.createElement("span");
    phase.className = "phase";
    phase.textContent = PHASES[ev.kind] || ev.kind;
    const what = document.createElement("span");
    what.className = "what";
    const d = ev.detail || {};
    what.textContent = ev.kind === "boot"
      ? `${String(d.via || "?").toUpperCase()} ${d.path} from ${d.ip}: ${d.decision} (${d.why})`
      : ev.text;
    item.append(time, " ", phase, " ", what);
    byId("timeline").append(item);
  }
  function apply(ev) {
    const wave = !ev.mac && ev.detail && Array.isArray(ev.detail.macs) ? ev.detail.macs : [];
    if (ev.mac !== data.mac && !wave.includes(data.mac)) return; // a release wave names it
    add(ev);
    if (ev.kind === "state" && ev.to) {
      const badge = byId("x-state");
      badge.className = "state s-" + ev.to;
      badge.textContent = ev.to;
      refresh();
    }
  }
  // a new state changes what the machine does next: ask again (the same answer as on load)
  async function refresh() {
    try {
      const answer = await fetch(`/api/nodes/${encodeURIComponent(data.mac)}/explain`, {
        headers: { Accept: "application/json" },
      });
      if (!answer.ok) return;
      const x = await answer.json();
      byId("x-next").textContent = x.machine_next;
      byId("x-next-boot").textContent = x.next_boot;
      const causes = byId("x-causes");
      if (causes) {
        causes.replaceChildren(
          ...x.causes.map((c) => {
            const item = document.createElement("li");
            item.textContent = c;
            return item;
          }),
        );
      }
    } catch (err) {
      // the server is restarting: the next state event asks again
    }
  }
  function connect() {
    const source = new EventSource(`/api/events?since=${encodeURIComponent(data.lastEventId)}`);
    source.onopen = () => live("on", "live");
    source.onmessage = (m) => apply(JSON.parse(m.data));
    source.addEventListener("reload", () => location.reload());
    source.onerror = () => {
      live("off", "reconnecting…");
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 5000);
    };
  }
  live("off", "connecting…");
  connect();
})();
