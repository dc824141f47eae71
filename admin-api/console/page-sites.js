// Sites (PRV-1): an enterprise's site tree with device counts, a form to create or edit a site
// (subnets typed one public subnet per line), delete (the API's refusal shown as it comes), and
// the CSV import with its per-row errors.

import { call, del, get, post, qs, upload } from "./api.js";
import { badge, busy, errorBox, field, fmtTime, h, link, loading, mount, okBox, table } from "./ui.js";
import { enterpriseOf, enterprisePicker } from "./enterprise.js";

/** Subnets as the editor shows them: one public subnet per line, its private ones after ">". */
export function subnetsText(subnets) {
  return (subnets || []).map((s) => (s.private && s.private.length ? `${s.public} > ${s.private.join(", ")}` : s.public)).join("\n");
}

/** The editor's text as the API takes it (the API checks each network and names a bad one). */
export function parseSubnets(text) {
  return text.split("\n").map((l) => l.trim()).filter(Boolean).map((line) => {
    const [pub, priv] = line.split(">");
    return { public: pub.trim(), private: (priv || "").split(/[,\s]+/).map((p) => p.trim()).filter(Boolean) };
  });
}

/** The tree flattened in display order, each node with its depth. */
function flatten(nodes, depth = 0, out = []) {
  for (const n of nodes) {
    out.push({ ...n, depth });
    flatten(n.children, depth + 1, out);
  }
  return out;
}

function siteForm(enterprise, sites, site, onSaved) {
  const errors = h("div", { id: "site-errors" });
  const save = h("button", { class: "primary", type: "submit", id: "save-site" }, site ? "Save site" : "Create site");
  const parent = h("select", { name: "parent_id", id: "site-parent" }, h("option", { value: "" }, "None (a top-level site)"),
    sites.filter((s) => s.kind !== "internet" && (!site || s.id !== site.id)).map((s) => h("option", { value: s.id, selected: site && site.parent_id === s.id }, `${"  ".repeat(s.depth)}${s.name}`)));
  const fixed = site && site.kind === "internet";
  const form = h("form", { class: "panel", id: "site-form", novalidate: true },
    h("h2", {}, site ? `Edit “${site.name}”` : "New site"),
    fixed ? h("p", { class: "muted" }, "The Internet site cannot be changed: devices whose public address matches no site are in it.") : null,
    h("div", { class: "row" },
      field("Name", h("input", { name: "name", id: "site-name", value: site ? site.name : "", required: true, disabled: fixed })),
      field("Parent site", parent),
      field("Location", h("input", { name: "location", value: site ? site.location : "", disabled: fixed }))),
    field("Description", h("input", { name: "description", value: site ? site.description : "", disabled: fixed })),
    field("Subnets", h("textarea", { name: "subnets", id: "site-subnets", rows: 4, disabled: fixed, placeholder: "20.1.0.0/16 > 10.0.0.0/8, 10.33.24.0/24\n2001:db8:aa::/48" }, site ? subnetsText(site.subnets) : ""),
      "One public subnet per line, its private subnets after “>” (none: any private address). A device is in the site with the longest public subnet containing its public address, then the longest private subnet."),
    errors,
    h("div", { class: "actions" }, fixed ? null : save, link(`/sites?enterprise_id=${enterprise}`, "Cancel")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const f = form.elements;
    const body = {
      name: f.name.value.trim(),
      description: f.description.value,
      location: f.location.value,
      subnets: parseSubnets(f.subnets.value),
      parent_id: f.parent_id.value ? Number(f.parent_id.value) : null,
    };
    busy(save, errors, async () => {
      if (site) await call("PATCH", `/api/v1/sites/${site.id}`, body);
      else await post("/api/v1/sites", { ...body, enterprise_id: enterprise, parent_id: body.parent_id || undefined });
      onSaved();
    });
  });
  return form;
}

