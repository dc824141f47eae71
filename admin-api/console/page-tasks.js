// Scheduled tasks (TSK-1): the list (keyset pages; pause, resume, cancel), the form creating one
// (a command kind and its arguments, the devices of a filter or by id, once / daily / weekly at
// a local time in a time zone, what a missed run does), and a task's runs with their devices.

import { del, get, post } from "./api.js";
import { commandKinds, kindPicker, stateBadge } from "./page-commands.js";
import { badge, busy, checkbox, errorBox, field, fmtTime, h, link, loading, mount, okBox, select, table } from "./ui.js";

const DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
const TASK_BADGE = { active: "enabled", paused: "pending", cancelled: "unknown", completed: "cleared" };

function scheduleText(t) {
  const s = t.schedule;
  if (s.kind === "once") return `once, ${fmtTime(s.at)}`;
  if (s.kind === "daily") return `daily at ${s.time}`;
  return `${s.days.map((d) => d.slice(0, 3)).join(", ")} at ${s.time}`;
}

function targetsText(t) {
  if (t.targets.device_ids) return `${t.targets.device_ids.length} device${t.targets.device_ids.length === 1 ? "" : "s"} by id`;
  return t.targets.filter ? `devices matching ${t.targets.filter}` : "every device of the enterprise";
}

/** Pause / resume / cancel buttons for a task, as its state allows; `after` reloads. */
function taskActions(t, notice, after) {
  const act = (label, id, call) => {
    const b = h("button", { type: "button", id: `${id}-${t.id}`, class: id === "cancel-task" ? "danger" : null }, label);
    b.addEventListener("click", () => busy(b, notice, async () => {
      const changed = await call();
      mount(notice, okBox(`Task “${changed.name}” is ${changed.state}.`));
      after();
    }));
    return b;
  };
  return h("span", { class: "actions inline" },
    t.state === "active" ? act("Pause", "pause-task", () => post(`/api/v1/tasks/${t.id}/pause`)) : null,
    t.state === "paused" ? act("Resume", "resume-task", () => post(`/api/v1/tasks/${t.id}/resume`)) : null,
    t.state === "active" || t.state === "paused" ? act("Cancel", "cancel-task", () => del(`/api/v1/tasks/${t.id}`)) : null);
}

export function renderList(main, ctx) {
  const notice = h("div", { id: "task-notice" });
  const listSlot = h("div", { id: "task-list" }, loading());
  const formSlot = h("div");
  mount(main, h("h1", {}, "Scheduled tasks"), notice, formSlot, h("h2", {}, "Tasks"), listSlot);

  const afters = [null];
  async function load() {
    try {
      const page = await get("/api/v1/tasks", { after: afters[afters.length - 1] || undefined, limit: 50 });
      const n = afters.length - 1;
      mount(listSlot, table([
        { label: "Name", cell: (t) => link(`/tasks/${t.id}`, t.name) },
        { label: "Command", cell: (t) => t.kind.replace(/_/g, " ") },
        { label: "Devices", cell: (t) => targetsText(t), wrap: true },
        { label: "Schedule", cell: (t) => `${scheduleText(t)} (${t.time_zone})` },
        { label: "State", cell: (t) => h("span", { class: "task-state", "data-task": t.id }, badge(TASK_BADGE[t.state] || "unknown", t.state)) },
        { label: "Next run", cell: (t) => fmtTime(t.next_run_at) },
        { label: "Enterprise", cell: (t) => `#${t.enterprise_id}` },
        { label: "", cell: (t) => taskActions(t, notice, load) },
      ], page.items, "No scheduled tasks yet.", "Scheduled tasks"),
      h("div", { class: "pager" },
        h("button", { type: "button", disabled: n === 0, onclick: () => { afters.pop(); load(); } }, "Previous"),
        h("span", { class: "muted" }, `Page ${n + 1}`),
        h("button", { type: "button", disabled: !page.next_after, onclick: () => { afters.push(page.next_after); load(); } }, "Next")));
    } catch (e) {
      mount(listSlot, errorBox(e, load));
    }
  }
  load();
  createForm(formSlot, ctx, notice, () => { afters.length = 1; load(); });
}

