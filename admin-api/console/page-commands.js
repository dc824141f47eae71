// Commands to devices (issue 11): the catalog's kinds as a form with their arguments, a device's
// commands (states, times, output; cancel while queued; refreshed while any is pending) and its
// uploaded files, and the device list's bulk command. Shared with the scheduled tasks page.

import { del, get, post } from "./api.js";
import { badge, busy, checkbox, errorBox, field, fmtTime, h, loading, mount, okBox, select, table } from "./ui.js";

const PENDING = new Set(["queued", "sent", "accepted", "running"]);
const STATE_BADGE = { queued: "pending", sent: "pending", accepted: "pending", running: "pending", succeeded: "enabled", failed: "off", expired: "off", cancelled: "unknown" };
/** Polling of a device's pending commands: every 3 s, slowing to 30 s, at most 200 times. */
const POLL_FIRST_MS = 3000, POLL_MAX_MS = 30000, POLL_LIMIT = 200;

let catalog = null;

/** The command kinds (`GET /api/v1/command-kinds`), read once per page load. */
export async function commandKinds() {
  if (!catalog) catalog = (await get("/api/v1/command-kinds")).items;
  return catalog;
}

export function stateBadge(state) {
  return badge(STATE_BADGE[state] || "unknown", state ? state.replace(/_/g, " ") : "—");
}

/**
 * The kind chooser and its arguments: `{ node, value() }`; `value()` answers `{kind, args}`.
 * Bounds and defaults come from the catalog; the API checks them (the form does not), so its
 * message, naming the argument, is what the user sees.
 */
export function kindPicker(kinds, idPrefix) {
  const kindSelect = select("kind", kinds.map((k) => [k.name, k.name.replace(/_/g, " ")]), "ping");
  kindSelect.id = idPrefix + "-kind";
  const summary = h("p", { class: "muted" });
  const argsSlot = h("div", { class: "row", id: idPrefix + "-args" });
  const paint = () => {
    const k = kinds.find((x) => x.name === kindSelect.value) || kinds[0];
    mount(summary, k.summary, k.file ? ` The device uploads ${k.file}.` : "");
    mount(argsSlot, k.args.map((a) => {
      if (a.type === "confirm") return h("div", { class: "field confirm" }, checkbox("arg:" + a.name, `I confirm: ${k.summary.replace(/\.$/, "").toLowerCase()}.`, false));
      if (a.type === "integer") {
        const input = h("input", { name: "arg:" + a.name, type: "number", min: a.min, max: a.max, placeholder: String(a.default), step: 1 });
        return field(`${a.name.replace(/_/g, " ")}`, input, `${a.summary}: ${a.min.toLocaleString()} to ${a.max.toLocaleString()}, default ${a.default.toLocaleString()}.`);
      }
      return field(`${a.name.replace(/_/g, " ")}${a.required ? " (required)" : ""}`, h("input", { name: "arg:" + a.name, type: "text", maxlength: 253, autocomplete: "off" }), a.summary);
    }));
    if (!k.args.length) argsSlot.append(h("p", { class: "muted" }, "No arguments."));
  };
  kindSelect.addEventListener("change", paint);
  paint();
  const value = () => {
    const args = {};
    for (const el of argsSlot.querySelectorAll("[name^='arg:']")) {
      const name = el.name.slice(4);
      if (el.type === "checkbox") { if (el.checked) args[name] = true; }
      else if (el.type === "number") { if (el.value !== "" || el.validity.badInput) args[name] = el.value === "" ? el.value : Number(el.value); }
      else if (el.value.trim() !== "") args[name] = el.value.trim();
    }
    return { kind: kindSelect.value, args };
  };
  return { node: h("div", {}, field("Command", kindSelect), summary, argsSlot), value, kindSelect };
}

