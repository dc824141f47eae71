// Alarms: the list with its filters and keyset paging, and an alarm's detail with acknowledge,
// clear and the alarm log download.

import { ApiError, download, get, post, qs } from "./api.js";
import { badge, busy, errorBox, field, fmtTime, formValues, h, link, loading, mount, okBox, select, table } from "./ui.js";
import { notificationsPanel } from "./page-windows.js";

const PAGE = 50;
const FILTERS = ["status", "severity", "code", "device_id", "enterprise_id", "from", "to"];

function localInput(name, ms) {
  // datetime-local works in the browser's zone; the API takes unix ms.
  const v = ms ? new Date(Number(ms) - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16) : "";
  return h("input", { type: "datetime-local", name, value: v });
}

export function renderList(main, ctx) {
  const filters = {};
  for (const k of FILTERS) if (ctx.query.get(k)) filters[k] = ctx.query.get(k);
  const afters = [0];
  const listSlot = h("div", { id: "alarm-list" }, loading());
  const form = h("form", { class: "panel", id: "alarm-filters", role: "search" },
    h("div", { class: "row" },
      field("Status", select("status", [["", "Any"], ["active", "Active"], ["acknowledged", "Acknowledged"], ["cleared", "Cleared"]], filters.status)),
      field("Severity", select("severity", [["", "Any"], ["critical", "Critical"], ["major", "Major"], ["minor", "Minor"]], filters.severity)),
      field("Alarm type code", h("input", { name: "code", type: "number", value: filters.code || "" })),
      field("Device id", h("input", { name: "device_id", type: "number", value: filters.device_id || "" })),
      ctx.session.enterprise_id ? null : field("Enterprise id", h("input", { name: "enterprise_id", type: "number", value: filters.enterprise_id || "" })),
      field("Latest from (your browser's zone)", localInput("from", filters.from)),
      field("Latest before", localInput("to", filters.to))),
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Apply filters"), h("button", { type: "button", onclick: () => ctx.navigate("/alarms") }, "Clear")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = formValues(form);
    for (const k of ["from", "to"]) if (v[k]) v[k] = String(new Date(v[k]).getTime());
    ctx.navigate("/alarms" + qs(v));
  });
  mount(main, h("h1", {}, "Alarms"), form, listSlot);

  async function loadPage() {
    mount(listSlot, loading("Loading alarms…"));
    const after = afters[afters.length - 1];
    try {
      const page = await get("/api/v1/alarms", { ...filters, after: after || undefined, limit: PAGE });
      const n = afters.length - 1;
      mount(listSlot,
        table([
          { label: "Alarm", cell: (a) => link(`/alarms/${a.id}`, a.name) },
          { label: "Severity", cell: (a) => badge(a.severity) },
          { label: "Status", cell: (a) => badge(a.status) },
          { label: "Device", cell: (a) => link(`/devices/${a.device_id}`, `#${a.device_id}`) },
          { label: "Enterprise", cell: (a) => `#${a.enterprise_id}` },
          { label: "Latest", cell: (a) => fmtTime(a.latest_at) },
          { label: "Count", cell: (a) => a.count },
          { label: "Description", cell: (a) => a.description, wrap: true },
        ], page.items, Object.keys(filters).length ? "No alarm matches these filters." : "No alarms. Devices report alarms as they happen.", "Alarms"),
        h("div", { class: "pager" },
          h("button", { type: "button", id: "prev-page", disabled: n === 0, onclick: () => { afters.pop(); loadPage(); } }, "Previous"),
          h("span", { class: "muted" }, `Page ${n + 1}`),
          h("button", { type: "button", id: "next-page", disabled: !page.next_after, onclick: () => { afters.push(page.next_after); loadPage(); } }, "Next")));
    } catch (e) {
      mount(listSlot, errorBox(e, loadPage));
    }
  }
  loadPage();
}

export function renderDetail(main, ctx) {
  const id = ctx.id;
  mount(main, h("h1", {}, `Alarm #${id}`), loading());
  const notice = h("div", { id: "alarm-notice" });

  async function load() {
    let a;
    try {
      a = await get(`/api/v1/alarms/${id}`);
    } catch (e) {
      return mount(main, h("h1", {}, `Alarm #${id}`), e.status === 404 ? h("p", {}, "No such alarm (or it is outside your scope). ", link("/alarms", "Back to alarms")) : errorBox(e, load));
    }
    const ack = h("button", { type: "button", class: "primary", id: "acknowledge", disabled: a.status !== "active" }, "Acknowledge");
    const clear = h("button", { type: "button", class: "danger", id: "clear", disabled: a.status === "cleared" }, "Clear");
    const logButton = h("button", { type: "button", id: "download-log" }, "Download alarm log");
    ack.addEventListener("click", () => busy(ack, notice, async () => { await post(`/api/v1/alarms/${id}/acknowledge`); await load(); mount(notice, okBox("Acknowledged.")); }));
    clear.addEventListener("click", () => {
      if (!confirm("Clear this alarm by hand?")) return;
      busy(clear, notice, async () => { await post(`/api/v1/alarms/${id}/clear`); await load(); mount(notice, okBox("Cleared.")); });
    });
    logButton.addEventListener("click", () => busy(logButton, notice, async () => {
      try {
        const size = await download(`/api/v1/alarms/${id}/log`, `alarm-${id}.log`);
        mount(notice, okBox(`Alarm log downloaded (${size.toLocaleString()} bytes).`));
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) mount(notice, h("p", { class: "alert info" }, "The device attached no log to this alarm."));
        else throw e;
      }
    }));
    mount(main,
      h("h1", {}, `${a.name}`),
      h("p", {}, link("/alarms", "← Alarms")),
      notice,
      h("div", { class: "panel" }, h("dl", { class: "kv", id: "alarm-detail" },
        h("dt", {}, "Status"), h("dd", { id: "alarm-status" }, badge(a.status)),
        h("dt", {}, "Severity"), h("dd", {}, badge(a.severity)),
        h("dt", {}, "Type code"), h("dd", {}, a.code),
        h("dt", {}, "Device"), h("dd", {}, link(`/devices/${a.device_id}`, `#${a.device_id}`)),
        h("dt", {}, "Enterprise"), h("dd", {}, `#${a.enterprise_id}`),
        h("dt", {}, "First occurrence"), h("dd", {}, fmtTime(a.first_at)),
        h("dt", {}, "Latest occurrence"), h("dd", {}, fmtTime(a.latest_at)),
        h("dt", {}, "Occurrences"), h("dd", {}, a.count),
        h("dt", {}, "Description"), h("dd", {}, a.description || "—"),
        h("dt", {}, "Acknowledged"), h("dd", {}, a.acknowledged_at ? `${fmtTime(a.acknowledged_at)} by account #${a.acknowledged_by}` : "—"),
        h("dt", {}, "Cleared"), h("dd", {}, a.cleared_at ? `${fmtTime(a.cleared_at)}${a.cleared_by ? ` by account #${a.cleared_by}` : ""}` : "—")),
        h("div", { class: "actions" }, ack, clear, logButton)),
      notificationsPanel(id));
  }
  load();
}