async function createForm(slot, ctx, notice, created) {
  let kinds;
  try {
    kinds = await commandKinds();
  } catch (e) {
    return mount(slot, errorBox(e));
  }
  const s = ctx.session;
  const fixedEnterprise = s.enterprise_id;
  const enterprise = h("input", { name: "enterprise_id", type: "number", min: 1, required: true, value: ctx.query.get("enterprise_id") || "" });
  const name = h("input", { name: "name", maxlength: 128, placeholder: "the command's name" });
  const picker = kindPicker(kinds, "task");
  const targetKind = select("target_kind", [["filter", "The devices matching a filter (resolved at each run)"], ["ids", "These device ids"]], ctx.query.get("device_ids") ? "ids" : "filter");
  const filter = h("input", { name: "filter", value: ctx.query.get("filter") || "", placeholder: "model=T54W&online=true (empty: every device)", size: 40 });
  const ids = h("input", { name: "device_ids", value: ctx.query.get("device_ids") || "", placeholder: "12, 13, 14" });
  const filterField = field("Device filter (the device list's query)", filter, "Leave empty for every device of the enterprise.");
  const idsField = field("Device ids (comma-separated)", ids);
  const scheduleKind = select("schedule_kind", [["daily", "Every day"], ["weekly", "On chosen weekdays"], ["once", "Once"]], "daily");
  const time = h("input", { name: "time", type: "time", value: "03:00", required: true });
  const at = h("input", { name: "at", type: "datetime-local" });
  const days = h("fieldset", { class: "days" }, h("legend", {}, "Weekdays"), DAYS.map((d) => checkbox("day:" + d, d[0].toUpperCase() + d.slice(1, 3), false)));
  const timeField = field("Local time", time);
  const atField = field("When (this browser's local time)", at);
  const zone = h("input", { name: "time_zone", placeholder: "the enterprise's (UTC if none)" });
  const missed = select("missed", [["run_once", "Run once when the server is back"], ["skip", "Skip it"]], "run_once");
  const deadline = h("input", { name: "deadline_s", type: "number", min: 60, max: 604800, placeholder: "3600" });
  const save = h("button", { class: "primary", type: "submit", id: "create-task" }, "Create task");
  const errors = h("div", { id: "task-errors" });
  const paint = () => {
    filterField.hidden = targetKind.value !== "filter";
    idsField.hidden = targetKind.value !== "ids";
    timeField.hidden = scheduleKind.value === "once";
    atField.hidden = scheduleKind.value !== "once";
    days.hidden = scheduleKind.value !== "weekly";
  };
  targetKind.addEventListener("change", paint);
  scheduleKind.addEventListener("change", paint);
  paint();
  const form = h("form", { class: "panel", id: "task-form", novalidate: true }, h("h2", {}, "New scheduled task"),
    h("div", { class: "row" }, fixedEnterprise ? null : field("Enterprise id", enterprise), field("Name", name)),
    picker.node,
    h("div", { class: "row" }, field("Devices", targetKind), filterField, idsField),
    h("div", { class: "row" }, field("Schedule", scheduleKind), timeField, atField, field("Time zone", zone), field("A run missed while the server was down", missed), field("Commands expire after (seconds)", deadline)),
    days, errors, h("div", { class: "actions" }, save));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const { kind, args } = picker.value();
    const body = { kind, args, missed: missed.value };
    if (!fixedEnterprise) body.enterprise_id = enterprise.value === "" ? undefined : Number(enterprise.value);
    if (name.value.trim()) body.name = name.value.trim();
    if (zone.value.trim()) body.time_zone = zone.value.trim();
    if (deadline.value !== "") body.deadline_s = Number(deadline.value);
    if (targetKind.value === "ids") body.targets = { device_ids: ids.value.split(/[\s,]+/).filter(Boolean).map(Number) };
    else body.targets = { filter: filter.value.trim().replace(/^\?/, "") };
    if (scheduleKind.value === "once") body.schedule = { kind: "once", at: at.value ? new Date(at.value).getTime() : 0 };
    else if (scheduleKind.value === "daily") body.schedule = { kind: "daily", time: time.value };
    else body.schedule = { kind: "weekly", time: time.value, days: DAYS.filter((d) => form.elements["day:" + d].checked) };
    busy(save, errors, async () => {
      const t = await post("/api/v1/tasks", body);
      mount(notice, okBox(`Task “${t.name}” created; its first run is ${fmtTime(t.next_run_at)}.`));
      created();
    });
  });
  mount(slot, form);
}

