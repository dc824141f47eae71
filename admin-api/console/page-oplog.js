// The operation log: filters, keyset paging (newest first) and the CSV export of the filtered
// rows (at most 100,000, as the API bounds it).

import { download, get, qs } from "./api.js";
import { badge, busy, errorBox, field, fmtTime, formValues, h, loading, mount, okBox, table } from "./ui.js";

const FILTERS = ["from", "to", "operation", "account_id", "enterprise_id"];

function localInput(name, ms) {
  const v = ms ? new Date(Number(ms) - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16) : "";
  return h("input", { type: "datetime-local", name, value: v });
}

export function render(main, ctx) {
  const filters = {};
  for (const k of FILTERS) if (ctx.query.get(k)) filters[k] = ctx.query.get(k);
  const afters = [0];
  const slot = h("div", { id: "oplog-list" }, loading());
  const notice = h("div");
  const exportButton = h("button", { type: "button", id: "export-csv" }, "Export CSV");
  const form = h("form", { class: "panel", id: "oplog-filters", role: "search" },
    h("div", { class: "row" },
      field("From (your browser's zone)", localInput("from", filters.from)),
      field("Before", localInput("to", filters.to)),
      field("Operation", h("input", { name: "operation", value: filters.operation || "", placeholder: "POST /api/v1/enterprises" })),
      field("Account id", h("input", { name: "account_id", type: "number", value: filters.account_id || "" })),
      ctx.session.enterprise_id ? null : field("Enterprise id", h("input", { name: "enterprise_id", type: "number", value: filters.enterprise_id || "" }))),
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Apply filters"), h("button", { type: "button", onclick: () => ctx.navigate("/operation-log") }, "Clear"), exportButton));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = formValues(form);
    for (const k of ["from", "to"]) if (v[k]) v[k] = String(new Date(v[k]).getTime());
    ctx.navigate("/operation-log" + qs(v));
  });
  exportButton.addEventListener("click", () => busy(exportButton, notice, async () => {
    mount(notice, h("p", { class: "alert info", role: "status" }, "Preparing the export…"));
    const size = await download("/api/v1/operation-logs/export" + qs(filters), "operation-log.csv");
    mount(notice, okBox(`Exported (${size.toLocaleString()} bytes).`));
  }));
  mount(main, h("h1", {}, "Operation log"), form, notice, slot);

  async function load() {
    mount(slot, loading());
    try {
      const page = await get("/api/v1/operation-logs", { ...filters, after: afters[afters.length - 1] || undefined, limit: 50 });
      const n = afters.length - 1;
      mount(slot,
        table([
          { label: "Time", cell: (r) => fmtTime(r.at) },
          { label: "Account", cell: (r) => r.account_email || "—" },
          { label: "Acting as", cell: (r) => (r.acting_as ? `enterprise #${r.acting_as}` : "—") },
          { label: "Operation", cell: (r) => r.operation },
          { label: "Path", cell: (r) => r.path },
          { label: "Result", cell: (r) => badge(r.outcome === "success" ? "on" : "off", `${r.outcome} (${r.status})`) },
          { label: "IP", cell: (r) => r.ip },
        ], page.items, Object.keys(filters).length ? "No operation matches these filters." : "No operations recorded yet.", "Operation log"),
        h("div", { class: "pager" },
          h("button", { type: "button", disabled: n === 0, onclick: () => { afters.pop(); load(); } }, "Newer"),
          h("span", { class: "muted" }, `Page ${n + 1}`),
          h("button", { type: "button", disabled: !page.next_after, onclick: () => { afters.push(page.next_after); load(); } }, "Older")));
    } catch (e) {
      mount(slot, e.status === 403 ? h("p", { class: "muted" }, "This account may not read the operation log.") : errorBox(e, load));
    }
  }
  load();
}
