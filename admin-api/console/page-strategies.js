// Alarm strategies of an enterprise: list, create, edit, enable/disable, delete, and the
// effective list (its own and its channels', `strategies-effective.js`). The API validates every
// field; its messages are shown as they come.

import { del, get, post, put, qs } from "./api.js";
import { badge, busy, checkbox, errorBox, field, fmtTime, h, link, loading, mount, okBox, table } from "./ui.js";
import { enterpriseOf, enterprisePicker } from "./enterprise.js";
import { effectiveSection } from "./strategies-effective.js";

export function renderList(main, ctx) {
  const enterprise = enterpriseOf(ctx);
  const slot = h("div", { id: "strategy-list" });
  const notice = h("div");
  const picker = h("div");
  mount(main, h("h1", {}, "Alarm strategies"), picker, notice, slot);
  if (!ctx.session.enterprise_id) enterprisePicker(ctx, enterprise, "/strategies", "strategy-enterprise").then((p) => mount(picker, p));
  if (!enterprise) return mount(slot, h("p", { class: "muted" }, "Choose the enterprise whose strategies to manage."));
  main.append(effectiveSection(enterprise, notice));

  async function load() {
    mount(slot, loading());
    try {
      const { items } = await get(`/api/v1/enterprises/${enterprise}/alarm-strategies`);
      const toggle = (s) => {
        const b = h("button", { type: "button" }, s.settings.enabled ? "Disable" : "Enable");
        b.addEventListener("click", () => busy(b, notice, async () => { await post(`/api/v1/alarm-strategies/${s.id}/${s.settings.enabled ? "disable" : "enable"}`); load(); }));
        return b;
      };
      const remove = (s) => {
        const b = h("button", { type: "button", class: "danger", "aria-label": `Delete strategy ${s.settings.name}` }, "Delete");
        b.addEventListener("click", () => { if (confirm(`Delete the strategy “${s.settings.name}”?`)) busy(b, notice, async () => { await del(`/api/v1/alarm-strategies/${s.id}`); mount(notice, okBox("Deleted.")); load(); }); });
        return b;
      };
      mount(slot,
        h("div", { class: "actions" }, link(`/strategies/new?enterprise_id=${enterprise}`, "New strategy")),
        table([
          { label: "Name", cell: (s) => link(`/strategies/${s.id}`, s.settings.name) },
          { label: "State", cell: (s) => (s.settings.enabled ? badge("enabled") : badge("disabled")) },
          { label: "Receivers", cell: (s) => s.settings.receivers.join(", "), wrap: true },
          { label: "Changed", cell: (s) => fmtTime(s.updated_at) },
          { label: "Actions", cell: (s) => h("span", { class: "actions" }, toggle(s), remove(s)) },
        ], items, "No strategies yet: alarms of this enterprise notify nobody.", "Alarm strategies"));
    } catch (e) {
      mount(slot, errorBox(e, load));
    }
  }
  load();
}

export function renderEdit(main, ctx) {
  const id = ctx.id;
  mount(main, h("h1", {}, id ? "Edit strategy" : "New strategy"), loading());
  (async () => {
    let s = null;
    if (id) {
      try {
        s = await get(`/api/v1/alarm-strategies/${id}`);
      } catch (e) {
        return mount(main, h("h1", {}, "Edit strategy"), errorBox(e));
      }
    }
    const enterprise = s ? s.enterprise_id : enterpriseOf(ctx);
    if (!enterprise) return mount(main, h("h1", {}, "New strategy"), await enterprisePicker(ctx, null, "/strategies/new", "strategy-enterprise"));
    const v = s ? s.settings : { name: "", enabled: true, alarm_types: [], severities: [], receivers: [], group_wait_ms: 10000, group_interval_ms: 60000, repeat_interval_ms: 14400000, thresholds: [] };
    const cpu = v.thresholds.find((t) => t.metric === "cpu");
    const mem = v.thresholds.find((t) => t.metric === "memory");
    const num = (name, value, extra) => h("input", { name, type: "number", value: value ?? "", ...(extra || {}) });
    const errors = h("div", { id: "strategy-errors" });
    const save = h("button", { class: "primary", type: "submit", id: "save-strategy" }, "Save strategy");
    const form = h("form", { class: "panel", id: "strategy-form" },
      field("Name", h("input", { name: "name", value: v.name, required: true })),
      checkbox("enabled", "Enabled", v.enabled),
      field("Receivers (email addresses, one per line)", h("textarea", { name: "receivers", rows: 3 }, v.receivers.join("\n"))),
      h("fieldset", {}, h("legend", {}, "Severities (none checked: every severity)"), ["critical", "major", "minor"].map((k) => checkbox("sev_" + k, k, v.severities.includes(k)))),
      field("Alarm type codes (comma separated; empty: every type)", h("input", { name: "alarm_types", value: v.alarm_types.join(", ") })),
      h("div", { class: "row" },
        field("Group wait (s)", num("group_wait", v.group_wait_ms / 1000, { min: 0 })),
        field("Group interval (s)", num("group_interval", v.group_interval_ms / 1000, { min: 0 })),
        field("Repeat interval (min)", num("repeat_interval", v.repeat_interval_ms / 60000, { min: 0 }))),
      h("div", { class: "row" },
        field("CPU above (%)", num("cpu_pct", cpu ? cpu.above_centi_pct / 100 : "", { min: 0, max: 100, step: "0.01" })),
        field("for (min)", num("cpu_min", cpu ? cpu.for_ms / 60000 : "", { min: 0 })),
        field("Memory above (%)", num("mem_pct", mem ? mem.above_centi_pct / 100 : "", { min: 0, max: 100, step: "0.01" })),
        field("for (min)", num("mem_min", mem ? mem.for_ms / 60000 : "", { min: 0 }))),
      errors,
      h("div", { class: "actions" }, save, link(`/strategies?enterprise_id=${enterprise}`, "Cancel")));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const f = form.elements;
      const thresholds = [];
      if (f.cpu_pct.value !== "") thresholds.push({ metric: "cpu", above_percent: Number(f.cpu_pct.value), for_minutes: Number(f.cpu_min.value || 0) });
      if (f.mem_pct.value !== "") thresholds.push({ metric: "memory", above_percent: Number(f.mem_pct.value), for_minutes: Number(f.mem_min.value || 0) });
      const body = {
        name: f.name.value,
        enabled: f.enabled.checked,
        receivers: f.receivers.value.split(/[\n,]/).map((r) => r.trim()).filter(Boolean),
        severities: ["critical", "major", "minor"].filter((k) => f["sev_" + k].checked),
        alarm_types: f.alarm_types.value.split(",").map((c) => c.trim()).filter(Boolean).map(Number),
        group_wait_ms: Math.round(Number(f.group_wait.value || 0) * 1000),
        group_interval_ms: Math.round(Number(f.group_interval.value || 0) * 1000),
        repeat_interval_ms: Math.round(Number(f.repeat_interval.value || 0) * 60000),
        thresholds,
      };
      busy(save, errors, async () => {
        if (id) await put(`/api/v1/alarm-strategies/${id}`, body);
        else await post(`/api/v1/enterprises/${enterprise}/alarm-strategies`, body);
        ctx.navigate(`/strategies?enterprise_id=${enterprise}`);
      });
    });
    mount(main, h("h1", {}, id ? `Edit “${v.name}”` : "New strategy"), h("p", { class: "muted" }, `Enterprise #${enterprise}`), form);
  })();
}
