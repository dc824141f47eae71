// Configuration profiles (PRV-3, PRV-4): an enterprise's profiles (create, edit the parameters,
// copy, export as .cfg, delete), its deployments per container in priority order with the
// profiles of each in order, and a device's *Configuration* tab: the resultant configuration
// line by line (key, value, profile, container), its last provisioning and *Push now*.

import { call, del, download, get, post, put, qs } from "./api.js";
import { orderedEditor } from "./page-groups.js";
import { badge, busy, emptyState, errorBox, field, fmtTime, h, link, loading, mount, okBox, table } from "./ui.js";
import { enterpriseOf, enterprisePicker } from "./enterprise.js";

/** Containers, highest priority first, with what the console calls them. */
const CONTAINERS = [["device", "Device"], ["site", "Site"], ["model", "Model"], ["group", "Group"], ["global", "Global"]];

/** Parameters as the editor shows them: one `key=value` line each, by key. */
export function parametersText(parameters) {
  return Object.entries(parameters || {}).map(([k, v]) => `${k}=${v}`).join("\n");
}

/** The editor's text as the API takes it: `key=value` lines (the value may hold "="); blank
 * lines and `#` comments (an exported .cfg pasted back) are skipped. The API checks keys,
 * values and substitutions and names the bad one. */
export function parseParameters(text) {
  const out = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq < 0) throw new Error(`“${line}” is not key=value`);
    out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}

/** Firmware per model as `model=image id` lines. */
function firmwareText(firmware) {
  return Object.entries(firmware || {}).map(([m, id]) => `${m}=${id}`).join("\n");
}

function parseFirmware(text) {
  const out = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const eq = line.lastIndexOf("=");
    const id = Number(line.slice(eq + 1));
    if (eq < 1 || !Number.isInteger(id) || id <= 0) throw new Error(`“${line}” is not model=image id`);
    out[line.slice(0, eq).trim()] = id;
  }
  return out;
}

/** The form of a new or an existing profile. */
function profileForm(profile, onSave) {
  const errors = h("div", { id: "profile-errors" });
  const s = profile ? profile.settings : { name: "", description: "", parameters: {}, firmware: {} };
  const save = h("button", { class: "primary", type: "submit" }, profile ? "Save profile" : "Create profile");
  const form = h("form", { class: "panel", id: profile ? "edit-profile" : "create-profile", novalidate: true },
    h("h2", {}, profile ? `Edit “${s.name}”` : "New profile"),
    h("div", { class: "row" },
      field("Name", h("input", { name: "name", value: s.name, maxlength: 64, required: true })),
      field("Description", h("input", { name: "description", value: s.description }))),
    field("Parameters", h("textarea", { name: "parameters", rows: 8, placeholder: "call.autoAnswer.SIP=1\nphone.label=${name}" }, parametersText(s.parameters)),
      "One key=value per line. Substitutions: ${mac_address}, ${serial_number}, ${model}, ${name}, ${attr.KEY}."),
    profile ? field("Firmware per model", h("textarea", { name: "firmware", rows: 2, placeholder: "T54W=3" }, firmwareText(s.firmware)), "One model=firmware image id per line (see Firmware).") : null,
    errors,
    h("div", { class: "actions" }, save));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const f = form.elements;
    busy(save, errors, async () => {
      const body = {
        name: f.name.value.trim(),
        description: f.description.value,
        parameters: parseParameters(f.parameters.value),
        firmware: f.firmware ? parseFirmware(f.firmware.value) : {},
      };
      await onSave(body);
    });
  });
  return form;
}

/** What a deployment target is called, with the names the page knows. */
function targetLabel(t, names) {
  switch (t.container) {
    case "global": return "Every device";
    case "site": return names.sites.get(t.site_id) || `Site #${t.site_id}`;
    case "group": return names.groups.get(t.group_id) || `Group #${t.group_id}`;
    case "model": return t.model;
    case "device": return link(`/devices/${t.device_id}`, `Device #${t.device_id}`);
    default: return t.container;
  }
}

function flattenSites(nodes, out = []) {
  for (const n of nodes) {
    out.push(n);
    flattenSites(n.children || [], out);
  }
  return out;
}

