// DOM helpers of the console: an element builder (text always as text, never as HTML), time
// formatting in the account's time zone, and the pieces every page shares: error and empty
// states, tables, forms, busy buttons, announcements for screen readers.

let timeZone;
let formatter = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** Shows times in `tz` (an IANA name) from now on; the browser's zone when absent or unknown. */
export function setTimeZone(tz) {
  try {
    formatter = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium", timeZone: tz || undefined });
    timeZone = tz || Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (_) {
    formatter = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
    timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  }
}

export function zoneName() {
  return timeZone || Intl.DateTimeFormat().resolvedOptions().timeZone;
}

/** A unix-ms time as text in the account's zone ("—" when absent). */
export function fmtTime(ms) {
  if (ms === null || ms === undefined) return "—";
  return formatter.format(new Date(ms));
}

export function fmtShortTime(ms) {
  const f = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", timeZone: zoneName() });
  return f.format(new Date(ms));
}

export function fmtDuration(s) {
  if (s === null || s === undefined) return "—";
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min`;
}

/** Builds an element: h("a", {href, class, onclick}, "text", child, …). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
/** A labelled control: field("Email", input). The input gets an id the label points to. */
export function field(labelText, control, hint) {
  if (!control.id) control.id = "f" + ++uid;
  return h("div", { class: "field" }, h("label", { for: control.id }, labelText), control, hint ? h("div", { class: "muted" }, hint) : null);
}

export function select(name, options, value) {
  return h("select", { name }, options.map(([v, label]) => h("option", { value: v, selected: String(v) === String(value ?? "") }, label)));
}

export function checkbox(name, labelText, checked) {
  const input = h("input", { type: "checkbox", name, checked: !!checked, id: "f" + ++uid });
  return h("label", { class: "check", for: input.id }, input, labelText);
}

/** The error state: the API's message, and a retry button when given. */
export function errorBox(error, retry) {
  const text = error && error.message ? error.message : String(error);
  return h("div", { class: "alert error", role: "alert" }, text, retry ? [" ", h("button", { type: "button", onclick: retry }, "Try again")] : null);
}

export function okBox(text) {
  return h("div", { class: "alert ok", role: "status" }, text);
}

export function emptyState(text) {
  return h("div", { class: "empty" }, text);
}

export function loading(text = "Loading…") {
  return h("p", { class: "loading", role: "status" }, text);
}

export function badge(kind, text) {
  return h("span", { class: "badge " + kind }, text ?? kind);
}

/** Says `text` to screen readers. */
export function announce(text) {
  const live = document.getElementById("live");
  if (live) live.textContent = text;
}

/**
 * A table: columns [{key, label, cell: (row) => node|text}], rows, and the empty state's text.
 */
export function table(columns, rows, emptyText, caption) {
  if (!rows.length) return h("div", { class: "table-wrap" }, emptyState(emptyText));
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => h("td", { class: c.wrap ? "wrap" : null }, c.cell(r)))))),
    ),
  );
}

/** Runs `work` with `button` disabled and marked busy; the error, if any, goes to `errorSlot`. */
export async function busy(button, errorSlot, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  if (errorSlot) errorSlot.replaceChildren();
  try {
    return await work();
  } catch (e) {
    if (errorSlot) errorSlot.replaceChildren(errorBox(e));
    else throw e;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/** The values of a form's named controls (checkboxes as booleans, empty text left out). */
export function formValues(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    if (el.type === "checkbox") out[el.name] = el.checked;
    else if (el.value.trim() !== "") out[el.name] = el.value.trim();
  }
  return out;
}

/** A width class (w0…w100 by 5) for a share of a whole (CSP: no inline styles). */
export function widthClass(part, whole) {
  const pct = whole > 0 ? Math.round((part / whole) * 20) * 5 : 0;
  return "w" + Math.min(100, Math.max(0, pct));
}

/** Navigates inside the console (the app listens for this event). */
export function go(path) {
  window.dispatchEvent(new CustomEvent("fp:navigate", { detail: path }));
}

/** A link inside the console. */
export function link(path, ...children) {
  return h("a", { href: path, "data-link": "" }, ...children);
}
