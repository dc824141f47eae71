// Orders and statements (ORD-1, ORD-2): the order list with its search and filters (status,
// enterprise, order id, placed / expiring between), keyset paging (newest first), the CSV export
// of the search, *Cancel* on a pending order (the API's 409 once effective shows in place), a
// form to place an order (channels and the platform; an enterprise account only reads), and the
// statement of a period with the totals of every matching order and its CSV export.

import { download, get, post, qs } from "./api.js";
import { badge, busy, errorBox, field, fmtTime, formValues, h, loading, mount, okBox, select, table } from "./ui.js";

const FILTERS = ["q", "status", "enterprise_id", "order_id", "created_from", "created_to", "expires_from", "expires_to"];
const STATUSES = [["", "Any status"], ["pending", "Pending"], ["active", "Active"], ["expired", "Expired"], ["cancelled", "Cancelled"]];
const BADGE = { pending: "pending", active: "on", expired: "off", cancelled: "off" };

/** A `datetime-local` input holding `ms` in the browser's zone. */
function localInput(name, ms) {
  const v = ms ? new Date(Number(ms) - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16) : "";
  return h("input", { type: "datetime-local", name, value: v });
}

/** Money in minor units, shown with two decimals. */
function amount(minor) {
  return (Number(minor) / 100).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

function orderColumns(ctx, onCancel) {
  return [
    { label: "Order", cell: (o) => `#${o.id}` },
    { label: "Placed", cell: (o) => fmtTime(o.created_at) },
    { label: "Enterprise", cell: (o) => o.enterprise_name, wrap: true },
    { label: "Package", cell: (o) => o.package, wrap: true },
    { label: "Devices", cell: (o) => String(o.max_devices) },
    { label: "Months", cell: (o) => String(o.duration_months) },
    { label: "Effective", cell: (o) => o.effective_date },
    { label: "Expires", cell: (o) => fmtTime(o.ends_at) },
    { label: "Amount", cell: (o) => amount(o.amount) },
    { label: "Status", cell: (o) => badge(BADGE[o.status] || "off", o.status) },
    {
      label: "Actions",
      cell: (o) => (onCancel && o.status === "pending"
        ? h("button", { type: "button", class: "cancel-order", "data-order": String(o.id), onclick: (e) => onCancel(o, e.target) }, "Cancel")
        : "—"),
    },
  ];
}

function placeForm(ctx, onPlaced) {
  const notice = h("div", { id: "order-notice" });
  const form = h("form", { class: "panel", id: "order-form", novalidate: true },
    h("h2", {}, "Place an order"),
    h("div", { class: "row" },
      field("Enterprise id", h("input", { name: "enterprise_id", type: "number", required: true })),
      field("Package", h("input", { name: "package", value: "Standard", required: true })),
      field("Maximum devices", h("input", { name: "max_devices", type: "number", min: "1", required: true })),
      field("Months", h("input", { name: "duration_months", type: "number", min: "1", value: "12", required: true })),
      field("Effective date", h("input", { name: "effective_date", type: "date", required: true }), "In the enterprise's time zone; today or later."),
      field("Amount (cents)", h("input", { name: "amount", type: "number", min: "0", value: "0" }))),
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Place order")),
    notice);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const button = form.querySelector("button[type=submit]");
    busy(button, notice, async () => {
      const v = formValues(form);
      const body = {
        enterprise_id: Number(v.enterprise_id),
        package: v.package || "",
        max_devices: Number(v.max_devices),
        duration_months: Number(v.duration_months),
        effective_date: v.effective_date || "",
        amount: Number(v.amount || 0),
      };
      const order = await post("/api/v1/orders", body);
      mount(notice, okBox(`Order #${order.id} placed (${order.status}); the enterprise and its channel are emailed.`));
      onPlaced();
    });
  });
  return form;
}

