// Maintenance windows of an enterprise: list, create, edit, delete; and the alarm detail's
// "Notifications" panel (the window that held the alarm's notification back, and the
// notification audit: planned, deferred, retried, sent or failed, with the relay's reply). The API
// validates every field; its messages are shown as they come.

import { del, get, post, put } from "./api.js";
import { badge, busy, checkbox, errorBox, field, fmtTime, h, link, loading, mount, okBox, select, table } from "./ui.js";
import { enterpriseOf, enterprisePicker } from "./enterprise.js";

const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/** "while task #5 runs", "Mon, Wed 22:30 for 240 min", "from … to …". */
function describeTiming(t) {
  if (t.kind === "while_task") return `while task #${t.task_id} runs`;
  if (t.kind === "once") return `from ${fmtTime(t.start)} to ${fmtTime(t.end)}`;
  const days = t.weekdays.length ? t.weekdays.map((d) => DAYS[d - 1]).join(", ") : "every day";
  const hh = String(t.hour).padStart(2, "0");
  const mm = String(t.minute).padStart(2, "0");
  return `${days} ${hh}:${mm} for ${t.duration_minutes} min (the enterprise's time zone)`;
}

function describeScope(s) {
  if (s.kind === "enterprise") return "every device";
  return `${s.kind} ${s.ids.map((i) => "#" + i).join(", ")}`;
}

export function renderList(main, ctx) {
  const enterprise = enterpriseOf(ctx);
  const slot = h("div", { id: "window-list" });
  const notice = h("div");
  const picker = h("div");
  mount(main, h("h1", {}, "Maintenance windows"),
    h("p", { class: "muted" }, "Alarms of the selected devices and types raised inside a window are recorded but not notified; those still active when it ends are notified then."),
    picker, notice, slot);
  if (!ctx.session.enterprise_id) enterprisePicker(ctx, enterprise, "/windows", "window-enterprise").then((p) => mount(picker, p));
  if (!enterprise) return mount(slot, h("p", { class: "muted" }, "Choose the enterprise whose maintenance windows to manage."));

  async function load() {
    mount(slot, loading());
    try {
      const { items } = await get(`/api/v1/enterprises/${enterprise}/maintenance-windows`);
      const remove = (w) => {
        const b = h("button", { type: "button", class: "danger", "aria-label": `Delete window ${w.settings.name}` }, "Delete");
        b.addEventListener("click", () => { if (confirm(`Delete the window “${w.settings.name}”? What it holds back is notified now.`)) busy(b, notice, async () => { await del(`/api/v1/maintenance-windows/${w.id}`); mount(notice, okBox("Deleted.")); load(); }); });
        return b;
      };
      mount(slot,
        h("div", { class: "actions" }, link(`/windows/new?enterprise_id=${enterprise}`, "New window")),
        table([
          { label: "Name", cell: (w) => link(`/windows/${w.id}`, w.settings.name) },
          { label: "State", cell: (w) => (w.settings.enabled ? badge("enabled") : badge("disabled")) },
          { label: "When", cell: (w) => describeTiming(w.settings.timing), wrap: true },
          { label: "Devices", cell: (w) => describeScope(w.settings.scope), wrap: true },
          { label: "Alarm types", cell: (w) => (w.settings.alarm_types.length ? w.settings.alarm_types.join(", ") : "all") },
          { label: "Actions", cell: (w) => h("span", { class: "actions" }, remove(w)) },
        ], items, "No maintenance windows: every alarm is notified as its strategies say.", "Maintenance windows"));
    } catch (e) {
      mount(slot, errorBox(e, load));
    }
  }
  load();
}