/** The device's "Commands & diagnostics" tab. */
export async function commandsPanel(panel, d) {
  mount(panel, loading());
  let kinds;
  try {
    kinds = await commandKinds();
  } catch (e) {
    return mount(panel, e.status === 403 ? h("p", { class: "muted" }, "This account may not send commands.") : errorBox(e, () => commandsPanel(panel, d)));
  }
  const picker = kindPicker(kinds, "command");
  const deadline = h("input", { name: "deadline_s", type: "number", min: 10, max: 604800, placeholder: "3600" });
  const send = h("button", { class: "primary", type: "submit", id: "send-command" }, "Send command");
  const errors = h("div", { id: "command-errors" });
  const form = h("form", { id: "command-form", novalidate: true }, h("h2", {}, "Send a command"), picker.node,
    field("Expires after (seconds)", deadline, "If the device has not finished by then: 10 s to 7 days, default 1 hour."), errors, h("div", { class: "actions" }, send));
  const markDanger = () => {
    const reset = picker.kindSelect.value === "factory_reset";
    send.className = reset ? "danger" : "primary";
    send.textContent = reset ? "Reset to factory settings" : "Send command";
  };
  picker.kindSelect.addEventListener("change", markDanger);
  const commandsSlot = h("div", { id: "command-list" }, loading());
  const filesSlot = h("div", { id: "file-list" }, loading());
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const { kind, args } = picker.value();
    if (kind === "factory_reset" && args.confirm !== true) {
      return mount(errors, errorBox({ message: "A factory reset erases the device's configuration: tick the confirmation first." }));
    }
    const body = { kind, args };
    if (deadline.value !== "") body.deadline_s = Number(deadline.value);
    busy(send, errors, async () => {
      const c = await post(`/api/v1/devices/${d.id}/commands`, body);
      mount(errors, okBox(`Command #${c.id} (${c.kind.replace(/_/g, " ")}) is ${c.state}.`));
      afters.length = 1;
      poll.delay = POLL_FIRST_MS;
      poll.count = 0;
      loadCommands();
    });
  });
  mount(panel, form, h("h2", {}, "Commands"), commandsSlot, h("h2", {}, "Files"), filesSlot);

  // The commands, newest first, keyset pages; refreshed while any shown is pending.
  const afters = [null];
  const poll = { timer: null, delay: POLL_FIRST_MS, count: 0 };
  async function loadCommands() {
    clearTimeout(poll.timer);
    if (!panel.isConnected && poll.count > 0) return;
    let page;
    try {
      page = await get(`/api/v1/devices/${d.id}/commands`, { after: afters[afters.length - 1] || undefined, limit: 20 });
    } catch (e) {
      return mount(commandsSlot, errorBox(e, loadCommands));
    }
    const n = afters.length - 1;
    mount(commandsSlot, table([
      { label: "#", cell: (c) => c.id },
      { label: "Command", cell: (c) => c.kind.replace(/_/g, " ") },
      { label: "Arguments", cell: (c) => (c.args && Object.keys(c.args).length ? Object.entries(c.args).map(([k, v]) => `${k}=${v}`).join(", ") : "—"), wrap: true },
      { label: "State", cell: (c) => h("span", { class: "command-state", "data-command": c.id }, stateBadge(c.state)) },
      { label: "Issued", cell: (c) => fmtTime(c.issued_at) },
      { label: "Sent", cell: (c) => fmtTime(c.sent_at) },
      { label: "Finished", cell: (c) => fmtTime(c.finished_at) },
      { label: "Output or reason", cell: (c) => (c.output || c.reason ? h("pre", { class: "code output" }, [c.reason, c.output].filter(Boolean).join("\n")) : "—"), wrap: true },
      { label: "", cell: (c) => (c.state === "queued" ? cancelButton(c) : "") },
    ], page.items, "No commands sent to this device yet.", "Commands of the device"),
    h("div", { class: "pager" },
      h("button", { type: "button", disabled: n === 0, onclick: () => { afters.pop(); loadCommands(); } }, "Newer"),
      h("span", { class: "muted" }, `Page ${n + 1}`),
      h("button", { type: "button", disabled: !page.next_after, onclick: () => { afters.push(page.next_after); loadCommands(); } }, "Older")));
    if (page.items.some((c) => PENDING.has(c.state)) && poll.count < POLL_LIMIT) {
      poll.count += 1;
      poll.timer = setTimeout(() => { if (panel.isConnected) loadCommands(); }, poll.delay);
      poll.delay = Math.min(Math.round(poll.delay * 1.5), POLL_MAX_MS);
    }
  }
  function cancelButton(c) {
    const b = h("button", { type: "button", class: "danger", id: `cancel-${c.id}` }, "Cancel");
    b.addEventListener("click", () => busy(b, errors, async () => {
      await del(`/api/v1/commands/${c.id}`);
      mount(errors, okBox(`Command #${c.id} cancelled.`));
      loadCommands();
    }));
    return b;
  }

  const fileAfters = [null];
  async function loadFiles() {
    try {
      const page = await get(`/api/v1/devices/${d.id}/files`, { after: fileAfters[fileAfters.length - 1] || undefined, limit: 20 });
      const n = fileAfters.length - 1;
      mount(filesSlot, table([
        { label: "File", cell: (f) => h("a", { href: `/api/v1/files/${f.id}/content`, download: f.name }, f.name) },
        { label: "Size", cell: (f) => fmtBytes(f.size) },
        { label: "Command", cell: (f) => (f.command_id ? `#${f.command_id}` : "—") },
        { label: "SHA-256", cell: (f) => h("code", { title: f.sha256 }, f.sha256.slice(0, 12) + "…") },
        { label: "Uploaded", cell: (f) => fmtTime(f.created_at) },
        { label: "Kept until", cell: (f) => fmtTime(f.expires_at) },
      ], page.items, "The device has uploaded no files.", "Files of the device"),
      h("div", { class: "pager" },
        h("button", { type: "button", disabled: n === 0, onclick: () => { fileAfters.pop(); loadFiles(); } }, "Newer"),
        h("button", { type: "button", disabled: !page.next_after, onclick: () => { fileAfters.push(page.next_after); loadFiles(); } }, "Older"),
        h("button", { type: "button", onclick: loadFiles }, "Refresh")));
    } catch (e) {
      mount(filesSlot, errorBox(e, loadFiles));
    }
  }
  loadCommands();
  loadFiles();
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * The device list's bulk command: to every device matching `filters` (the list's, without
 * sort and order) or to the `selected` device ids. Shows the counts and per-device refusals.
 */
