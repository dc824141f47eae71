// Tenants: channels and enterprises the caller sees (search, keyset paging), acting inside an
// enterprise or a sub-channel, the enterprise's answer to its channel's authorization, accounts
// and freezing (one account, or every account of a channel or enterprise), moving an enterprise
// to another channel; creating channels, enterprises (with their master administrator and
// permissions) and accounts; editing a channel (/channels/{id}), with the strategies it hands
// down (`channel-strategies.js`).

import { get, post, put, setCsrf } from "./api.js";
import { badge, busy, checkbox, errorBox, field, fmtTime, h, link, loading, mount, okBox, select, table } from "./ui.js";
import { channelStrategies } from "./channel-strategies.js";

function pagedList(title, path, columns, emptyText, id) {
  const afters = [0];
  let q = "";
  const slot = h("div", { id }, loading());
  const search = h("input", { type: "search", name: "q" });
  const form = h("form", { class: "row", role: "search" }, field(`Search ${title.toLowerCase()}`, search), h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (e) => { e.preventDefault(); q = search.value.trim(); afters.length = 1; load(); });
  async function load() {
    mount(slot, loading());
    try {
      const page = await get(path, { q: q || undefined, after: afters[afters.length - 1] || undefined, limit: 50 });
      const n = afters.length - 1;
      mount(slot, table(columns(load), page.items, q ? "Nothing matches the search." : emptyText, title),
        h("div", { class: "pager" },
          h("button", { type: "button", disabled: n === 0, onclick: () => { afters.pop(); load(); } }, "Previous"),
          h("span", { class: "muted" }, `Page ${n + 1}`),
          h("button", { type: "button", disabled: !page.next_after, onclick: () => { afters.push(page.next_after); load(); } }, "Next")));
    } catch (e) {
      mount(slot, e.status === 403 ? h("p", { class: "muted" }, "This account may not list these.") : errorBox(e, load));
    }
  }
  load();
  return h("section", {}, h("h2", {}, title), path === "/api/v1/accounts" ? null : form, slot);
}

/**
 * A creation form: fields [name, label, type | options], posted to `path` as JSON (numbers as
 * numbers, checkboxes as booleans, empty fields left out); the API's message in place.
 */
function createForm(id, title, action, fields, notice, said, path) {
  const errors = h("div");
  const create = h("button", { class: "primary", type: "submit" }, action);
  const controls = fields.map(([name, label, type]) => Array.isArray(type) ? field(label, select(name, type, type[0][0]))
    : type === "checkbox" ? checkbox(name, label, false)
    : field(label, h("input", { name, type, min: type === "number" ? 1 : null, autocomplete: type === "password" ? "new-password" : null })));
  const form = h("form", { class: "panel", id, novalidate: true }, h("h2", {}, title), h("div", { class: "row" }, controls), errors, h("div", { class: "actions" }, create));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const body = {};
    for (const [name, , type] of fields) {
      const el = form.elements[name];
      if (type === "checkbox") body[name] = el.checked;
      else if (el.value.trim() !== "") body[name] = type === "number" ? Number(el.value) : type === "password" ? el.value : el.value.trim();
    }
    busy(create, errors, async () => {
      const made = await post(path, body);
      mount(notice, okBox(said(made)));
      form.reset();
    });
  });
  return form;
}

