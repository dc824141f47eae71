// The device inventory (DEV-4): adding a device, the device detail's "Manage" tab (rename, model,
// attributes, move to another enterprise, delete after a confirmation), bulk edit of the devices
// the list's filter chooses, the list's CSV export, and the CSV import page (upload with progress,
// create / overwrite / merge, the import log with its row errors and errors.csv, past imports).

import { download, get, post, qs, upload, call } from "./api.js";
import { badge, busy, emptyState, errorBox, field, fmtTime, go, h, link, loading, mount, okBox, select, table } from "./ui.js";

/** Attributes typed one `key=value` a line; with `removals`, `key=` (no value) is null (remove). */
export function parseAttributes(text, removals) {
  const out = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf("=");
    if (i < 1) throw new Error(`Attributes: “${line}” is not key=value.`);
    const value = line.slice(i + 1).trim();
    out[line.slice(0, i).trim()] = removals && value === "" ? null : value;
  }
  return out;
}

function attributesText(attributes) {
  return Object.entries(attributes || {}).map(([k, v]) => `${k}=${v}`).join("\n");
}

function text(name, value, extra) {
  return h("input", { name, value: value ?? "", autocomplete: "off", ...extra });
}

// ---- adding one device ----

/** `/devices/new`: a device by MAC or serial, with model, name, enterprise and attributes. */
export function renderAdd(main, ctx) {
  const s = ctx.session;
  const errors = h("div");
  const mac = text("mac", "", { placeholder: "00:15:65:12:34:56" });
  const serial = text("serial");
  const model = text("model", "", { placeholder: "T54W" });
  const name = text("name");
  const enterprise = s.enterprise_id ? null : text("enterprise_id", ctx.query.get("enterprise_id"), { type: "number", min: 1 });
  const attributes = h("textarea", { name: "attributes", rows: 4, placeholder: "room=12\nfloor=3" });
  const save = h("button", { class: "primary", type: "submit" }, "Add device");
  const form = h("form", { class: "panel", id: "add-device", novalidate: true },
    h("div", { class: "row" }, field("MAC address", mac), field("Serial number", serial), field("Model", model), field("Name", name),
      enterprise ? field("Enterprise id", enterprise) : null),
    field("Attributes (one key=value a line)", attributes, "Keys: a-z, 0-9, '_', '.', '-'. At least a MAC or a serial number."),
    errors, h("div", { class: "actions" }, save, link("/devices", "Cancel")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(save, errors, async () => {
      const body = {
        mac: mac.value.trim() || undefined,
        serial: serial.value.trim() || undefined,
        model: model.value.trim(),
        name: name.value.trim(),
        attributes: parseAttributes(attributes.value, false),
      };
      if (enterprise && enterprise.value) body.enterprise_id = Number(enterprise.value);
      const made = await post("/api/v1/devices", body);
      ctx.navigate(`/devices/${made.id}`);
    });
  });
  mount(main, h("h1", {}, "Add a device"), h("p", {}, link("/devices", "← Devices"), " · ", link("/device-imports", "Import many from a CSV file")), form);
}

// ---- one device: the detail's "Manage" tab ----

