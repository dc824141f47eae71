// Site incidents (issue 18 item 3): an enterprise's incidents newest first (site, alarm type,
// devices affected of the site's, how many are back, open or resolved) with keyset paging, and one
// incident with its member alarms. Read-only: incidents open and resolve by themselves.

import { get } from "./api.js";
import { badge, errorBox, fmtTime, h, link, loading, mount, table } from "./ui.js";
import { enterpriseOf, enterprisePicker } from "./enterprise.js";

const TYPES = { 109: "Offline" };
const typeName = (code) => TYPES[code] || `alarm type ${code}`;
const state = (i) => (i.resolved_at ? badge("cleared", "resolved") : badge("critical", "open"));

export function renderList(main, ctx) {
  const enterprise = enterpriseOf(ctx);
  const slot = h("div", { id: "incident-list" });
  const picker = h("div");
  mount(main, h("h1", {}, "Site incidents"),
    h("p", { class: "muted" }, "When many devices of one site raise the same alarm within a strategy's window, one incident is notified instead of each alarm."),
    picker, slot);
  if (!ctx.session.enterprise_id) enterprisePicker(ctx, enterprise, "/incidents", "incident-enterprise").then((p) => mount(picker, p));
  if (!enterprise) return mount(slot, h("p", { class: "muted" }, "Choose the enterprise whose site incidents to show."));
  const seen = [];
  async function load(after) {
    mount(slot, loading());
    try {
      const q = after ? `&after=${after}` : "";
      const page = await get(`/api/v1/incidents?enterprise_id=${enterprise}${q}`);
      const more = [];
      if (seen.length) {
        const back = h("button", { type: "button" }, "Newer");
        back.addEventListener("click", () => { seen.pop(); load(seen[seen.length - 1]); });
        more.push(back);
      }
      if (page.next_after) {
        const next = h("button", { type: "button", id: "incidents-older" }, "Older");
        next.addEventListener("click", () => { seen.push(page.next_after); load(page.next_after); });
        more.push(next);
      }
      mount(slot,
        table([
          { label: "Incident", cell: (i) => link(`/incidents/${i.id}`, `#${i.id}`) },
          { label: "Site", cell: (i) => i.site_name },
          { label: "Alarm", cell: (i) => typeName(i.code) },
          { label: "Devices", cell: (i) => `${i.affected} of ${i.site_devices}` },
          { label: "Back", cell: (i) => String(i.back) },
          { label: "Opened", cell: (i) => fmtTime(i.opened_at) },
          { label: "State", cell: state },
        ], page.items, "No site incidents.", "Site incidents"),
        h("div", { class: "actions" }, more));
    } catch (e) {
      mount(slot, errorBox(e, () => load(after)));
    }
  }
  load(null);
}

export function renderDetail(main, ctx) {
  mount(main, h("h1", {}, `Incident #${ctx.id}`), loading());
  (async () => {
    try {
      const i = await get(`/api/v1/incidents/${ctx.id}`);
      const summary = h("p", { id: "incident-summary" },
        `${i.affected} of ${i.site_devices} devices at site ${i.site_name}: ${typeName(i.code)}; ${i.back} back. Opened ${fmtTime(i.opened_at)}`,
        i.resolved_at ? `, resolved ${fmtTime(i.resolved_at)}.` : ", still open.");
      mount(main, h("h1", {}, `Incident #${i.id} at ${i.site_name}`), state(i), summary,
        link(`/alarms?enterprise_id=${i.enterprise_id}&code=${i.code}`, "Its enterprise's alarms of this type"),
        h("div", { id: "incident-members" }, table([
          { label: "Device", cell: (m) => link(`/devices/${m.device_id}`, `#${m.device_id}`) },
          { label: "Alarm since", cell: (m) => fmtTime(m.first_at) },
          { label: "State", cell: (m) => (m.back ? badge("cleared", "back") : badge("critical", "down")) },
        ], i.members, "No member alarms recorded.", "Member alarms")));
    } catch (e) {
      mount(main, h("h1", {}, `Incident #${ctx.id}`), errorBox(e));
    }
  })();
}

/** The alarm detail's line about the incidents an alarm is part of (empty when none). */
export function incidentLine(incidents) {
  if (!incidents || !incidents.length) return h("span");
  return h("p", { id: "alarm-incidents" }, "Part of ", incidents.map((id, n) => [n ? ", " : "", link(`/incidents/${id}`, `incident #${id}`)]),
    ": notified with the incident, not on its own.");
}