/** The value of a `datetime-local` input for an instant (browser local time). */
function localInput(ms) {
  if (ms === undefined || ms === null) return "";
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

const ids = (text) => text.split(/[\s,]+/).map((x) => x.trim()).filter(Boolean).map(Number);

export function renderEdit(main, ctx) {
  const id = ctx.id;
  mount(main, h("h1", {}, id ? "Edit maintenance window" : "New maintenance window"), loading());
  (async () => {
    let w = null;
    if (id) {
      try {
        w = await get(`/api/v1/maintenance-windows/${id}`);
      } catch (e) {
        return mount(main, h("h1", {}, "Edit maintenance window"), errorBox(e));
      }
    }
    const enterprise = w ? w.enterprise_id : enterpriseOf(ctx);
    if (!enterprise) return mount(main, h("h1", {}, "New maintenance window"), await enterprisePicker(ctx, null, "/windows/new", "window-enterprise"));
    const v = w ? w.settings : { name: "", enabled: true, scope: { kind: "enterprise" }, alarm_types: [], timing: { kind: "recurring", weekdays: [], hour: 22, minute: 0, duration_minutes: 240 } };
    const t = v.timing;
    const scopeKind = select("scope_kind", [["enterprise", "Every device of the enterprise"], ["sites", "Sites (and the sites below them)"], ["groups", "Device groups"], ["devices", "Devices"]], v.scope.kind);
    const timingKind = select("timing_kind", [["recurring", "Recurring"], ["once", "Once"], ["while_task", "While a scheduled task runs"]], t.kind);
    const errors = h("div", { id: "window-errors" });
    const save = h("button", { class: "primary", type: "submit", id: "save-window" }, "Save window");
    const recurring = h("div", { id: "timing-recurring" },
      h("fieldset", { class: "days" }, h("legend", {}, "Weekdays (none: every day)"), DAYS.map((d, i) => checkbox("day" + (i + 1), d, t.kind === "recurring" && t.weekdays.includes(i + 1)))),
      h("div", { class: "row" },
        field("Starts at (the enterprise's local time)", h("input", { name: "start_time", type: "time", value: t.kind === "recurring" ? `${String(t.hour).padStart(2, "0")}:${String(t.minute).padStart(2, "0")}` : "22:00" })),
        field("Lasts (minutes)", h("input", { name: "duration", type: "number", min: 1, value: t.kind === "recurring" ? t.duration_minutes : 240 }))));
    const once = h("div", { id: "timing-once", class: "row" },
      field("From (this browser's local time)", h("input", { name: "from", type: "datetime-local", value: t.kind === "once" ? localInput(t.start) : "" })),
      field("To", h("input", { name: "to", type: "datetime-local", value: t.kind === "once" ? localInput(t.end) : "" })));
    const task = h("div", { id: "timing-task" },
      field("Scheduled task id (the window lasts while its run has commands in progress)", h("input", { name: "task_id", type: "number", min: 1, value: t.kind === "while_task" ? t.task_id : "" })));
    const showTiming = () => {
      recurring.hidden = timingKind.value !== "recurring";
      once.hidden = timingKind.value !== "once";
      task.hidden = timingKind.value !== "while_task";
    };
    timingKind.addEventListener("change", showTiming);
    showTiming();
    const scopeIds = h("input", { name: "scope_ids", value: v.scope.ids ? v.scope.ids.join(", ") : "" });
    const scopeIdsField = field("Ids (comma separated)", scopeIds);
    const showScope = () => { scopeIdsField.hidden = scopeKind.value === "enterprise"; };
    scopeKind.addEventListener("change", showScope);
    showScope();
    const form = h("form", { class: "panel", id: "window-form", novalidate: true },
      field("Name", h("input", { name: "name", value: v.name, required: true })),
      checkbox("enabled", "Enabled", v.enabled),
      field("Devices", scopeKind), scopeIdsField,
      field("Alarm type codes (comma separated; empty: every type; e.g. 202 device reboot, 109 offline)", h("input", { name: "alarm_types", value: v.alarm_types.join(", ") })),
      field("When", timingKind), recurring, once, task,
      errors,
      h("div", { class: "actions" }, save, link(`/windows?enterprise_id=${enterprise}`, "Cancel")));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const f = form.elements;
      let timing;
      if (f.timing_kind.value === "recurring") {
        const [hh, mm] = (f.start_time.value || "0:0").split(":").map(Number);
        timing = { kind: "recurring", weekdays: DAYS.map((_, i) => i + 1).filter((d) => f["day" + d].checked), hour: hh, minute: mm, duration_minutes: Number(f.duration.value || 0) };
      } else if (f.timing_kind.value === "once") {
        timing = { kind: "once", start: f.from.value ? new Date(f.from.value).getTime() : 0, end: f.to.value ? new Date(f.to.value).getTime() : 0 };
      } else {
        timing = { kind: "while_task", task_id: Number(f.task_id.value || 0) };
      }
      const scope = f.scope_kind.value === "enterprise" ? { kind: "enterprise" } : { kind: f.scope_kind.value, ids: ids(f.scope_ids.value) };
      const body = { name: f.name.value, enabled: f.enabled.checked, scope, alarm_types: ids(f.alarm_types.value), timing };
      busy(save, errors, async () => {
        if (id) await put(`/api/v1/maintenance-windows/${id}`, body);
        else await post(`/api/v1/enterprises/${enterprise}/maintenance-windows`, body);
        ctx.navigate(`/windows?enterprise_id=${enterprise}`);
      });
    });
    mount(main, h("h1", {}, id ? `Edit “${v.name}”` : "New maintenance window"), h("p", { class: "muted" }, `Enterprise #${enterprise}`), form);
  })();
}

const MARK_TEXT = {
  suppressed: "held back",
  released: "notified when the window ended",
  dropped: "not notified: acknowledged before the window ended",
};

/** The alarm detail's "Notifications" panel: the maintenance window that held it back. */
export function notificationsPanel(alarmId) {
  const slot = h("div", { class: "panel", id: "alarm-notifications" }, h("h2", {}, "Notifications"), loading());
  (async () => {
    try {
      const story = await get(`/api/v1/alarms/${alarmId}/notifications`);
      const mark = story.window;
      const line = mark
        ? h("p", { id: "alarm-window" }, `Suppressed by window “${mark.window_name}” (#${mark.window_id}) at ${fmtTime(mark.at)}: ${MARK_TEXT[mark.state] || mark.state}`,
          mark.state === "suppressed" ? (mark.until ? ` until ${fmtTime(mark.until)}.` : " while its task runs.") : ".")
        : h("p", { class: "muted", id: "alarm-window" }, "No maintenance window held this alarm back.");
      const entries = table([
        { label: "Time", cell: (e) => fmtTime(e.at) },
        { label: "What", cell: (e) => e.event.replaceAll("_", " ") },
        { label: "Receiver", cell: (e) => e.receiver || "—" },
        { label: "Details", cell: (e) => e.detail, wrap: true },
      ], story.entries, "No notification was planned for this alarm (no strategy selects it, or it is held back).", "Notification audit");
      mount(slot, h("h2", {}, "Notifications"), line, h("div", { id: "alarm-audit" }, entries));
    } catch (e) {
      mount(slot, h("h2", {}, "Notifications"), errorBox(e));
    }
  })();
  return slot;
}