export function render(main, ctx) {
  const s = ctx.session;
  const notice = h("div", { id: "tenant-notice" });
  const role = s.account.role;

  const act = (kind, id, name) => {
    const b = h("button", { type: "button", class: "act", "data-enterprise": kind === "enterprises" ? id : null }, `Act as ${name}`);
    b.addEventListener("click", () => busy(b, notice, async () => {
      const answer = await post(`/api/v1/${kind}/${id}/act`);
      setCsrf(answer.csrf_token);
      await ctx.signedIn("/dashboard");
    }));
    return b;
  };
  const button = (label, path, after, said) => {
    const b = h("button", { type: "button" }, label);
    b.addEventListener("click", () => busy(b, notice, async () => { const r = await post(path); mount(notice, okBox(said ? said(r) : `${label}: done.`)); after(); }));
    return b;
  };
  // Freezing a whole tenant (TEN-5): every account under it; unfreezing gives back exactly those.
  const freezeTenant = (kind, id) => h("span", { class: "actions inline", "data-freeze": `${kind}-${id}` },
    button("Freeze accounts", `/api/v1/${kind}/${id}/freeze`, () => {}, (r) => `Froze ${r.accounts} account(s); their sessions ended.`),
    button("Unfreeze accounts", `/api/v1/${kind}/${id}/unfreeze`, () => {}, (r) => `Unfroze ${r.accounts} account(s).`));
  const moveSlot = h("div", { id: "move-slot" });
  const moveButton = (e, reload) => {
    const b = h("button", { type: "button", "data-move": e.id }, "Move…");
    b.addEventListener("click", () => {
      const to = h("input", { name: "channel_id", type: "number", min: 1 });
      const errors = h("div");
      const go = h("button", { class: "primary", type: "submit" }, "Move enterprise");
      const form = h("form", { class: "panel", id: "move-enterprise", novalidate: true }, h("h2", {}, `Move ${e.name}`),
        h("p", { class: "muted" }, "Its orders, licences and devices go with it; its channel authorization starts again at none."),
        h("div", { class: "row" }, field("New channel id (empty: directly under the platform)", to)), errors,
        h("div", { class: "actions" }, go, h("button", { type: "button", onclick: () => moveSlot.replaceChildren() }, "Cancel")));
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        busy(go, errors, async () => {
          const moved = await post(`/api/v1/enterprises/${e.id}/move`, { channel_id: to.value ? Number(to.value) : null });
          moveSlot.replaceChildren();
          mount(notice, okBox(`${moved.name} now belongs to ${moved.channel_id ? "channel #" + moved.channel_id : "the platform"}.`));
          reload();
        });
      });
      mount(moveSlot, form);
      to.focus();
    });
    return b;
  };

  const sections = [];
  if (s.enterprise_id && !s.acting) {
    const own = h("div", { class: "panel", id: "own-enterprise" }, loading());
    const load = async () => {
      try {
        const e = await get(`/api/v1/enterprises/${s.enterprise_id}`);
        const a = e.channel_authorization;
        mount(own, h("h2", {}, e.name), h("p", {}, "Your channel's authorization to act inside this enterprise: ", badge(a === "accepted" ? "enabled" : a === "pending" ? "pending" : "unknown", a)),
          h("div", { class: "actions" },
            a === "pending" ? [button("Accept", `/api/v1/enterprises/${e.id}/authorization/accept`, load), button("Reject", `/api/v1/enterprises/${e.id}/authorization/reject`, load)] : null,
            a === "accepted" || a === "pending" ? button("Revoke", `/api/v1/enterprises/${e.id}/authorization/revoke`, load) : null));
      } catch (err) {
        mount(own, errorBox(err, load));
      }
    };
    load();
    sections.push(own);
  }
  if (role !== "enterprise_admin" && !(s.acting && s.acting.enterprise)) {
    sections.push(pagedList("Channels", "/api/v1/channels", () => [
      { label: "Name", cell: (c) => c.name },
      { label: "Id", cell: (c) => c.id },
      { label: "Parent", cell: (c) => (c.parent_id ? `#${c.parent_id}` : "—") },
      { label: "", cell: (c) => h("span", { class: "actions inline" }, link(`/channels/${c.id}`, "Edit"), role === "channel_admin" ? act("channels", c.id, c.name) : null, s.acting ? null : freezeTenant("channels", c.id)) },
    ], "No channels.", "channel-list"));
    sections.push(pagedList("Enterprises", "/api/v1/enterprises", (reload) => [
      { label: "Name", cell: (e) => e.name },
      { label: "Id", cell: (e) => e.id },
      { label: "Channel", cell: (e) => (e.channel_id ? `#${e.channel_id}` : "—") },
      { label: "Time zone", cell: (e) => e.time_zone || "—" },
      { label: "Permissions", cell: (e) => [e.device_management ? "devices" : null, e.rps ? "RPS" : null].filter(Boolean).join(", ") || "none" },
      { label: "Authorization", cell: (e) => badge(e.channel_authorization === "accepted" ? "enabled" : e.channel_authorization === "pending" ? "pending" : "unknown", e.channel_authorization) },
      { label: "Created", cell: (e) => fmtTime(e.created_at) },
      { label: "", cell: (e) => role !== "channel_admin" ? "" : e.channel_authorization === "accepted" ? act("enterprises", e.id, e.name) : e.channel_authorization === "pending" ? "waiting for the enterprise" : button("Ask for authorization", `/api/v1/enterprises/${e.id}/authorization`, reload) },
      { label: "", cell: (e) => s.acting ? "" : h("span", { class: "actions inline" }, freezeTenant("enterprises", e.id), moveButton(e, reload)) },
    ], "No enterprises yet.", "enterprise-list"));
    sections.push(moveSlot);
    sections.push(createForm("create-channel", "New channel", "Create channel", [
      ["name", "Name", "text"], ["parent_id", role === "platform_admin" ? "Parent channel id (empty: top level)" : "Parent channel id (empty: yours)", "number"],
      ["allow_sub_channels", "May create sub-channels", "checkbox"], ["device_management", "Device management", "checkbox"]],
    notice, (made) => `Channel “${made.name}” created (#${made.id}).`, "/api/v1/channels"));
    const name = h("input", { name: "name", required: true });
    const tz = h("input", { name: "time_zone", placeholder: "Europe/Berlin" });
    const channelOf = h("input", { name: "channel_id", type: "number", min: 1 });
    const master = h("input", { name: "master_admin_email", type: "email", autocomplete: "off" });
    const register = h("input", { name: "register_email", type: "email", autocomplete: "off" });
    const create = h("button", { class: "primary", type: "submit" }, "Create enterprise");
    const errors = h("div");
    const form = h("form", { class: "panel", id: "create-enterprise", novalidate: true }, h("h2", {}, "New enterprise"),
      h("div", { class: "row" }, field("Name", name), field("Time zone", tz), field("Channel id (empty: yours, or none)", channelOf)),
      h("div", { class: "row" }, field("Master administrator email (gets the admin account)", master), field("Register email", register)),
      h("fieldset", { class: "days" }, h("legend", {}, "Permissions"), checkbox("device_management", "Device management", true), checkbox("rps", "RPS", false)),
      errors, h("div", { class: "actions" }, create));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(create, errors, async () => {
        const made = await post("/api/v1/enterprises", {
          name: name.value.trim(), time_zone: tz.value.trim() || undefined, channel_id: channelOf.value ? Number(channelOf.value) : undefined,
          master_admin_email: master.value.trim() || undefined, register_email: register.value.trim() || undefined,
          device_management: form.elements.device_management.checked, rps: form.elements.rps.checked,
        });
        const admin = made.admin_account ? ` Its admin account ${made.admin_account.email} was created and its details emailed.` : "";
        mount(notice, okBox(`Enterprise “${made.name}” created (#${made.id}). Its device credential: ${made.credential}.${admin}`));
        form.reset();
      });
    });
    sections.push(form);
  }
  if (!s.acting && role !== "enterprise_admin") {
    sections.push(pagedList("Accounts", "/api/v1/accounts", (reload) => [
      { label: "Email", cell: (a) => a.email },
      { label: "Role", cell: (a) => a.role.replace(/_/g, " ") },
      { label: "Tenant", cell: (a) => (a.enterprise_id ? `enterprise #${a.enterprise_id}` : a.channel_id ? `channel #${a.channel_id}` : "platform") },
      { label: "State", cell: (a) => (a.frozen ? badge("frozen") : badge("enabled", "active")) },
      { label: "", cell: (a) => (a.id === s.account.id ? "(you)" : button(a.frozen ? "Unfreeze" : "Freeze", `/api/v1/accounts/${a.id}/${a.frozen ? "unfreeze" : "freeze"}`, reload)) },
    ], "No accounts.", "account-list"));
    sections.push(createForm("create-account", "New account", "Create account", [
      ["email", "Email", "email"], ["password", "First password (empty: generated and emailed)", "password"],
      ["role", "Role", [["enterprise_admin", "Enterprise admin"], ["channel_admin", "Channel admin"], ...(role === "platform_admin" ? [["platform_admin", "Platform admin"]] : [])]],
      ["enterprise_id", "Enterprise id (enterprise admin)", "number"], ["channel_id", "Channel id (channel admin)", "number"]],
    notice, (made) => `Account ${made.email} created (#${made.id}); it changes its password at the first login.`, "/api/v1/accounts"));
  }
  mount(main, h("h1", {}, "Tenants"), s.acting ? h("p", { class: "alert info" }, "You are acting inside a tenant: sign out to stop.") : null, notice, sections);
}

