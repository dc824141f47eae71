// Device groups (PRV-2): the list with member counts and a creation form, the default groups of
// an enterprise (ordered), a group's page (edit, delete, set to top priority, members with
// keyset paging and removal, devices added from a filtered device list), and the groups panel
// of a device's detail (its ordered list: add, remove, move up and down).

import { call, del, get, post, put, qs } from "./api.js";
import { badge, busy, emptyState, errorBox, field, formValues, h, link, loading, mount, okBox, select, table } from "./ui.js";

const PAGE = 50;

/** An ordered list editor: rows with up / down / remove, a select to add, and a save button. */
export function orderedEditor(slot, { id, current, choices, save, label, addLabel }) {
  let list = current.map((g) => ({ id: g.id, name: g.name }));
  const errors = h("div");
  function draw() {
    const move = (i, by) => { const [g] = list.splice(i, 1); list.splice(i + by, 0, g); draw(); };
    const rows = list.map((g, i) => h("li", { dataset: { group: g.id } },
      g.name, " ",
      h("button", { type: "button", class: "up", "aria-label": `Move ${g.name} up`, disabled: i === 0, onclick: () => move(i, -1) }, "↑"),
      h("button", { type: "button", class: "down", "aria-label": `Move ${g.name} down`, disabled: i === list.length - 1, onclick: () => move(i, 1) }, "↓"),
      h("button", { type: "button", class: "remove", "aria-label": `Remove ${g.name}`, onclick: () => { list.splice(i, 1); draw(); } }, "×")));
    const left = choices.filter((c) => !list.some((g) => g.id === c.id));
    const add = select("add_group", [["", addLabel || "Add a group…"], ...left.map((c) => [c.id, c.name])], "");
    add.addEventListener("change", () => {
      const c = left.find((g) => String(g.id) === add.value);
      if (c) { list.push({ id: c.id, name: c.name }); draw(); }
    });
    const saveButton = h("button", { class: "primary", type: "button", id: id + "-save" }, "Save order");
    saveButton.addEventListener("click", () => busy(saveButton, errors, async () => {
      const answer = await save(list.map((g) => g.id));
      list = answer.map((g) => ({ id: g.id, name: g.name }));
      draw();
      errors.replaceChildren(okBox("Saved."));
    }));
    mount(slot, h("div", { id },
      list.length ? h("ol", { class: "ordered", "aria-label": label }, rows) : emptyState("None."),
      h("div", { class: "row" }, field("Add", add), saveButton), errors));
  }
  draw();
}

/** Every group of an enterprise (at most 1,000: the API's bound). */
async function groupsOf(enterprise) {
  return (await get("/api/v1/groups", { enterprise_id: enterprise, limit: 1000 })).items;
}

export function renderList(main, ctx) {
  const enterprise = ctx.session.enterprise_id || ctx.query.get("enterprise_id") || "";
  const listSlot = h("div", { id: "group-list" }, loading());
  const defaultsSlot = h("div", { id: "default-groups" });
  const notice = h("div", { id: "group-notice" });
  const create = h("form", { class: "panel", id: "create-group" },
    h("div", { class: "row" },
      ctx.session.enterprise_id ? null : field("Enterprise id", h("input", { name: "enterprise_id", type: "number", value: enterprise, required: true })),
      field("Name", h("input", { name: "name", maxlength: 64, required: true }), "Letters, digits, spaces and # . - _ ( ) [ ]"),
      field("Description", h("input", { name: "description", maxlength: 256 }))),
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Create group")));
  create.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = formValues(create);
    if (v.enterprise_id) v.enterprise_id = Number(v.enterprise_id);
    busy(create.querySelector("button[type=submit]"), notice, async () => {
      const g = await post("/api/v1/groups", v);
      mount(notice, okBox(`Created “${g.name}”.`));
      create.reset();
      load();
    });
  });
  const picker = h("form", { class: "row", id: "group-enterprise", role: "search" },
    ctx.session.enterprise_id ? null : field("Enterprise id", h("input", { name: "enterprise_id", type: "number", value: enterprise })),
    ctx.session.enterprise_id ? null : h("button", { type: "submit" }, "Show"));
  picker.addEventListener("submit", (e) => { e.preventDefault(); ctx.navigate("/groups" + qs(formValues(picker))); });
  mount(main, h("h1", {}, "Device groups"), picker, listSlot, h("h2", {}, "New group"), create, notice,
    h("h2", {}, "Default groups"), h("p", { class: "muted" }, "Devices that add themselves on first connect join these groups, in this order (imported and hand-added devices do not)."), defaultsSlot);

  async function load() {
    mount(listSlot, loading("Loading groups…"));
    try {
      const { items } = await get("/api/v1/groups", { enterprise_id: enterprise || undefined, limit: 1000 });
      mount(listSlot, table([
        { label: "Name", cell: (g) => link(`/groups/${g.id}`, g.name) },
        { label: "Description", cell: (g) => g.description || "—", wrap: true },
        { label: "Members", cell: (g) => link(`/devices?group=${g.id}`, g.members.toLocaleString()) },
        { label: "Enterprise", cell: (g) => `#${g.enterprise_id}` },
        { label: "Default", cell: (g) => (g.default ? badge("on", "default") : "—") },
      ], items, "No groups yet.", "Device groups"));
    } catch (e) {
      mount(listSlot, errorBox(e, load));
    }
    if (!enterprise) return mount(defaultsSlot, h("p", { class: "muted" }, "Choose an enterprise to set its default groups."));
    try {
      const [defaults, choices] = await Promise.all([get("/api/v1/default-groups", { enterprise_id: enterprise }), groupsOf(enterprise)]);
      orderedEditor(defaultsSlot, {
        id: "defaults-editor",
        current: defaults.groups,
        choices,
        label: "Default groups, top priority first",
        save: async (ids) => (await put("/api/v1/default-groups" + qs({ enterprise_id: enterprise }), { group_ids: ids })).groups,
      });
    } catch (e) {
      mount(defaultsSlot, errorBox(e, load));
    }
  }
  load();
}