function importPanel(enterprise, onDone) {
  const input = h("input", { type: "file", id: "site-import-file", accept: ".csv,text/csv" });
  const result = h("div", { id: "site-import-result" });
  const go = h("button", { type: "button", id: "site-import" }, "Import sites");
  go.addEventListener("click", () => busy(go, result, async () => {
    const file = input.files[0];
    if (!file) throw new Error("Choose a CSV file first.");
    const r = await upload(`/api/v1/sites/import${qs({ enterprise_id: enterprise })}`, file);
    mount(result,
      okBox(`${r.rows} rows: ${r.created} sites created, ${r.updated} updated, ${r.failed} refused.`),
      r.errors.length ? table([
        { label: "Line", cell: (x) => String(x.line) },
        { label: "Column", cell: (x) => x.column || "—" },
        { label: "Reason", cell: (x) => x.reason, wrap: true },
      ], r.errors, "", "Refused rows") : null);
    onDone();
  }));
  return h("div", { class: "panel" }, h("h2", {}, "Import sites from CSV"),
    h("p", { class: "muted" }, "Columns site_name and subnets (required), description, location_name, parent_name; separator comma, semicolon or tab. A site of the same name is overwritten."),
    h("div", { class: "row" }, field("CSV file", input), go), result);
}

export function renderList(main, ctx) {
  const enterprise = enterpriseOf(ctx);
  const slot = h("div", { id: "site-list" });
  const notice = h("div", { id: "site-notice" });
  const picker = h("div");
  mount(main, h("h1", {}, "Sites"), picker, notice, slot);
  if (!ctx.session.enterprise_id) enterprisePicker(ctx, enterprise, "/sites", "site-enterprise").then((p) => mount(picker, p));
  if (!enterprise) {
    mount(slot, h("p", { class: "muted" }, "Choose the enterprise whose sites to manage."));
    return;
  }

  async function load() {
    mount(slot, loading());
    try {
      const tree = await get("/api/v1/sites", { enterprise_id: enterprise });
      const sites = flatten(tree.roots);
      const remove = (s) => {
        if (s.kind !== "custom") return null;
        const b = h("button", { type: "button", class: "danger", "aria-label": `Delete site ${s.name}` }, "Delete");
        b.addEventListener("click", () => {
          if (confirm(`Delete the site “${s.name}”? Its devices move to the site they match without it.`)) {
            busy(b, notice, async () => { await del(`/api/v1/sites/${s.id}`); mount(notice, okBox(`Deleted “${s.name}”.`)); load(); });
          }
        });
        return b;
      };
      mount(slot,
        h("p", { class: "muted" }, `${tree.count} of at most 2,000 sites.`),
        table([
          { label: "Site", cell: (s) => h("span", {}, s.depth ? "\u00a0\u00a0\u00a0".repeat(s.depth) + "↳ " : "", link(`/sites/${s.id}`, s.name), s.kind !== "custom" ? [" ", badge("info", s.kind)] : null) },
          { label: "Subnets", cell: (s) => subnetsText(s.subnets).split("\n").join("; ") || "—", wrap: true },
          { label: "Location", cell: (s) => s.location || "—" },
          { label: "Devices", cell: (s) => link(`/devices${qs({ enterprise_id: ctx.session.enterprise_id ? undefined : enterprise, site_id: s.id })}`, `${s.online} online of ${s.devices}`) },
          { label: "Actions", cell: (s) => h("span", { class: "actions" }, remove(s)) },
        ], sites, "No sites.", "Sites"),
        siteForm(enterprise, sites, null, () => { mount(notice, okBox("Site created.")); load(); }),
        importPanel(enterprise, load));
    } catch (e) {
      mount(slot, errorBox(e, load));
    }
  }
  load();
}

export function renderEdit(main, ctx) {
  mount(main, h("h1", {}, "Site"), loading());
  (async () => {
    try {
      const site = await get(`/api/v1/sites/${ctx.id}`);
      const tree = await get("/api/v1/sites", { enterprise_id: site.enterprise_id });
      const back = () => ctx.navigate(`/sites?enterprise_id=${site.enterprise_id}`);
      mount(main, h("h1", {}, site.name), h("p", { class: "muted" }, `Changed ${fmtTime(site.updated_at)}`), siteForm(site.enterprise_id, flatten(tree.roots), site, back));
    } catch (e) {
      mount(main, h("h1", {}, "Site"), errorBox(e));
    }
  })();
}