/** The device detail's Manage tab: edit, move, delete. */
export function managePanel(panel, d) {
  const notice = h("div", { id: "manage-notice" });

  const editErrors = h("div");
  const name = text("name", d.name);
  const model = text("model", d.model);
  const attributes = h("textarea", { name: "attributes", rows: 5 }, attributesText(d.attributes));
  const save = h("button", { class: "primary", type: "submit" }, "Save changes");
  const edit = h("form", { class: "panel", id: "edit-device", novalidate: true }, h("h2", {}, "Name, model and attributes"),
    h("div", { class: "row" }, field("Name", name), field("Model", model)),
    field("Attributes (one key=value a line; the list replaces the device's)", attributes), editErrors, h("div", { class: "actions" }, save));
  edit.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(save, editErrors, async () => {
      const body = { name: name.value.trim(), model: model.value.trim(), attributes: { replace: parseAttributes(attributes.value, false) } };
      const changed = await call("PATCH", `/api/v1/devices/${d.id}`, body);
      Object.assign(d, changed);
      const heading = document.querySelector("main h1");
      if (heading) heading.textContent = changed.name || changed.mac || `Device #${d.id}`;
      mount(notice, okBox("Saved."));
    });
  });

  const moveErrors = h("div");
  const target = text("enterprise_id", "", { type: "number", min: 1 });
  const moveButton = h("button", { type: "submit" }, "Move device");
  const move = h("form", { class: "panel", id: "move-device", novalidate: true }, h("h2", {}, "Move to another enterprise"),
    h("p", { class: "muted" }, "Its pending commands are cancelled and its uploaded files deleted; it reconnects with the new enterprise's credential."),
    h("div", { class: "row" }, field("Enterprise id", target), moveButton), moveErrors);
  move.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(moveButton, moveErrors, async () => {
      if (!target.value) throw new Error("Give the id of the enterprise to move the device to.");
      const moved = await post(`/api/v1/devices/${d.id}/move`, { enterprise_id: Number(target.value) });
      Object.assign(d, moved);
      mount(notice, okBox(`Moved to enterprise #${moved.enterprise_id}.`));
    });
  });

  const deleteErrors = h("div");
  const confirmSlot = h("div");
  const askDelete = h("button", { type: "button", class: "danger", id: "delete-device" }, "Delete device…");
  askDelete.addEventListener("click", () => {
    const yes = h("button", { type: "button", class: "danger primary", id: "confirm-delete" }, "Delete it");
    const no = h("button", { type: "button", onclick: () => { confirmSlot.replaceChildren(); askDelete.focus(); } }, "Cancel");
    yes.addEventListener("click", () => busy(yes, deleteErrors, async () => {
      await call("DELETE", `/api/v1/devices/${d.id}`);
      go("/devices?deleted=" + encodeURIComponent(d.mac || d.serial || d.id));
    }));
    mount(confirmSlot, h("div", { class: "alert error", role: "alertdialog", "aria-labelledby": "confirm-delete-text" },
      h("p", { id: "confirm-delete-text" }, `Delete ${d.name || d.mac || d.serial || "this device"}? Its command queue and files are deleted now, its history when retention removes it; if it connects again it is added anew.`),
      h("div", { class: "actions inline" }, yes, no)));
    no.focus();
  });
  const remove = h("section", { class: "panel", id: "delete-section" }, h("h2", {}, "Delete"), askDelete, confirmSlot, deleteErrors);

  mount(panel, notice, edit, move, remove);
}

// ---- the list: bulk edit and export ----

/** The list's filter as the bulk routes take it (no sort or paging). */
function bulkFilter(filters) {
  const filter = {};
  for (const [k, v] of Object.entries(filters)) if (!["sort", "order", "deleted"].includes(k)) filter[k] = v;
  return filter;
}

/** Bulk edit of every device the list's filter chooses: model and attribute changes. */
export function bulkEditForm(slot, { filters, total, onDone }) {
  const errors = h("div");
  const model = text("model");
  const attributes = h("textarea", { name: "attributes", rows: 3, placeholder: "floor=3\nold_key=" });
  const apply = h("button", { class: "primary", type: "submit" }, `Apply to ${total.toLocaleString()} device${total === 1 ? "" : "s"}`);
  const form = h("form", { class: "panel", id: "bulk-edit", novalidate: true }, h("h2", {}, "Edit the devices matching this filter"),
    h("div", { class: "row" }, field("New model (empty: unchanged)", model)),
    field("Attributes to set (key=value) or remove (key=), one a line", attributes),
    errors, h("div", { class: "actions" }, apply, h("button", { type: "button", onclick: () => slot.replaceChildren() }, "Cancel")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(apply, errors, async () => {
      const changes = {};
      if (model.value.trim()) changes.model = model.value.trim();
      const merge = parseAttributes(attributes.value, true);
      if (Object.keys(merge).length) changes.attributes = { merge };
      if (!Object.keys(changes).length) throw new Error("Nothing to change: give a model or attributes.");
      const r = await post("/api/v1/devices/bulk-edit", { filter: bulkFilter(filters), changes });
      mount(slot, okBox(`${r.changed.toLocaleString()} device${r.changed === 1 ? "" : "s"} changed.`));
      if (onDone) onDone();
    });
  });
  mount(slot, form);
  model.focus();
}