/** The deployments per container and the editor of one target's ordered profiles. */
async function deploymentsPanel(slot, enterprise, profiles) {
  mount(slot, loading());
  try {
    const [deployments, tree, groups] = await Promise.all([
      get("/api/v1/profile-deployments", { enterprise_id: enterprise }),
      get("/api/v1/sites", { enterprise_id: enterprise }),
      get("/api/v1/groups", { enterprise_id: enterprise, limit: 1000 }),
    ]);
    const sites = flattenSites(tree.roots);
    const names = { sites: new Map(sites.map((s) => [s.id, s.name])), groups: new Map(groups.items.map((g) => [g.id, g.name])) };
    const profileName = new Map(profiles.map((p) => [p.id, p.settings.name]));
    const editorSlot = h("div", { id: "deployment-editor-slot" });
    const container = h("select", { name: "container", id: "deploy-container" }, CONTAINERS.map(([v, l]) => h("option", { value: v, selected: v === "global" }, l)));
    const memberSlot = h("div");
    let member = null;
    const target = () => {
      const c = container.value;
      if (c === "global") return { container: c };
      const v = member ? member.value.trim() : "";
      if (!v) return null;
      if (c === "model") return { container: c, model: v };
      return { container: c, [`${c}_id`]: Number(v) };
    };
    const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
    const openEditor = () => {
      const t = target();
      if (!t) return mount(editorSlot, emptyState("Choose what to deploy to."));
      const existing = deployments.items.find((d) => same(d.target, t));
      orderedEditor(editorSlot, {
        id: "deployment-editor",
        current: (existing ? existing.profiles : []).map((id) => ({ id, name: profileName.get(id) || `#${id}` })),
        choices: profiles.map((p) => ({ id: p.id, name: p.settings.name })),
        label: "Profiles of this target, first wins",
        addLabel: "Add a profile…",
        save: async (ids) => {
          const answer = await put("/api/v1/profile-deployments", { enterprise_id: enterprise, target: t, profiles: ids });
          deploymentsPanel(slot, enterprise, profiles);
          return (answer.deployment ? answer.deployment.profiles : []).map((id) => ({ id, name: profileName.get(id) || `#${id}` }));
        },
      });
    };
    const drawMember = () => {
      const c = container.value;
      if (c === "site") member = h("select", { name: "site_id", id: "deploy-member" }, h("option", { value: "" }, "Choose a site"), sites.map((s) => h("option", { value: s.id }, s.name)));
      else if (c === "group") member = h("select", { name: "group_id", id: "deploy-member" }, h("option", { value: "" }, "Choose a group"), groups.items.map((g) => h("option", { value: g.id }, g.name)));
      else if (c === "model") member = h("input", { name: "model", id: "deploy-member", placeholder: "T54W" });
      else if (c === "device") member = h("input", { name: "device_id", id: "deploy-member", type: "number", placeholder: "Device id" });
      else member = null;
      if (member) member.addEventListener("change", openEditor);
      mount(memberSlot, member ? field(c === "model" ? "Model" : c === "device" ? "Device id" : c === "site" ? "Site" : "Group", member) : null);
      openEditor();
    };
    container.addEventListener("change", drawMember);
    const rows = CONTAINERS.flatMap(([c]) => deployments.items.filter((d) => d.target.container === c));
    mount(slot,
      h("p", { class: "muted" }, "A device gets each key from the first container that sets it: Device, then its site (nearest first), its model, its groups (top priority first), Global. Inside a container the first profile wins."),
      table([
        { label: "Container", cell: (d) => CONTAINERS.find(([c]) => c === d.target.container)[1] },
        { label: "Target", cell: (d) => targetLabel(d.target, names) },
        { label: "Profiles, in order", cell: (d) => h("ol", { class: "ordered" }, d.profiles.map((id) => h("li", {}, link(`/profiles/${id}`, profileName.get(id) || `#${id}`)))) },
        { label: "Changed", cell: (d) => fmtTime(d.updated_at) },
      ], rows, "Nothing is deployed yet.", "Deployments"),
      h("h3", {}, "Deploy"),
      h("div", { class: "row" }, field("Container", container), memberSlot),
      editorSlot);
    drawMember();
  } catch (e) {
    mount(slot, errorBox(e, () => deploymentsPanel(slot, enterprise, profiles)));
  }
}