export function renderDetail(main, ctx) {
  const id = ctx.id;
  mount(main, h("h1", {}, `Group #${id}`), loading());
  const notice = h("div", { id: "group-notice" });
  const membersSlot = h("div", { id: "group-members" });
  const addSlot = h("div", { id: "add-devices" });
  const cursors = [null];
  const selected = new Set();
  let group;

  async function load() {
    try {
      group = await get(`/api/v1/groups/${id}`);
    } catch (e) {
      return mount(main, h("h1", {}, `Group #${id}`), e.status === 404 ? h("p", {}, "No such group (or it is outside your scope). ", link("/groups", "Back to groups")) : errorBox(e, load));
    }
    const edit = h("form", { class: "panel", id: "edit-group" },
      h("div", { class: "row" },
        field("Name", h("input", { name: "name", value: group.name, maxlength: 64, required: true })),
        field("Description", h("input", { name: "description", value: group.description, maxlength: 256 }))),
      h("div", { class: "actions" },
        h("button", { class: "primary", type: "submit" }, "Save"),
        h("button", { type: "button", id: "top-priority", onclick: topPriority }, "Set to top priority"),
        h("button", { type: "button", id: "delete-group", class: "danger", onclick: remove }, "Delete group")));
    edit.addEventListener("submit", (e) => {
      e.preventDefault();
      const v = formValues(edit);
      busy(edit.querySelector("button[type=submit]"), notice, async () => {
        group = await saveGroup(v);
        mount(notice, okBox("Saved."));
        main.querySelector("h1").textContent = group.name;
      });
    });
    mount(main, h("h1", {}, group.name), h("p", {}, link(`/groups?enterprise_id=${group.enterprise_id}`, "← Device groups"), ` · enterprise #${group.enterprise_id}`),
      edit, notice, h("h2", {}, "Members"), membersSlot, h("h2", {}, "Add devices"), addSlot);
    loadMembers();
    addPanel();
  }

  function saveGroup(v) {
    return call("PATCH", `/api/v1/groups/${id}`, { name: v.name, description: v.description || "" });
  }

  async function topPriority(e) {
    await busy(e.target, notice, async () => {
      group = (await post(`/api/v1/groups/${id}/top-priority`)).group;
      mount(notice, okBox(`“${group.name}” is now the top-priority group of its ${group.members} member(s).`));
      cursors.splice(1);
      loadMembers();
    });
  }

  async function remove(e) {
    if (!window.confirm(`Delete the group “${group.name}”? Its devices leave it; the devices themselves stay.`)) return;
    await busy(e.target, notice, async () => {
      const gone = await del(`/api/v1/groups/${id}`);
      ctx.navigate(`/groups?enterprise_id=${group.enterprise_id}`);
      window.setTimeout(() => {
        const n = document.getElementById("group-notice");
        if (n) n.replaceChildren(okBox(`Deleted “${gone.group.name}”: ${gone.memberships_removed} device(s) left it${gone.was_default ? "; it is no longer a default group" : ""}.`));
      }, 0);
    });
  }

  async function loadMembers() {
    mount(membersSlot, loading("Loading members…"));
    try {
      const page = await get(`/api/v1/groups/${id}/members`, { cursor: cursors[cursors.length - 1], limit: PAGE });
      const pick = (d) => {
        const box = h("input", { type: "checkbox", class: "member-select", "data-device": d.id, "aria-label": `Select device ${d.mac || d.id}`, checked: selected.has(d.id) });
        box.addEventListener("change", () => { if (box.checked) selected.add(d.id); else selected.delete(d.id); });
        return box;
      };
      const n = cursors.length - 1;
      const errors = h("div");
      const removeButton = h("button", { type: "button", id: "remove-members" }, "Remove selected");
      removeButton.addEventListener("click", () => busy(removeButton, errors, async () => {
        if (!selected.size) throw new Error("Select the devices to remove first.");
        const r = await post(`/api/v1/groups/${id}/members/remove`, { device_ids: [...selected] });
        selected.clear();
        mount(notice, okBox(`${r.changed} device(s) left the group.`));
        cursors.splice(1);
        loadMembers();
      }));
      mount(membersSlot,
        h("p", { class: "muted", id: "member-total", role: "status" }, `${page.total.toLocaleString()} member${page.total === 1 ? "" : "s"}`),
        table([
          { label: h("span", { class: "sr-only" }, "Select"), cell: pick },
          { label: "MAC", cell: (d) => link(`/devices/${d.id}`, d.mac || `#${d.id}`) },
          { label: "Name", cell: (d) => d.name || "—" },
          { label: "Model", cell: (d) => d.model },
          { label: "Status", cell: (d) => (d.online ? badge("on", "online") : badge("off", "offline")) },
          { label: "Groups (priority order)", cell: (d) => d.groups.map((g) => g.name).join(" › "), wrap: true },
        ], page.items, "No devices in this group yet.", "Members"),
        h("div", { class: "pager" },
          h("button", { type: "button", disabled: n === 0, onclick: () => { cursors.pop(); loadMembers(); } }, "Previous"),
          h("span", { class: "muted" }, `Page ${n + 1}`),
          h("button", { type: "button", disabled: !page.next_cursor, onclick: () => { cursors.push(page.next_cursor); loadMembers(); } }, "Next")),
        h("div", { class: "actions" }, removeButton), errors);
    } catch (e) {
      mount(membersSlot, errorBox(e, loadMembers));
    }
  }

  function addPanel() {
    const found = h("div", { id: "candidates" });
    const errors = h("div");
    const picked = new Set();
    let filter = {};
    let total = 0;
    const form = h("form", { class: "panel", id: "candidate-filters", role: "search" },
      h("div", { class: "row" },
        field("Search (MAC, name, model, IP)", h("input", { name: "q", type: "search" })),
        field("Model", h("input", { name: "model" })),
        field("Status", select("online", [["", "Any"], ["true", "Online"], ["false", "Offline"]], ""))),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Find devices")));
    form.addEventListener("submit", (e) => { e.preventDefault(); filter = formValues(form); find(); });
    const addPicked = h("button", { type: "button", id: "add-selected" }, "Add selected");
    const addAll = h("button", { type: "button", class: "primary", id: "add-matching" }, "Add all matching");
    const done = (r) => {
      mount(notice, okBox(`${r.changed} device(s) joined${r.unchanged ? `, ${r.unchanged} were members already` : ""}${r.at_limit ? `, ${r.at_limit} are in 32 groups already` : ""}.`));
      cursors.splice(1);
      loadMembers();
      find();
    };
    addPicked.addEventListener("click", () => busy(addPicked, errors, async () => {
      if (!picked.size) throw new Error("Tick the devices to add first.");
      done(await post(`/api/v1/groups/${id}/members`, { device_ids: [...picked] }));
      picked.clear();
    }));
    addAll.addEventListener("click", () => busy(addAll, errors, async () => {
      done(await post(`/api/v1/groups/${id}/members`, { filter: { ...filter, enterprise_id: group.enterprise_id } }));
    }));
    async function find() {
      mount(found, loading("Finding devices…"));
      try {
        const page = await get("/api/v1/devices", { ...filter, enterprise_id: group.enterprise_id, limit: PAGE });
        total = page.total;
        const pick = (d) => {
          const box = h("input", { type: "checkbox", class: "candidate-select", "data-device": d.id, "aria-label": `Select device ${d.mac || d.id}`, checked: picked.has(d.id) });
          box.addEventListener("change", () => { if (box.checked) picked.add(d.id); else picked.delete(d.id); });
          return box;
        };
        mount(found,
          h("p", { class: "muted", id: "candidate-total", role: "status" }, `${total.toLocaleString()} device${total === 1 ? "" : "s"} match${total === 1 ? "es" : ""}${total > PAGE ? ` (the first ${PAGE} shown)` : ""}`),
          table([
            { label: h("span", { class: "sr-only" }, "Select"), cell: pick },
            { label: "MAC", cell: (d) => d.mac || `#${d.id}` },
            { label: "Name", cell: (d) => d.name || "—" },
            { label: "Model", cell: (d) => d.model },
            { label: "In this group", cell: (d) => (d.groups.some((g) => g.id === group.id) ? "yes" : "—") },
          ], page.items, "No device matches.", "Devices to add"));
      } catch (e) {
        mount(found, errorBox(e, find));
      }
    }
    mount(addSlot, form, found, h("div", { class: "actions" }, addPicked, addAll), errors);
    find();
  }
  load();
}

/** The groups panel of a device's detail: its ordered list of groups, editable. */
export async function groupsPanel(panel, d) {
  mount(panel, loading());
  try {
    const choices = await groupsOf(d.enterprise_id);
    mount(panel, h("p", { class: "muted" }, "The first group has the top priority: its profiles win over those of the groups below."), h("div", { id: "device-groups-slot" }));
    orderedEditor(panel.querySelector("#device-groups-slot"), {
      id: "device-groups",
      current: d.groups,
      choices,
      label: "Groups of the device, top priority first",
      save: async (ids) => (await put(`/api/v1/devices/${d.id}/groups`, { group_ids: ids })).groups,
    });
  } catch (e) {
    mount(panel, errorBox(e, () => groupsPanel(panel, d)));
  }
}