/** Downloads the devices the list's filter chooses as CSV (the export streams every page). */
export async function exportCsv(button, errorSlot, filters) {
  const f = { ...filters };
  delete f.deleted;
  await busy(button, errorSlot, async () => {
    button.textContent = "Exporting…";
    try {
      await download("/api/v1/devices/export" + qs(f), "devices.csv");
    } finally {
      button.textContent = "Export CSV";
    }
  });
}

// ---- CSV import ----

const MODES = [["create", "Add new devices only (existing ones left alone)"], ["merge", "Merge: add new, update the columns given"], ["overwrite", "Overwrite: add new, replace existing devices' fields"]];

function stateBadge(i) {
  return badge(i.state === "done" ? "enabled" : i.state === "running" ? "pending" : "off", i.state);
}

/** An import log: counts, state and note, its first row errors, the errors.csv download. */
function importLog(log) {
  const errorsSlot = h("div");
  const dl = h("button", { type: "button", id: "errors-csv" }, "Download errors.csv");
  dl.addEventListener("click", () => busy(dl, errorsSlot, () => download(`/api/v1/device-imports/${log.id}/errors.csv`, "device-import-errors.csv")));
  return h("section", { class: "panel", id: "import-log", "data-state": log.state },
    h("h2", {}, `Import #${log.id} `, stateBadge(log)),
    h("dl", { class: "kv" },
      h("dt", {}, "Enterprise"), h("dd", {}, `#${log.enterprise_id}`),
      h("dt", {}, "Mode"), h("dd", {}, log.mode),
      h("dt", {}, "Started"), h("dd", {}, fmtTime(log.started_at)),
      h("dt", {}, "Finished"), h("dd", {}, fmtTime(log.finished_at)),
      h("dt", {}, "Rows read"), h("dd", { id: "import-rows" }, String(log.rows)),
      h("dt", {}, "Added"), h("dd", { id: "import-created" }, String(log.created)),
      h("dt", {}, "Updated"), h("dd", {}, String(log.updated)),
      h("dt", {}, "Left alone"), h("dd", {}, String(log.skipped)),
      h("dt", {}, "Refused"), h("dd", { id: "import-failed" }, String(log.failed))),
    log.note ? h("div", { class: "alert error", role: "alert", id: "import-note" }, log.note) : null,
    log.failed ? [
      h("h3", {}, "Refused rows"),
      table([
        { label: "Line", cell: (e) => e.line },
        { label: "Column", cell: (e) => e.column || "(the row)" },
        { label: "Reason", cell: (e) => e.reason, wrap: true },
      ], log.errors || [], "The row errors were not kept.", "Refused rows"),
      (log.errors || []).length < log.failed ? h("p", { class: "muted" }, `The first ${(log.errors || []).length} of ${log.failed} are shown; all kept errors are in errors.csv.`) : null,
      h("div", { class: "actions" }, dl), errorsSlot,
    ] : h("p", { class: "muted" }, "No row was refused."));
}