export function renderList(main, ctx) {
  const enterprise = enterpriseOf(ctx);
  const slot = h("div", { id: "profile-list" });
  const notice = h("div", { id: "profile-notice" });
  const picker = h("div");
  mount(main, h("h1", {}, "Configuration profiles"), picker, notice, slot);
  if (!ctx.session.enterprise_id) enterprisePicker(ctx, enterprise, "/profiles", "profile-enterprise").then((p) => mount(picker, p));
  if (!enterprise) {
    mount(slot, h("p", { class: "muted" }, "Choose the enterprise whose profiles to manage."));
    return;
  }

  async function load() {
    mount(slot, loading());
    try {
      const { items } = await get("/api/v1/profiles", { enterprise_id: enterprise });
      const actions = (p) => {
        const copy = h("button", { type: "button", "aria-label": `Copy ${p.settings.name}`, dataset: { copy: p.id } }, "Copy");
        copy.addEventListener("click", () => {
          const name = prompt(`Name of the copy of “${p.settings.name}”`, `${p.settings.name} (copy)`);
          if (name) busy(copy, notice, async () => { await post(`/api/v1/profiles/${p.id}/copy`, { name }); mount(notice, okBox(`Copied to “${name}”.`)); load(); });
        });
        const exp = h("button", { type: "button", "aria-label": `Export ${p.settings.name}` }, "Export");
        exp.addEventListener("click", () => busy(exp, notice, () => download(`/api/v1/profiles/${p.id}/export`, `profile-${p.id}.cfg`)));
        const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete ${p.settings.name}`, dataset: { delete: p.id } }, "Delete");
        remove.addEventListener("click", () => {
          if (confirm(`Delete the profile “${p.settings.name}”?`)) {
            busy(remove, notice, async () => { await del(`/api/v1/profiles/${p.id}`); mount(notice, okBox(`Deleted “${p.settings.name}”.`)); load(); });
          }
        });
        return h("span", { class: "actions" }, copy, exp, remove);
      };
      const deploySlot = h("div", { id: "deployments" });
      mount(slot,
        table([
          { label: "Profile", cell: (p) => link(`/profiles/${p.id}`, p.settings.name) },
          { label: "Description", cell: (p) => p.settings.description || "—", wrap: true },
          { label: "Parameters", cell: (p) => String(Object.keys(p.settings.parameters).length) },
          { label: "Changed", cell: (p) => fmtTime(p.updated_at) },
          { label: "Actions", cell: actions },
        ], items, "No profiles yet.", "Profiles"),
        profileForm(null, async (body) => {
          const created = await post("/api/v1/profiles", { ...body, enterprise_id: enterprise });
          mount(notice, okBox(`Profile “${created.settings.name}” created.`));
          load();
        }),
        h("div", { class: "panel" }, h("h2", {}, "Deployments"), deploySlot));
      deploymentsPanel(deploySlot, enterprise, items);
    } catch (e) {
      mount(slot, errorBox(e, load));
    }
  }
  load();
}

export function renderDetail(main, ctx) {
  mount(main, h("h1", {}, "Profile"), loading());
  (async () => {
    try {
      const profile = await get(`/api/v1/profiles/${ctx.id}`);
      const notice = h("div", { id: "profile-notice" });
      const back = link(`/profiles?enterprise_id=${profile.enterprise_id}`, "← Profiles");
      mount(main, h("h1", {}, profile.settings.name), h("p", {}, back, " · ", `changed ${fmtTime(profile.updated_at)}`), notice,
        profileForm(profile, async (body) => {
          const saved = await put(`/api/v1/profiles/${profile.id}`, body);
          mount(notice, okBox(`Saved “${saved.settings.name}”; its devices get the changes.`));
        }));
    } catch (e) {
      mount(main, h("h1", {}, "Profile"), errorBox(e));
    }
  })();
}

/** The last provisioning as a line of text and a badge. */
function lastProvision(lp) {
  if (!lp) return h("p", { id: "last-provision", class: "muted" }, "Never provisioned.");
  const kind = { succeeded: "on", up_to_date: "on", pending: "info", failed: "error" }[lp.result] || "info";
  return h("p", { id: "last-provision" }, "Last provisioning: ", badge(kind, lp.result.replace(/_/g, " ")), " ", fmtTime(lp.at),
    lp.reason ? ` — ${lp.reason}` : "", lp.commands && lp.commands.length ? ` (${lp.commands.length} command(s) queued)` : "");
}

/** A device's *Configuration* tab. */
export async function configurationPanel(panel, d) {
  mount(panel, loading());
  try {
    const c = await get(`/api/v1/devices/${d.id}/configuration`);
    const sites = new Map(d.site ? [[d.site.id, d.site.name]] : []);
    const groups = new Map((d.groups || []).map((g) => [g.id, g.name]));
    const names = { sites, groups };
    const result = h("div", { id: "push-result" });
    const push = h("button", { type: "button", class: "primary", id: "push-now" }, "Push now");
    push.addEventListener("click", () => busy(push, result, async () => {
      // 202 (commands queued) and 200 (nothing to send) both carry the outcome.
      const o = await (await call("POST", `/api/v1/devices/${d.id}/provision`, {}, { raw: true })).json();
      await configurationPanel(panel, d);
      const text = o.commands.length
        ? `Queued ${o.commands.length} command(s): ${o.set} key(s) set, ${o.removed} removed.`
        : o.result === "pending" ? "A push is still pending; nothing more to send." : "Nothing changed: the device is up to date.";
      mount(panel.querySelector("#push-result"), okBox(text));
    }));
    mount(panel,
      lastProvision(c.last_provision),
      h("div", { class: "row" }, push),
      result,
      c.truncated ? h("p", { class: "alert error" }, "More keys apply than a device holds: the lowest-ranked were left out.") : null,
      c.firmware ? h("p", {}, `Firmware: image #${c.firmware.firmware_id} from “${c.firmware.origin.profile_name}”.`) : null,
      h("div", { id: "device-configuration" },
        table([
          { label: "Key", cell: (p) => h("code", {}, p.key) },
          { label: "Value", cell: (p) => (p.problem ? badge("error", p.problem) : p.value), wrap: true },
          { label: "Profile", cell: (p) => link(`/profiles/${p.origin.profile_id}`, p.origin.profile_name) },
          { label: "Container", cell: (p) => h("span", {}, CONTAINERS.find(([k]) => k === p.origin.container)[1], " · ", targetLabel(p.origin.target, names), p.origin.position > 1 ? ` (#${p.origin.position})` : "") },
        ], c.parameters, "No profile applies to this device.", "Resultant configuration")));
  } catch (e) {
    mount(panel, errorBox(e, () => configurationPanel(panel, d)));
  }
}