export async function bulkForm(slot, { filters, total, selected, onClose }) {
  mount(slot, loading());
  let kinds;
  try {
    kinds = await commandKinds();
  } catch (e) {
    return mount(slot, errorBox(e));
  }
  const filter = {};
  for (const [k, v] of Object.entries(filters)) if (k !== "sort" && k !== "order") filter[k] = v;
  const picker = kindPicker(kinds, "bulk");
  const target = select("target", [["filter", `The ${total.toLocaleString()} device${total === 1 ? "" : "s"} matching this filter`], ...(selected.length ? [["selected", `The ${selected.length} selected device${selected.length === 1 ? "" : "s"}`]] : [])], selected.length ? "selected" : "filter");
  target.id = "bulk-target";
  const send = h("button", { class: "primary", type: "submit", id: "bulk-send" }, "Send");
  const errors = h("div", { id: "bulk-errors" });
  const result = h("div", { id: "bulk-result" });
  const form = h("form", { class: "panel", id: "bulk-form", novalidate: true }, h("h2", {}, "Send a command to many devices"),
    field("Devices", target), picker.node, errors,
    h("div", { class: "actions" }, send, h("button", { type: "button", onclick: onClose }, "Close")), result);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const { kind, args } = picker.value();
    if (kind === "factory_reset" && args.confirm !== true) return mount(errors, errorBox({ message: "A factory reset erases the devices' configuration: tick the confirmation first." }));
    const body = target.value === "selected" ? { kind, args, device_ids: selected } : { kind, args, filter };
    busy(send, errors, async () => {
      mount(result);
      const r = await post("/api/v1/commands", body);
      const refused = Object.entries(r.refused);
      const failures = r.results.filter((x) => x.error);
      mount(result,
        okBox(`${r.queued.toLocaleString()} command${r.queued === 1 ? "" : "s"} queued${refused.length ? "; refused: " + refused.map(([code, n]) => `${n} ${code.replace(/_/g, " ")}`).join(", ") : ""}.`),
        failures.length ? table([
          { label: "Device", cell: (x) => h("a", { href: `/devices/${x.device_id}`, "data-link": "" }, `#${x.device_id}`) },
          { label: "Refused", cell: (x) => x.error.code.replace(/_/g, " ") },
          { label: "Why", cell: (x) => x.error.message, wrap: true },
        ], failures.slice(0, 100), "", "Devices refused") : null,
        failures.length > 100 ? h("p", { class: "muted" }, `and ${failures.length - 100} more.`) : null);
    });
  });
  mount(slot, form);
  picker.kindSelect.focus();
}
