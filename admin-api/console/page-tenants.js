// Tenants: channels and enterprises the caller sees (search, keyset paging), acting inside an
// enterprise or a sub-channel, the enterprise's answer to its channel's authorization, accounts
// and freezing.

import { get, post, setCsrf } from "./api.js";
import { badge, busy, errorBox, field, fmtTime, h, loading, mount, okBox, table } from "./ui.js";

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
  const button = (label, path, after) => {
    const b = h("button", { type: "button" }, label);
    b.addEventListener("click", () => busy(b, notice, async () => { await post(path); mount(notice, okBox(`${label}: done.`)); after(); }));
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
      { label: "", cell: (c) => (role === "channel_admin" ? act("channels", c.id, c.name) : "") },
    ], "No channels.", "channel-list"));
    sections.push(pagedList("Enterprises", "/api/v1/enterprises", (reload) => [
      { label: "Name", cell: (e) => e.name },
      { label: "Id", cell: (e) => e.id },
      { label: "Channel", cell: (e) => (e.channel_id ? `#${e.channel_id}` : "—") },
      { label: "Time zone", cell: (e) => e.time_zone || "—" },
      { label: "Authorization", cell: (e) => badge(e.channel_authorization === "accepted" ? "enabled" : e.channel_authorization === "pending" ? "pending" : "unknown", e.channel_authorization) },
      { label: "Created", cell: (e) => fmtTime(e.created_at) },
      { label: "", cell: (e) => role !== "channel_admin" ? "" : e.channel_authorization === "accepted" ? act("enterprises", e.id, e.name) : e.channel_authorization === "pending" ? "waiting for the enterprise" : button("Ask for authorization", `/api/v1/enterprises/${e.id}/authorization`, reload) },
    ], "No enterprises yet.", "enterprise-list"));
    const name = h("input", { name: "name", required: true });
    const tz = h("input", { name: "time_zone", placeholder: "Europe/Berlin" });
    const create = h("button", { class: "primary", type: "submit" }, "Create enterprise");
    const errors = h("div");
    const form = h("form", { class: "panel", id: "create-enterprise" }, h("h2", {}, "New enterprise"), h("div", { class: "row" }, field("Name", name), field("Time zone", tz)), errors, h("div", { class: "actions" }, create));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(create, errors, async () => {
        const made = await post("/api/v1/enterprises", { name: name.value.trim(), time_zone: tz.value.trim() || undefined });
        mount(notice, okBox(`Enterprise “${made.name}” created (#${made.id}). Its device credential: ${made.credential}`));
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
  }
  mount(main, h("h1", {}, "Tenants"), s.acting ? h("p", { class: "alert info" }, "You are acting inside a tenant: sign out to stop.") : null, notice, sections);
}