export function renderOrders(main, ctx) {
  const filters = {};
  for (const k of FILTERS) if (ctx.query.get(k)) filters[k] = ctx.query.get(k);
  const afters = [0];
  const slot = h("div", { id: "orders-list" }, loading());
  const notice = h("div", { id: "orders-notice" });
  const exportButton = h("button", { type: "button", id: "export-orders" }, "Export CSV");
  const sells = !ctx.session.enterprise_id;
  const form = h("form", { class: "panel", id: "order-filters", role: "search" },
    h("div", { class: "row" },
      field("Search enterprise", h("input", { name: "q", value: filters.q || "", placeholder: "name, email or contact" })),
      field("Status", select("status", STATUSES, filters.status || "")),
      sells ? field("Enterprise id", h("input", { name: "enterprise_id", type: "number", value: filters.enterprise_id || "" })) : null,
      field("Order id", h("input", { name: "order_id", type: "number", value: filters.order_id || "" })),
      field("Placed from", localInput("created_from", filters.created_from)),
      field("Placed before", localInput("created_to", filters.created_to)),
      field("Expiring from", localInput("expires_from", filters.expires_from)),
      field("Expiring before", localInput("expires_to", filters.expires_to))),
    h("div", { class: "actions" },
      h("button", { class: "primary", type: "submit" }, "Search"),
      h("button", { type: "button", onclick: () => ctx.navigate("/orders") }, "Clear"),
      exportButton,
      h("a", { href: "/statements", "data-link": "" }, "Statements")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = formValues(form);
    for (const k of ["created_from", "created_to", "expires_from", "expires_to"]) if (v[k]) v[k] = String(new Date(v[k]).getTime());
    ctx.navigate("/orders" + qs(v));
  });
  exportButton.addEventListener("click", () => busy(exportButton, notice, async () => {
    const size = await download("/api/v1/orders/export" + qs(filters), "orders.csv");
    mount(notice, okBox(`Exported (${size.toLocaleString()} bytes).`));
  }));
  const cancel = (o, button) => busy(button, notice, async () => {
    await post(`/api/v1/orders/${o.id}/cancel`, {});
    mount(notice, okBox(`Order #${o.id} cancelled.`));
    load();
  });
  mount(main, h("h1", {}, "Orders"), sells ? placeForm(ctx, () => load()) : null, form, notice, slot);

  async function load() {
    mount(slot, loading());
    try {
      const page = await get("/api/v1/orders", { ...filters, after: afters[afters.length - 1] || undefined, limit: 50 });
      const n = afters.length - 1;
      mount(slot,
        table(orderColumns(ctx, sells ? cancel : null), page.items,
          Object.keys(filters).length ? "No order matches this search." : "No orders yet.", "Orders"),
        h("div", { class: "pager" },
          h("button", { type: "button", disabled: n === 0, onclick: () => { afters.pop(); load(); } }, "Newer"),
          h("span", { class: "muted" }, `Page ${n + 1}`),
          h("button", { type: "button", disabled: !page.next_after, onclick: () => { afters.push(page.next_after); load(); } }, "Older")));
    } catch (e) {
      mount(slot, e.status === 403 ? h("p", { class: "muted" }, "This account may not see orders.") : errorBox(e, load));
    }
  }
  load();
}

export function renderStatements(main, ctx) {
  const filters = {};
  for (const k of ["from", "to", "q", "order_id", "enterprise_id", "status"]) if (ctx.query.get(k)) filters[k] = ctx.query.get(k);
  const afters = [0];
  const slot = h("div", { id: "statement" }, loading());
  const notice = h("div");
  const exportButton = h("button", { type: "button", id: "export-statement" }, "Export CSV");
  const form = h("form", { class: "panel", id: "statement-filters", role: "search" },
    h("div", { class: "row" },
      field("Placed from", localInput("from", filters.from)),
      field("Placed before", localInput("to", filters.to)),
      field("Order id", h("input", { name: "order_id", type: "number", value: filters.order_id || "" })),
      field("Enterprise", h("input", { name: "q", value: filters.q || "", placeholder: "name" })),
      field("Status", select("status", STATUSES, filters.status || ""))),
    h("div", { class: "actions" },
      h("button", { class: "primary", type: "submit" }, "Show statement"),
      h("button", { type: "button", onclick: () => ctx.navigate("/statements") }, "Clear"),
      exportButton));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = formValues(form);
    for (const k of ["from", "to"]) if (v[k]) v[k] = String(new Date(v[k]).getTime());
    ctx.navigate("/statements" + qs(v));
  });
  exportButton.addEventListener("click", () => busy(exportButton, notice, async () => {
    const size = await download("/api/v1/statements/export" + qs(filters), "statement.csv");
    mount(notice, okBox(`Exported (${size.toLocaleString()} bytes).`));
  }));
  mount(main, h("h1", {}, "Statements"), form, notice, slot);

  async function load() {
    mount(slot, loading());
    try {
      const s = await get("/api/v1/statements", { ...filters, after: afters[afters.length - 1] || undefined, limit: 50 });
      const t = s.totals;
      const n = afters.length - 1;
      mount(slot,
        h("p", { class: "panel", id: "statement-totals", role: "status" },
          `Totals: ${t.orders} orders, ${t.devices} devices, ${t.device_months} device-months, amount ${amount(t.amount)}`),
        table(orderColumns(ctx, null).slice(0, -1), s.items, "No order in this statement.", "Statement"),
        h("div", { class: "pager" },
          h("button", { type: "button", disabled: n === 0, onclick: () => { afters.pop(); load(); } }, "Newer"),
          h("span", { class: "muted" }, `Page ${n + 1}`),
          h("button", { type: "button", disabled: !s.next_after, onclick: () => { afters.push(s.next_after); load(); } }, "Older")));
    } catch (e) {
      mount(slot, e.status === 403 ? h("p", { class: "muted" }, "This account may not see statements.") : errorBox(e, load));
    }
  }
  load();
}
