// Sub-accounts (TEN-5): the caller's sub-accounts with their permissions (the features they may
// use, whose data they see), creating one, editing it (contact name, permissions), deleting it
// (a confirmation in place), freezing and unfreezing it. Only full accounts acting for no one
// have sub-accounts; the API refuses the others (403).

import { del, get, post, put } from "./api.js";
import { badge, busy, errorBox, field, h, loading, mount, okBox, select, table } from "./ui.js";

/** The features a sub-account may be given (the API's `Feature`), with their labels. */
const FEATURES = [
  ["devices", "Devices"],
  ["alarms", "Alarms"],
  ["strategies", "Alarm strategies"],
  ["enterprises", "Enterprises"],
  ["channels", "Channels"],
  ["accounts", "Accounts"],
  ["operation_log", "Operation log"],
  ["orders", "Orders and statements"],
];

/** Ids typed as "3, 7 12" → [3, 7, 12]; anything else is refused with its text. */
function ids(text, what) {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  return parts.map((p) => {
    if (!/^\d+$/.test(p)) throw new Error(`${what}: “${p}” is not an id.`);
    return Number(p);
  });
}

function dataText(data) {
  if (!data || data === "all") return "Everything its parent sees";
  const only = data.only || {};
  const parts = [];
  if ((only.channels || []).length) parts.push("channels " + only.channels.map((c) => "#" + c).join(", "));
  if ((only.enterprises || []).length) parts.push("enterprises " + only.enterprises.map((e) => "#" + e).join(", "));
  return parts.length ? "Only " + parts.join("; ") : "Nothing";
}

/** The permission controls, filled from `current`; `read()` answers the API's permissions. */
function permissionsFields(current, prefix) {
  const features = (current && current.features) || ["devices"];
  const boxes = FEATURES.map(([value, label]) => {
    const input = h("input", { type: "checkbox", name: "feature", value, checked: features.includes(value), id: `${prefix}-feature-${value}` });
    return h("label", { class: "check", for: input.id }, input, label);
  });
  const data = current && current.data;
  const only = data && data !== "all" ? data.only || {} : null;
  const scope = select("data", [["all", "Everything you see"], ["only", "Only the channels and enterprises below"]], only ? "only" : "all");
  const channels = h("input", { name: "channels", value: only ? (only.channels || []).join(", ") : "", placeholder: "e.g. 3, 7" });
  const enterprises = h("input", { name: "enterprises", value: only ? (only.enterprises || []).join(", ") : "", placeholder: "e.g. 12" });
  const node = h("div", {},
    h("fieldset", { class: "days" }, h("legend", {}, "Features it may use"), boxes),
    h("div", { class: "row" }, field("Data it sees", scope), field("Channel ids (with their sub-channels)", channels), field("Enterprise ids", enterprises)));
  function read() {
    const chosen = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
    const d = scope.value === "all" ? "all" : { only: { channels: ids(channels.value, "Channel ids"), enterprises: ids(enterprises.value, "Enterprise ids") } };
    return { features: chosen, data: d };
  }
  return { node, read };
}

