// Devices: the list (the API's filters, search, sort, keyset paging with next and previous,
// chosen columns, saved search labels, a command to the matching or selected devices; bulk edit,
// CSV export, adding and importing from page-inventory.js) and a device's detail (status, SIP
// lines, CPU and memory over time, its alarms, its commands and files, managing it).

import { del, get, post, put, qs } from "./api.js";
import { percentLine } from "./chart.js";
import { bulkForm, commandsPanel } from "./page-commands.js";
import { bulkEditForm, exportCsv, managePanel } from "./page-inventory.js";
import { deviceUpgrade } from "./page-firmware.js";
import { groupsPanel } from "./page-groups.js";
import { configurationPanel } from "./page-profiles.js";
import { badge, busy, checkbox, emptyState, errorBox, field, fmtDuration, fmtTime, formValues, h, link, loading, mount, okBox, select, table } from "./ui.js";

const PAGE = 50;
const FILTERS = ["q", "group", "online", "device_type", "sip_status", "licence", "model", "firmware", "public_ip", "private_ip", "site_id", "enterprise_id", "sort", "order"];
const COLUMNS = {
  mac: ["MAC", (d) => link(`/devices/${d.id}`, d.mac || `#${d.id}`)],
  model: ["Model", (d) => d.model],
  name: ["Name", (d) => d.name || "—"],
  device_type: ["Type", (d) => d.device_type.replace(/_/g, " ")],
  public_ip: ["Public IP", (d) => d.public_ip || "—"],
  private_ip: ["Private IP", (d) => d.private_ip || "—"],
  firmware: ["Firmware", (d) => d.firmware],
  site: ["Site", (d) => (d.site ? link(`/devices?site_id=${d.site.id}`, d.site.name) : "—")],
  online: ["Status", (d) => (d.online ? badge("on", "online") : badge("off", "offline"))],
  sip_status: ["SIP", (d) => badge(d.sip_status, d.sip_status)],
  channel: ["Sub-channel", (d) => (d.channel_id ? `#${d.channel_id}` : "—")],
  enterprise: ["Enterprise", (d) => d.enterprise_name],
  last_report_at: ["Last report", (d) => fmtTime(d.last_report_at)],
  groups: ["Groups", (d) => (d.groups && d.groups.length ? d.groups.map((g) => g.name).join(" › ") : "—")],
};
const SORTS = [["created", "Added"], ["mac", "MAC"], ["name", "Name"], ["model", "Model"], ["firmware", "Firmware"], ["public_ip", "Public IP"], ["private_ip", "Private IP"], ["online", "Status"], ["last_report_at", "Last report"], ["enterprise", "Enterprise"]];

function filtersFrom(query) {
  const f = {};
  for (const k of FILTERS) if (query.get(k)) f[k] = query.get(k);
  return f;
}