/**
 * `/channels/{id}`: a channel's name, contact details and the permissions it grants below it
 * (sub-channels, device management, RPS). A channel account cannot change its own channel's
 * permissions (they are granted from above): the API says so (403).
 */
export function renderChannel(main, ctx) {
  mount(main, h("h1", {}, `Channel #${ctx.id}`), loading());
  async function load() {
    let c;
    try {
      c = await get(`/api/v1/channels/${ctx.id}`);
    } catch (e) {
      return mount(main, h("h1", {}, `Channel #${ctx.id}`), e.status === 404 ? h("p", {}, "No such channel (or it is outside your scope). ", link("/tenants", "Back to tenants")) : errorBox(e, load));
    }
    const notice = h("div", { id: "channel-notice" });
    const errors = h("div");
    const input = (name, label, type = "text") => field(label, h("input", { name, type, value: c[name] || "", autocomplete: "off" }));
    const save = h("button", { class: "primary", type: "submit" }, "Save channel");
    const form = h("form", { class: "panel", id: "edit-channel", novalidate: true },
      h("div", { class: "row" }, input("name", "Name"), input("contact", "Contact"), input("email", "Email", "email"), input("phone", "Phone"), input("country", "Country (ISO code)")),
      h("fieldset", { class: "days" }, h("legend", {}, "What it may do"),
        checkbox("allow_sub_channels", "May create sub-channels", c.allow_sub_channels),
        checkbox("device_management", "Device management", c.device_management),
        checkbox("rps", "RPS (redirection and provisioning)", c.rps)),
      errors, h("div", { class: "actions" }, save, link("/tenants", "Back to tenants")));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(save, errors, async () => {
        const body = {};
        for (const name of ["name", "contact", "email", "phone", "country"]) body[name] = form.elements[name].value.trim();
        for (const name of ["allow_sub_channels", "device_management", "rps"]) {
          // Only what changed: a channel account may edit its own details, not its permissions.
          if (form.elements[name].checked !== c[name]) body[name] = form.elements[name].checked;
        }
        c = await put(`/api/v1/channels/${c.id}`, body);
        main.querySelector("h1").textContent = `Channel ${c.name}`;
        mount(notice, okBox(`Channel “${c.name}” saved.`));
      });
    });
    mount(main, h("h1", {}, `Channel ${c.name}`), h("p", { class: "muted" }, `#${c.id}`, c.parent_id ? ` · below channel #${c.parent_id}` : " · top level", ` · created ${fmtTime(c.created_at)}`), notice, form);
    main.append(channelStrategies(c.id));
  }
  load();
}