export function render(main, ctx) {
  const s = ctx.session;
  if (s.features || s.acting) {
    mount(main, h("h1", {}, "Sub-accounts"), h("p", {}, s.acting ? "Sign out of the acting session to manage your sub-accounts." : "A sub-account has no sub-accounts of its own."));
    return;
  }
  const notice = h("div", { id: "sub-notice" });
  const editSlot = h("div", { id: "sub-edit" });
  const list = h("div", { id: "sub-account-list" }, loading());
  const afters = [0];

  async function load() {
    mount(list, loading());
    try {
      const page = await get("/api/v1/sub-accounts", { after: afters[afters.length - 1] || undefined, limit: 50 });
      const n = afters.length - 1;
      mount(list,
        table([
          { label: "Email", cell: (a) => a.email },
          { label: "Features", cell: (a) => ((a.permissions && a.permissions.features) || []).map((f) => f.replace(/_/g, " ")).join(", ") || "none", wrap: true },
          { label: "Data", cell: (a) => dataText(a.permissions && a.permissions.data), wrap: true },
          { label: "State", cell: (a) => (a.frozen ? badge("frozen") : badge("enabled", "active")) },
          { label: "", cell: (a) => h("span", { class: "actions inline" }, editButton(a), freezeButton(a), deleteButton(a)) },
        ], page.items, "No sub-accounts yet: create one below.", "Sub-accounts"),
        h("div", { class: "pager" },
          h("button", { type: "button", disabled: n === 0, onclick: () => { afters.pop(); load(); } }, "Previous"),
          h("span", { class: "muted" }, `Page ${n + 1}`),
          h("button", { type: "button", disabled: !page.next_after, onclick: () => { afters.push(page.next_after); load(); } }, "Next")));
    } catch (e) {
      mount(list, errorBox(e, load));
    }
  }

  function freezeButton(a) {
    const b = h("button", { type: "button", "data-account": a.id, class: a.frozen ? null : "danger" }, a.frozen ? "Unfreeze" : "Freeze");
    b.addEventListener("click", () => busy(b, notice, async () => {
      const changed = await post(`/api/v1/sub-accounts/${a.id}/${a.frozen ? "unfreeze" : "freeze"}`);
      mount(notice, okBox(`${changed.email} is ${changed.frozen ? "frozen: it cannot sign in, its sessions ended" : "active again"}.`));
      load();
    }));
    return b;
  }

  function deleteButton(a) {
    const b = h("button", { type: "button", class: "danger", "data-delete": a.id }, "Delete");
    b.addEventListener("click", () => {
      const yes = h("button", { type: "button", class: "danger", id: "confirm-delete" }, `Delete ${a.email}`);
      yes.addEventListener("click", () => busy(yes, notice, async () => {
        await del(`/api/v1/sub-accounts/${a.id}`);
        editSlot.replaceChildren();
        mount(notice, okBox(`${a.email} is deleted: its sessions ended and it cannot sign in.`));
        load();
      }));
      mount(editSlot, h("div", { class: "panel", id: "delete-sub-account" },
        h("p", {}, `Delete ${a.email}? Its sessions end at once and it can no longer sign in; what it did stays in the operation log.`),
        h("div", { class: "actions" }, yes, h("button", { type: "button", onclick: () => editSlot.replaceChildren() }, "Cancel"))));
      yes.focus();
    });
    return b;
  }

  function editButton(a) {
    const b = h("button", { type: "button", "data-edit": a.id }, "Edit");
    b.addEventListener("click", () => busy(b, notice, async () => {
      const current = await get(`/api/v1/sub-accounts/${a.id}`);
      const fields = permissionsFields(current.permissions, "edit");
      const name = h("input", { name: "contact_name", value: current.contact_name || "", autocomplete: "off" });
      const errors = h("div");
      const save = h("button", { class: "primary", type: "submit" }, "Save sub-account");
      const form = h("form", { class: "panel", id: "edit-permissions", novalidate: true }, h("h2", {}, `Edit ${a.email}`),
        h("div", { class: "row" }, field("Contact name", name)), fields.node, errors,
        h("div", { class: "actions" }, save, h("button", { type: "button", onclick: () => editSlot.replaceChildren() }, "Cancel")));
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        busy(save, errors, async () => {
          const changed = await put(`/api/v1/sub-accounts/${a.id}`, { contact_name: name.value.trim(), ...fields.read() });
          editSlot.replaceChildren();
          mount(notice, okBox(`${changed.email} saved; its permissions apply from its next request.`));
          load();
        });
      });
      mount(editSlot, form);
      name.focus();
    }));
    return b;
  }

  const email = h("input", { name: "email", type: "email", autocomplete: "off" });
  const password = h("input", { name: "password", type: "password", autocomplete: "new-password" });
  const fields = permissionsFields(null, "new");
  const errors = h("div");
  const create = h("button", { class: "primary", type: "submit" }, "Create sub-account");
  const form = h("form", { class: "panel", id: "create-sub-account", novalidate: true }, h("h2", {}, "New sub-account"),
    h("p", { class: "muted" }, "It has your role and tenant, only the features and data you give it, and changes its password at its first sign-in."),
    h("div", { class: "row" }, field("Email", email), field("First password (empty: generated and emailed)", password)), fields.node, errors,
    h("div", { class: "actions" }, create));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(create, errors, async () => {
      const body = { email: email.value.trim(), ...fields.read() };
      if (password.value) body.password = password.value;
      const made = await post("/api/v1/sub-accounts", body);
      mount(notice, okBox(`Sub-account ${made.email} created (#${made.id}).`));
      form.reset();
      load();
    });
  });

  mount(main, h("h1", {}, "Sub-accounts"), notice, list, editSlot, form);
  load();
}