/** `/device-imports`: upload a CSV file, and the past imports. */
export function renderImports(main, ctx) {
  const s = ctx.session;
  const errors = h("div");
  const result = h("div", { id: "import-result" });
  const file = h("input", { type: "file", name: "file", accept: ".csv,.txt,text/csv", required: true });
  const mode = select("mode", MODES, "create");
  const enterprise = s.enterprise_id ? null : text("enterprise_id", ctx.query.get("enterprise_id"), { type: "number", min: 1 });
  const progress = h("progress", { max: 100, value: 0, id: "import-progress", hidden: true, "aria-label": "Upload progress" });
  const progressText = h("span", { class: "muted", role: "status", id: "import-progress-text" });
  const start = h("button", { class: "primary", type: "submit" }, "Import");
  const form = h("form", { class: "panel", id: "import-form", novalidate: true },
    h("p", {}, "A header row, then one device a row. ", h("code", {}, "mac_address"), " or ", h("code", {}, "serial_number"),
      " is required; ", h("code", {}, "endpoint_type"), " (model), ", h("code", {}, "endpoint_name"), " and ", h("code", {}, "endpoint_group"),
      " (|-separated) are known; any other column is an attribute. Comma, semicolon or tab separated. At most 10,000 rows (10 MiB)."),
    h("div", { class: "row" }, field("CSV file", file), field("Mode", mode), enterprise ? field("Enterprise id", enterprise) : null),
    errors, h("div", { class: "actions" }, start, progress, progressText));
  const list = h("div", { id: "import-list" });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(start, errors, async () => {
      const chosen = file.files && file.files[0];
      if (!chosen) throw new Error("Choose a CSV file to import.");
      const q = { mode: mode.value, enterprise_id: enterprise && enterprise.value ? enterprise.value : undefined };
      result.replaceChildren();
      progress.hidden = false;
      progress.value = 0;
      const size = chosen.size || 1;
      progressText.textContent = "Uploading…";
      try {
        const log = await upload("/api/v1/device-imports" + qs(q), chosen, (sent, total) => {
          const pct = Math.min(100, Math.round((sent / (total || size)) * 100));
          progress.value = pct;
          progressText.textContent = pct < 100 ? `Uploading and applying… ${pct} %` : "Applying the last rows…";
        });
        progressText.textContent = `Import #${log.id}: ${log.state}.`;
        mount(result, importLog(log));
        loadList();
      } finally {
        progress.hidden = true;
      }
    });
  });

  const afters = [0];
  async function loadList() {
    mount(list, loading("Loading past imports…"));
    try {
      const page = await get("/api/v1/device-imports", { after: afters[afters.length - 1] || undefined, limit: 20 });
      const n = afters.length - 1;
      mount(list,
        table([
          { label: "Import", cell: (i) => link(`/device-imports/${i.id}`, `#${i.id}`) },
          { label: "State", cell: stateBadge },
          { label: "Enterprise", cell: (i) => `#${i.enterprise_id}` },
          { label: "Mode", cell: (i) => i.mode },
          { label: "Started", cell: (i) => fmtTime(i.started_at) },
          { label: "Rows", cell: (i) => i.rows },
          { label: "Added", cell: (i) => i.created },
          { label: "Updated", cell: (i) => i.updated },
          { label: "Refused", cell: (i) => i.failed },
        ], page.items, "No imports yet.", "Past imports"),
        h("div", { class: "pager" },
          h("button", { type: "button", disabled: n === 0, onclick: () => { afters.pop(); loadList(); } }, "Newer"),
          h("span", { class: "muted" }, `Page ${n + 1}`),
          h("button", { type: "button", disabled: !page.next_after, onclick: () => { afters.push(page.next_after); loadList(); } }, "Older")));
    } catch (e) {
      mount(list, errorBox(e, loadList));
    }
  }
  mount(main, h("h1", {}, "Import devices"), h("p", {}, link("/devices", "← Devices"), " · ", link("/devices/new", "Add one device")), form, result, h("h2", {}, "Past imports"), list);
  loadList();
}

/** `/device-imports/{id}`: one import log. */
export function renderImport(main, ctx) {
  mount(main, h("h1", {}, `Import #${ctx.id}`), loading());
  async function load() {
    try {
      const log = await get(`/api/v1/device-imports/${ctx.id}`);
      mount(main, h("h1", {}, `Import #${log.id}`), h("p", {}, link("/device-imports", "← Imports")), importLog(log));
    } catch (e) {
      mount(main, h("h1", {}, `Import #${ctx.id}`), e.status === 404 ? emptyState("No such import (or it is outside your scope).") : errorBox(e, load));
    }
  }
  load();
}
