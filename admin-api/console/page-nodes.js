// The ingest nodes sharing the scale-out store (issue 16; platform admins only): each node's
// lease, heartbeat and the device sessions it holds, refreshed every 10 s while the page is open
// and the tab visible. With the embedded store the process is the only node and says so.

import { get } from "./api.js";
import { badge, errorBox, fmtTime, h, loading, mount, table } from "./ui.js";

const REFRESH_MS = 10000;

function stateBadge(n) {
  if (n.state === "up" && n.alive) return badge("on", "up");
  if (n.state === "up") return badge("partial", "lease lapsed");
  return badge("off", "down");
}

export function render(main) {
  const slot = h("div", { id: "nodes-list" }, loading());
  const refresh = h("button", { type: "button", id: "nodes-refresh", onclick: () => load() }, "Refresh");
  mount(main, h("h1", {}, "Nodes"),
    h("p", { class: "muted" }, "Ingest nodes share the fleet: a device's session is held by the node it is connected to. A node whose lease lapses is declared down and its devices that did not reconnect elsewhere go offline. Each enterprise's alarms are evaluated by the node holding its engine bucket."),
    h("div", { class: "actions" }, refresh), slot);
  let timer = null;
  let gone = false;

  async function load() {
    clearTimeout(timer);
    try {
      const page = await get("/api/v1/nodes");
      if (gone) return;
      if (!page.clustered) {
        mount(slot, h("p", { class: "alert info", role: "status" }, "This deployment is a single node (embedded store): there are no other nodes."));
        return;
      }
      const up = page.items.filter((n) => n.state === "up" && n.alive).length;
      const sessions = page.items.reduce((sum, n) => sum + n.owned_sessions, 0);
      mount(slot,
        h("p", { id: "nodes-summary" }, `${up} of ${page.items.length} nodes up, ${sessions.toLocaleString()} device sessions held.`),
        table([
          { label: "Node", cell: (n) => n.id },
          { label: "State", cell: stateBadge },
          { label: "Sessions held", cell: (n) => n.owned_sessions.toLocaleString() },
          { label: "Connected (reported)", cell: (n) => n.sessions.toLocaleString() },
          { label: "Engine buckets", cell: (n) => h("span", { class: "engine-buckets", title: (n.engine_buckets || []).join(", ") }, String((n.engine_buckets || []).length)) },
          { label: "Device address (QUIC)", cell: (n) => n.quic_addr },
          { label: "API address", cell: (n) => n.http_addr },
          { label: "Joined", cell: (n) => fmtTime(n.started_at) },
          { label: "Last heartbeat", cell: (n) => fmtTime(n.heartbeat_at) },
          { label: "Lease until", cell: (n) => fmtTime(n.lease_until) },
        ], page.items, "No node has joined yet.", "Nodes"));
    } catch (e) {
      if (!gone) mount(slot, errorBox(e, load));
    }
    if (!gone) timer = setTimeout(() => (document.hidden ? (timer = setTimeout(load, REFRESH_MS)) : load()), REFRESH_MS);
  }
  load();
  return () => {
    gone = true;
    clearTimeout(timer);
  };
}