export function renderDetail(main, ctx) {
  const id = ctx.id;
  const notice = h("div", { id: "task-notice" });
  mount(main, h("h1", {}, `Task #${id}`), loading());

  async function load() {
    let t;
    try {
      t = await get(`/api/v1/tasks/${id}`);
    } catch (e) {
      return mount(main, h("h1", {}, `Task #${id}`), e.status === 404 ? h("p", {}, "No such task (or it is outside your scope). ", link("/tasks", "Back to tasks")) : errorBox(e, load));
    }
    const runsSlot = h("div", { id: "run-list" }, loading());
    const runSlot = h("div", { id: "run-detail" });
    let args = t.args;
    try { args = Object.entries(JSON.parse(t.args)).map(([k, v]) => `${k}=${v}`).join(", ") || "—"; } catch (_) { /* shown as stored */ }
    mount(main, h("h1", {}, t.name), h("p", {}, link("/tasks", "← Scheduled tasks")), notice,
      h("section", { class: "panel" },
        h("dl", { class: "kv", id: "task-detail" },
          h("dt", {}, "State"), h("dd", {}, badge(TASK_BADGE[t.state] || "unknown", t.state)),
          h("dt", {}, "Command"), h("dd", {}, t.kind.replace(/_/g, " ")), h("dt", {}, "Arguments"), h("dd", {}, args),
          h("dt", {}, "Devices"), h("dd", {}, targetsText(t)),
          h("dt", {}, "Schedule"), h("dd", {}, `${scheduleText(t)} (${t.time_zone})`),
          h("dt", {}, "Missed run"), h("dd", {}, t.missed === "skip" ? "skipped" : "run once"),
          h("dt", {}, "Commands expire after"), h("dd", {}, `${t.deadline_s} s`),
          h("dt", {}, "Next run"), h("dd", {}, fmtTime(t.next_run_at)),
          h("dt", {}, "Created"), h("dd", {}, fmtTime(t.created_at))),
        h("div", { class: "actions" }, taskActions(t, notice, load))),
      h("h2", {}, "Runs"), runsSlot, runSlot);
    const afters = [null];
    async function loadRuns() {
      try {
        const page = await get(`/api/v1/tasks/${id}/runs`, { after: afters[afters.length - 1] || undefined, limit: 20 });
        const n = afters.length - 1;
        mount(runsSlot, table([
          { label: "Run", cell: (r) => { const b = h("button", { type: "button", class: "run-open" }, `#${r.id}`); b.addEventListener("click", () => showRun(r)); return b; } },
          { label: "For", cell: (r) => fmtTime(r.scheduled_for) },
          { label: "State", cell: (r) => badge(r.state === "done" ? "enabled" : r.state === "missed" ? "off" : "pending", r.state) },
          { label: "Matched", cell: (r) => r.matched },
          { label: "Queued", cell: (r) => r.queued },
          { label: "Refused", cell: (r) => r.refused },
          { label: "Note", cell: (r) => r.note || "—", wrap: true },
        ], page.items, "No runs yet.", "Runs of the task"),
        h("div", { class: "pager" },
          h("button", { type: "button", disabled: n === 0, onclick: () => { afters.pop(); loadRuns(); } }, "Newer"),
          h("button", { type: "button", disabled: !page.next_after, onclick: () => { afters.push(page.next_after); loadRuns(); } }, "Older")));
      } catch (e) {
        mount(runsSlot, errorBox(e, loadRuns));
      }
    }
    async function showRun(r, after) {
      mount(runSlot, loading());
      try {
        const d = await get(`/api/v1/tasks/${id}/runs/${r.id}`, { after, limit: 200 });
        const tt = d.totals;
        mount(runSlot, h("h2", {}, `Run #${r.id}, ${fmtTime(r.scheduled_for)}`),
          h("p", { id: "run-totals" }, `${tt.total} devices: ${tt.succeeded} succeeded, ${tt.failed} failed, ${tt.in_progress} in progress.`),
          table([
            { label: "Device", cell: (x) => link(`/devices/${x.device_id}`, `#${x.device_id}`) },
            { label: "Command", cell: (x) => (x.command_id ? `#${x.command_id}` : "—") },
            { label: "State", cell: (x) => (x.command_state ? stateBadge(x.command_state) : badge("off", "refused")) },
            { label: "Refusal", cell: (x) => x.refusal || "—", wrap: true },
          ], d.devices, "No devices in this run.", "Devices of the run"),
          d.next_after ? h("div", { class: "pager" }, h("button", { type: "button", onclick: () => showRun(r, d.next_after) }, "More devices")) : null);
      } catch (e) {
        mount(runSlot, errorBox(e, () => showRun(r, after)));
      }
    }
    loadRuns();
  }
  load();
}
