// The dashboard: devices online of total, by type, by model (and, for one enterprise, by site and group), alarm counts by severity, and a
// chart of alarms over time (GET /api/v1/dashboard, GET /api/v1/alarms/summary).

import { get, qs } from "./api.js";
import { alarmBars } from "./chart.js";
import { emptyState, errorBox, h, link, loading, mount, table, widthClass, zoneName } from "./ui.js";

const WINDOWS = { day: [24 * 3600e3, 24], week: [7 * 24 * 3600e3, 28] };

export function render(main, ctx) {
  let windowKey = ctx.query.get("window") === "week" ? "week" : "day";
  const devicesSlot = h("div", { id: "dash-devices" }, loading());
  const alarmsSlot = h("div", { id: "dash-alarms" }, loading());
  const toggle = h("div", { class: "row", role: "group", "aria-label": "Alarm chart window" },
    ["day", "week"].map((k) => h("button", { type: "button", "aria-pressed": String(k === windowKey), onclick: () => { windowKey = k; history.replaceState(null, "", "/dashboard" + qs({ window: k, enterprise_id: ctx.query.get("enterprise_id") })); load(); } }, k === "day" ? "Last 24 hours" : "Last 7 days")));
  mount(main, h("h1", {}, "Dashboard"), devicesSlot, h("div", { class: "row" }, h("h2", {}, "Alarms"), h("span", { class: "spacer" }), toggle), alarmsSlot);

  async function loadDevices() {
    try {
      // `?enterprise_id=` narrows it to one enterprise (as an enterprise admin's own always is):
      // only then are devices counted by site and by group.
      const enterprise = ctx.query.get("enterprise_id");
      const d = await get("/api/v1/dashboard", enterprise ? { enterprise_id: enterprise } : {});
      if (!d.total) return mount(devicesSlot, h("div", { class: "panel" }, emptyState("No devices yet. Devices appear here once they connect with their enterprise's credential.")));
      const row = (c) => [
        { label: "Name", cell: (r) => r.key },
        { label: "Online", cell: (r) => `${r.online} of ${r.total}` },
        { label: "Share online", cell: (r) => h("div", { class: "bar", title: `${Math.round((r.online / r.total) * 100)} %` }, h("span", { class: widthClass(r.online, r.total) })) },
      ];
      mount(
        devicesSlot,
        h("div", { class: "grid" },
          h("div", { class: "tile", id: "tile-online" }, h("div", { class: "label" }, "Devices online"), h("div", { class: "big" }, `${d.online.toLocaleString()} / ${d.total.toLocaleString()}`),
            h("div", { class: "bar" }, h("span", { class: widthClass(d.online, d.total) }))),
          h("div", { class: "tile" }, h("div", { class: "label" }, "Offline"), h("div", { class: "big" }, (d.total - d.online).toLocaleString()), link("/devices?online=false", "Show offline devices")),
          d.licences && d.licences.metered
            ? h("div", { class: "tile", id: "tile-licences" }, h("div", { class: "label" }, "Licensed devices"),
              h("div", { class: "big" }, `${d.licences.licensed.toLocaleString()} / ${d.licences.allowance.toLocaleString()}`),
              d.licences.unlicensed ? link("/devices" + qs({ licence: "unlicensed", enterprise_id: enterprise }), `${d.licences.unlicensed.toLocaleString()} unlicensed`) : h("span", { class: "muted" }, "none unlicensed"))
            : null),
        h("h2", {}, "By type"), table(row(), d.by_type.map((t) => ({ ...t, key: t.key.replace(/_/g, " ") })), "No devices.", "Devices by type"),
        h("h2", {}, "By model"), table(row(), d.by_model, "No devices.", "Devices by model"),
        d.models_truncated ? h("p", { class: "muted" }, "Only the most common models are listed.") : null,
        d.by_site ? [h("h2", {}, "By site"), h("div", { id: "dash-by-site" }, table(row(), d.by_site.filter((s) => s.total).map((s) => ({ ...s, key: link(`/devices?site_id=${s.site_id}`, s.name) })), "No device has a site yet.", "Devices by site"))] : null,
        d.by_site ? [h("h2", {}, "By group"),
          h("div", { id: "dash-groups" }, table(row(), (d.by_group || []).map((g) => ({ ...g, key: link(`/devices?group=${g.key.id}`, g.key.name) })), "No device is in a group yet.", "Devices by group")),
          d.groups_truncated ? h("p", { class: "muted" }, "Only the largest groups are listed.") : null]
          : h("p", { class: "muted", id: "dash-one-enterprise" }, "Counts by site and by group are shown for one enterprise: open the dashboard from an enterprise, or add ?enterprise_id= to its address."),
      );
    } catch (e) {
      mount(devicesSlot, errorBox(e, loadDevices));
    }
  }

  async function load() {
    mount(alarmsSlot, loading());
    for (const b of toggle.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.textContent.includes(windowKey === "day" ? "24" : "7")));
    const [span, buckets] = WINDOWS[windowKey];
    const to = Date.now();
    try {
      const s = await get("/api/v1/alarms/summary", { from: to - span, to, buckets });
      const tile = (label, n, cls) => h("div", { class: "tile" }, h("div", { class: "label" }, label), h("div", { class: "big " + cls }, n.toLocaleString()));
      const total = s.series.reduce((n, b) => n + b.counts.critical + b.counts.major + b.counts.minor, 0);
      mount(
        alarmsSlot,
        h("div", { class: "grid", id: "severity-tiles" },
          tile("Active critical", s.active.critical, "critical"), tile("Active major", s.active.major, "major"), tile("Active minor", s.active.minor, "minor"),
          tile("Acknowledged", s.acknowledged.critical + s.acknowledged.major + s.acknowledged.minor, "")),
        h("div", { class: "panel" },
          h("div", { class: "row" }, h("strong", {}, "Alarms by latest occurrence"), h("span", { class: "spacer" }), h("div", { class: "legend" }, h("span", { class: "critical" }, "critical"), h("span", { class: "major" }, "major"), h("span", { class: "minor" }, "minor"))),
          total ? alarmBars(s.series, `Alarms per ${windowKey === "day" ? "hour" : "6 hours"}, ${zoneName()}`) : emptyState("No alarms in this window."),
          s.truncated ? h("p", { class: "muted" }, "More than 10,000 alarms matched: the counts are lower bounds.") : null),
      );
    } catch (e) {
      mount(alarmsSlot, e.status === 403 ? h("p", { class: "muted" }, "This account may not see alarms.") : errorBox(e, load));
    }
  }

  loadDevices();
  load();
}
