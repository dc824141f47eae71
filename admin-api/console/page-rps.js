// RPS devices (DEV-1): an enterprise's list of devices (MAC or serial) and the provisioning
// server each is redirected to: search, keyset paging, add, change a server URL, delete, and the
// CSV import (the device import's columns plus server_url) with its refused rows. The enterprise
// is the session's own or the one chosen in the picker; without the RPS permission the API's 403
// says so in place.

import { del, get, post, put, upload } from "./api.js";
import { enterpriseOf, enterprisePicker } from "./enterprise.js";
import { busy, errorBox, field, fmtTime, h, loading, mount, okBox, table } from "./ui.js";

export async function render(main, ctx) {
  const enterprise = enterpriseOf(ctx);
  mount(main, h("h1", {}, "RPS devices"), loading());
  const picker = ctx.session.enterprise_id ? null : await enterprisePicker(ctx, enterprise, "/rps", "rps-enterprise");
  if (!enterprise) return mount(main, h("h1", {}, "RPS devices"), h("p", { class: "muted" }, "Choose the enterprise whose RPS list to manage."), picker);
  const notice = h("div", { id: "rps-notice" });
  const list = h("div", { id: "rps-list" }, loading());
  const afters = [0];
  let q = "";

  async function load() {
    mount(list, loading());
    try {
      const page = await get("/api/v1/rps-devices", { enterprise_id: enterprise, q: q || undefined, after: afters[afters.length - 1] || undefined, limit: 50 });
      const n = afters.length - 1;
      mount(list,
        table([
          { label: "MAC", cell: (d) => d.mac || "—" },
          { label: "Serial", cell: (d) => d.serial || "—" },
          { label: "Server URL", cell: (d) => urlCell(d), wrap: true },
          { label: "Changed", cell: (d) => fmtTime(d.updated_at) },
          { label: "", cell: (d) => deleteButton(d) },
        ], page.items, q ? "Nothing matches the search." : "No RPS devices yet: add one or import a CSV below.", "RPS devices"),
        h("div", { class: "pager" },
          h("button", { type: "button", disabled: n === 0, onclick: () => { afters.pop(); load(); } }, "Previous"),
          h("span", { class: "muted" }, `Page ${n + 1}`),
          h("button", { type: "button", disabled: !page.next_after, onclick: () => { afters.push(page.next_after); load(); } }, "Next")));
    } catch (e) {
      mount(list, errorBox(e, load));
    }
  }

  function urlCell(d) {
    const input = h("input", { name: "server_url", value: d.server_url, "aria-label": `Server URL of ${d.mac || d.serial}` });
    const save = h("button", { type: "button", "data-save": d.id }, "Save");
    save.addEventListener("click", () => busy(save, notice, async () => {
      const changed = await put(`/api/v1/rps-devices/${d.id}`, { server_url: input.value.trim() });
      mount(notice, okBox(`${changed.mac || changed.serial} now goes to ${changed.server_url}.`));
    }));
    return h("span", { class: "actions inline" }, input, save);
  }

  function deleteButton(d) {
    const b = h("button", { type: "button", class: "danger", "data-delete": d.id }, "Delete");
    b.addEventListener("click", () => busy(b, notice, async () => {
      await del(`/api/v1/rps-devices/${d.id}`);
      mount(notice, okBox(`${d.mac || d.serial} removed: its lookups answer “not found” from now on.`));
      load();
    }));
    return b;
  }

  const search = h("input", { type: "search", name: "q" });
  const searchForm = h("form", { class: "row", role: "search" }, field("Search MAC, serial or URL", search), h("button", { type: "submit" }, "Search"));
  searchForm.addEventListener("submit", (e) => { e.preventDefault(); q = search.value.trim(); afters.length = 1; load(); });

  const key = h("input", { name: "key", autocomplete: "off", placeholder: "00:15:65:aa:bb:cc or a serial" });
  const url = h("input", { name: "server_url", autocomplete: "off", placeholder: "https://dm.example.com/cfg" });
  const addErrors = h("div");
  const add = h("button", { class: "primary", type: "submit" }, "Add RPS device");
  const addForm = h("form", { class: "panel", id: "add-rps", novalidate: true }, h("h2", {}, "Add a device"),
    h("div", { class: "row" }, field("MAC or serial number", key), field("Provisioning server URL", url)), addErrors, h("div", { class: "actions" }, add));
  addForm.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(add, addErrors, async () => {
      const k = key.value.trim();
      const isMac = /^([0-9a-f]{2}[:-]?){5}[0-9a-f]{2}$/i.test(k);
      const made = await post("/api/v1/rps-devices", { enterprise_id: enterprise, [isMac ? "mac" : "serial"]: k, server_url: url.value.trim() });
      mount(notice, okBox(`${made.mac || made.serial} added: it is sent to ${made.server_url}.`));
      addForm.reset();
      load();
    });
  });

  const file = h("input", { type: "file", name: "file", accept: ".csv,text/csv" });
  const report = h("div", { id: "rps-import-report" });
  const send = h("button", { type: "submit" }, "Import CSV");
  const importForm = h("form", { class: "panel", id: "import-rps", novalidate: true }, h("h2", {}, "Import a CSV"),
    h("p", { class: "muted" }, "Columns mac_address or serial_number, and server_url; separators , ; or tab. Other columns are ignored."),
    field("CSV file", file), report, h("div", { class: "actions" }, send));
  importForm.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!file.files.length) return mount(report, errorBox(new Error("Choose a CSV file first.")));
    busy(send, report, async () => {
      const r = await upload(`/api/v1/rps-devices/import?enterprise_id=${enterprise}`, file.files[0], null, "text/csv");
      mount(report, okBox(`${r.rows} rows: ${r.added} added, ${r.updated} updated, ${r.failed} refused.`),
        r.errors.length ? table([
          { label: "Line", cell: (x) => x.line },
          { label: "Column", cell: (x) => x.column || "—" },
          { label: "Reason", cell: (x) => x.reason, wrap: true },
        ], r.errors.slice(0, 100), "", "Refused rows") : null);
      load();
    });
  });

  mount(main, h("h1", {}, "RPS devices"), picker, notice, searchForm, list, addForm, importForm);
  load();
}