export function renderList(main, ctx) {
  const filters = filtersFrom(ctx.query);
  let columns = Object.keys(COLUMNS);
  const cursors = [null]; // cursors[i] opens page i; the last entry is the current page's
  const labelsSlot = h("div", { class: "labels", id: "labels" });
  const listSlot = h("div", { id: "device-list" }, loading());
  const notice = h("div");

  const text = (name, label, type = "search") => field(label, h("input", { name, type, value: filters[name] || "" }));
  const exportButton = h("button", { type: "button", id: "export-csv" }, "Export CSV");
  exportButton.addEventListener("click", () => exportCsv(exportButton, notice, filters));
  const groupSelect = select("group", [["", "Any"], ...(filters.group ? [[filters.group, `#${filters.group}`]] : [])], filters.group);
  get("/api/v1/groups", { enterprise_id: filters.enterprise_id, limit: 1000 })
    .then(({ items }) => mount(groupSelect, [["", "Any"], ...items.map((g) => [g.id, g.name])].map(([v, label]) => h("option", { value: v, selected: String(v) === String(filters.group ?? "") }, label))))
    .catch(() => { /* the filter still works by id */ });
  const form = h("form", { class: "panel", id: "device-filters", role: "search" },
    h("div", { class: "row" },
      text("q", "Search (MAC, name, model, IP)"),
      field("Status", select("online", [["", "Any"], ["true", "Online"], ["false", "Offline"]], filters.online)),
      field("Type", select("device_type", [["", "Any"], ["phone", "Phone"], ["usb", "USB"], ["room_system", "Room system"], ["workspace", "Workspace"], ["other", "Other"]], filters.device_type)),
      field("SIP", select("sip_status", [["", "Any"], ["registered", "Registered"], ["partial", "Partial"], ["unregistered", "Unregistered"], ["unknown", "Unknown"]], filters.sip_status)),
      field("Licence", select("licence", [["", "Any"], ["licensed", "Licensed"], ["unlicensed", "Unlicensed"], ["unknown", "Unknown"]], filters.licence)),
      text("model", "Model", "text"), text("firmware", "Firmware", "text"), text("public_ip", "Public IP", "text"), text("private_ip", "Private IP", "text"),
      text("site_id", "Site id (and sites below it)", "number"),
      ctx.session.enterprise_id ? null : text("enterprise_id", "Enterprise id", "number"),
      field("Group", groupSelect),
      field("Sort by", select("sort", SORTS, filters.sort || "created")),
      field("Order", select("order", [["asc", "Ascending"], ["desc", "Descending"]], filters.order || "asc")),
    ),
    h("div", { class: "actions" },
      h("button", { class: "primary", type: "submit" }, "Apply filters"),
      h("button", { type: "button", onclick: () => ctx.navigate("/devices") }, "Clear"),
      h("button", { type: "button", id: "save-label", onclick: saveLabel }, "Save as label"),
      h("button", { type: "button", id: "choose-columns", onclick: chooseColumns }, "Columns"),
      h("button", { type: "button", id: "bulk-command", onclick: bulkCommand }, "Send command…"),
      h("button", { type: "button", id: "schedule-task", onclick: () => ctx.navigate("/tasks" + qs({ filter: qs(taskFilter()).slice(1), enterprise_id: filters.enterprise_id })) }, "Schedule a task…"),
      h("button", { type: "button", id: "bulk-edit-open", onclick: () => bulkEditForm(notice, { filters, total, onDone: loadPage }) }, "Edit matching…"),
      exportButton,
      h("a", { class: "button", href: "/devices/new" + qs({ enterprise_id: filters.enterprise_id }), "data-link": "", id: "add-device-link" }, "Add device"),
      h("a", { class: "button", href: "/device-imports" + qs({ enterprise_id: filters.enterprise_id }), "data-link": "", id: "import-link" }, "Import CSV")),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = formValues(form);
    if (v.sort === "created") delete v.sort;
    if (v.order === "asc") delete v.order;
    ctx.navigate("/devices" + qs(v));
  });
  const dialog = h("dialog", { id: "columns-dialog", "aria-labelledby": "columns-title" });
  const selected = new Set();
  let total = 0;
  // A task's filter is the list's without tenant parameters (a task targets its enterprise).
  const taskFilter = () => Object.fromEntries(Object.entries(filters).filter(([k]) => k !== "enterprise_id"));
  function bulkCommand() {
    bulkForm(notice, { filters, total, selected: [...selected], onClose: () => notice.replaceChildren() });
  }
  if (ctx.query.get("deleted")) mount(notice, okBox(`Device ${ctx.query.get("deleted")} deleted.`));
  mount(main, h("h1", {}, "Devices"), labelsSlot, form, notice, listSlot, dialog);

  async function loadLabels() {
    try {
      const { items } = await get("/api/v1/device-labels");
      mount(labelsSlot, h("strong", {}, "Saved searches:"), items.length ? items.map((l) => h("span", { class: "label-chip" },
        link("/devices?" + l.filter, l.name),
        h("button", { type: "button", "aria-label": `Delete saved search ${l.name}`, onclick: async () => { try { await del(`/api/v1/device-labels/${l.id}`); loadLabels(); } catch (e) { mount(notice, errorBox(e)); } } }, "×"))) : h("span", { class: "muted" }, "none yet"));
    } catch (e) {
      mount(labelsSlot, errorBox(e, loadLabels));
    }
  }

  function saveLabel() {
    const name = h("input", { name: "label_name", maxlength: 64, required: true });
    const save = h("button", { class: "primary", type: "submit" }, "Save search");
    const errors = h("div");
    const f = h("form", { class: "row", id: "label-form" }, field("Name of this saved search", name), save, h("button", { type: "button", onclick: () => notice.replaceChildren() }, "Cancel"), errors);
    f.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(save, errors, async () => {
        await post("/api/v1/device-labels", { name: name.value.trim(), filter: qs(filters).slice(1) });
        mount(notice, okBox(`Saved as “${name.value.trim()}”.`));
        loadLabels();
      });
    });
    mount(notice, f);
    name.focus();
  }

  function chooseColumns() {
    const boxes = Object.entries(COLUMNS).map(([k, [label]]) => checkbox(k, label, columns.includes(k)));
    const errors = h("div");
    const save = h("button", { class: "primary", type: "submit" }, "Save columns");
    const f = h("form", { method: "dialog" }, h("h2", { id: "columns-title" }, "Columns to show"), h("div", { class: "columns" }, boxes), errors,
      h("div", { class: "actions" }, save, h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")));
    f.addEventListener("submit", (e) => {
      e.preventDefault();
      const chosen = Object.keys(COLUMNS).filter((k) => f.elements[k].checked);
      busy(save, errors, async () => {
        const answer = await put("/api/v1/account/device-columns", { columns: chosen });
        columns = answer.columns;
        dialog.close();
        loadPage();
      });
    });
    mount(dialog, f);
    dialog.showModal();
  }

  async function loadPage() {
    mount(listSlot, loading("Loading devices…"));
    const cursor = cursors[cursors.length - 1];
    try {
      const page = await get("/api/v1/devices", { ...filters, cursor, limit: PAGE });
      total = page.total;
      const pick = (d) => {
        const box = h("input", { type: "checkbox", class: "row-select", "data-device": d.id, "aria-label": `Select device ${d.mac || d.id}`, checked: selected.has(d.id) });
        box.addEventListener("change", () => { if (box.checked) selected.add(d.id); else selected.delete(d.id); });
        return box;
      };
      const cols = [{ label: h("span", { class: "sr-only" }, "Select"), cell: pick }, ...columns.filter((c) => COLUMNS[c]).map((c) => ({ label: COLUMNS[c][0], cell: COLUMNS[c][1] }))];
      const n = cursors.length - 1;
      const prev = h("button", { type: "button", id: "prev-page", disabled: n === 0, onclick: () => { cursors.pop(); loadPage(); } }, "Previous");
      const next = h("button", { type: "button", id: "next-page", disabled: !page.next_cursor, onclick: () => { cursors.push(page.next_cursor); loadPage(); } }, "Next");
      const any = Object.keys(filters).some((k) => k !== "sort" && k !== "order");
      mount(
        listSlot,
        h("p", { class: "muted", id: "device-total", role: "status" }, `${page.total.toLocaleString()} device${page.total === 1 ? "" : "s"}${any ? " match the filters" : ""}`),
        table(cols, page.items, any ? "No device matches these filters." : "No devices yet.", "Devices"),
        h("div", { class: "pager" }, prev, h("span", { class: "muted" }, `Page ${n + 1}`), next),
      );
    } catch (e) {
      mount(listSlot, errorBox(e, loadPage));
    }
  }

  (async () => {
    try {
      columns = (await get("/api/v1/account/device-columns")).columns;
    } catch (_) {
      /* the default columns */
    }
    loadPage();
  })();
  loadLabels();
}

export function renderDetail(main, ctx) {
  const id = ctx.id;
  mount(main, h("h1", {}, `Device #${id}`), loading());
  const tabs = ["Status", "Resources", "Alarms", "Commands & diagnostics", "Manage", "Groups", "Configuration"];

  async function load() {
    let d;
    try {
      d = await get(`/api/v1/devices/${id}`);
    } catch (e) {
      return mount(main, h("h1", {}, `Device #${id}`), e.status === 404 ? h("p", {}, "No such device (or it is outside your scope). ", link("/devices", "Back to devices")) : errorBox(e, load));
    }
    const panels = {};
    const tablist = h("div", { class: "tabs", role: "tablist", "aria-label": "Device sections" });
    const buttons = tabs.map((t, i) => {
      const b = h("button", { type: "button", role: "tab", id: "tab-" + i, "aria-controls": "panel-" + i, "aria-selected": String(i === 0), tabindex: i === 0 ? "0" : "-1", onclick: () => show(i) }, t);
      b.addEventListener("keydown", (e) => {
        if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
          const j = (i + (e.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length;
          show(j);
          buttons[j].focus();
        }
      });
      return b;
    });
    tablist.append(...buttons);
    tabs.forEach((t, i) => (panels[i] = h("section", { role: "tabpanel", id: "panel-" + i, "aria-labelledby": "tab-" + i, hidden: i !== 0, class: "panel" })));
    const loaded = new Set();
    function show(i) {
      buttons.forEach((b, j) => { b.setAttribute("aria-selected", String(i === j)); b.tabIndex = i === j ? 0 : -1; panels[j].hidden = i !== j; });
      if (loaded.has(i)) return;
      loaded.add(i);
      [statusPanel, resourcesPanel, alarmsPanel, commandsPanel, managePanel, groupsPanel, configurationPanel][i](panels[i], d);
    }
    mount(main, h("h1", {}, d.name || d.mac || `Device #${id}`), h("p", {}, link("/devices", "← Devices")), tablist, Object.values(panels));
    show(0);
  }
  load();
}

function statusPanel(panel, d) {
  const st = d.status;
  const upgradeSlot = h("div", { id: "device-firmware" });
  deviceUpgrade(upgradeSlot, d);
  mount(panel,
    h("dl", { class: "kv", id: "device-status" },
      h("dt", {}, "Status"), h("dd", {}, st.online ? badge("on", "online") : badge("off", "offline")),
      h("dt", {}, "MAC"), h("dd", {}, d.mac || "—"), h("dt", {}, "Serial"), h("dd", {}, d.serial || "—"),
      h("dt", {}, "Model"), h("dd", {}, d.model), h("dt", {}, "Firmware"), h("dd", {}, d.firmware),
      h("dt", {}, "Enterprise"), h("dd", {}, `${d.enterprise_name} (#${d.enterprise_id})`),
      h("dt", {}, "Public IP"), h("dd", {}, d.public_ip || "—"), h("dt", {}, "Private IP"), h("dd", {}, d.private_ip || "—"),
      h("dt", {}, "Site"), h("dd", { id: "device-site" }, d.site ? link(`/sites/${d.site.id}`, d.site.name) : "—"),
      h("dt", {}, "SIP"), h("dd", {}, badge(st.sip_status, st.sip_status)),
      h("dt", {}, "Call"), h("dd", {}, st.call_status ? String(st.call_status).replace(/_/g, " ") : "—"),
      h("dt", {}, "Uptime"), h("dd", {}, fmtDuration(st.uptime_s)),
      h("dt", {}, "Last reboot"), h("dd", {}, fmtTime(st.last_reboot)),
      h("dt", {}, "Last report"), h("dd", {}, fmtTime(st.last_report_at)),
      h("dt", {}, "Licence"), h("dd", {}, st.licence_status),
      h("dt", {}, "Added"), h("dd", {}, fmtTime(d.created_at))),
    h("h2", {}, "Firmware upgrade"),
    upgradeSlot,
    h("h2", {}, "SIP lines"),
    table([{ label: "Line", cell: (l) => l.line }, { label: "Account", cell: (l) => l.account || "—" }, { label: "State", cell: (l) => badge(String(l.state).toLowerCase(), String(l.state).replace(/_/g, " ")) }],
      st.sip_registration || [], "The device has not reported SIP lines.", "SIP lines"));
}

async function resourcesPanel(panel, d) {
  mount(panel, loading());
  const to = Date.now(), from = to - 24 * 3600e3;
  try {
    const { items } = await get(`/api/v1/devices/${d.id}/resources`, { from, to, limit: 1000 });
    if (!items.length) return mount(panel, emptyState("No CPU or memory samples in the last 24 hours."));
    const cpu = items.map((p) => ({ at: p.at, value: p.cpu_centi_pct / 100 }));
    const mem = items.map((p) => ({ at: p.at, value: p.mem_total_bytes ? (p.mem_used_bytes / p.mem_total_bytes) * 100 : 0 }));
    mount(panel, h("h2", {}, "CPU, last 24 hours"), percentLine(cpu, from, to, "CPU use, percent", "cpu"),
      h("h2", {}, "Memory, last 24 hours"), percentLine(mem, from, to, "Memory in use, percent", "mem"),
      h("p", { class: "muted" }, `${items.length} samples; latest ${fmtTime(items[0].at)}.`));
  } catch (e) {
    mount(panel, errorBox(e, () => resourcesPanel(panel, d)));
  }
}

async function alarmsPanel(panel, d) {
  mount(panel, loading());
  try {
    const { items } = await get("/api/v1/alarms", { device_id: d.id, limit: 100 });
    mount(panel, table([
      { label: "Alarm", cell: (a) => link(`/alarms/${a.id}`, a.name) },
      { label: "Severity", cell: (a) => badge(a.severity) },
      { label: "Status", cell: (a) => badge(a.status) },
      { label: "Latest", cell: (a) => fmtTime(a.latest_at) },
      { label: "Count", cell: (a) => a.count },
    ], items, "This device has raised no alarms.", "Alarms of the device"));
  } catch (e) {
    mount(panel, e.status === 403 ? h("p", { class: "muted" }, "This account may not see alarms.") : errorBox(e, () => alarmsPanel(panel, d)));
  }
}
