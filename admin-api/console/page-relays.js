// Relays (ING-9, issue 15): the grants `fleetpulse relay` processes authenticate with, each for
// one enterprise or one channel (every enterprise below it). The list the caller sees (name,
// scope, created, last seen, in force or revoked), creating one, *Rotate* and *Revoke*, and
// *Delete*. A new or rotated credential is shown once, with a *Copy* button: the server keeps
// only its hash. The API's refusals show in place.

import { del, get, post, put } from "./api.js";
import { badge, busy, errorBox, field, fmtTime, h, loading, mount, okBox, select, table } from "./ui.js";

function scopeText(scope) {
  if (scope.enterprise !== undefined) return `Enterprise #${scope.enterprise}`;
  if (scope.channel !== undefined) return `Channel #${scope.channel} and below`;
  return "—";
}

export function render(main, ctx) {
  const notice = h("div", { id: "relays-notice" });
  const secret = h("div", { id: "relay-credential" });
  const list = h("div", { id: "relays-list" }, loading());

  function showCredential(relay, what) {
    const code = h("code", { id: "relay-credential-value" }, relay.credential);
    const copy = h("button", { type: "button", id: "relay-credential-copy" }, "Copy");
    const copied = h("span", { class: "muted", role: "status" });
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(relay.credential);
        copied.textContent = " Copied.";
      } catch {
        copied.textContent = " Select the text and copy it by hand.";
      }
    });
    mount(secret, h("div", { class: "alert ok", role: "status" },
      h("p", {}, `${what} “${relay.name}”. Its credential, shown this once — copy it now into `, h("code", {}, "fleetpulse relay --credential"), ":"),
      h("p", {}, code, " ", copy, copied),
      h("p", { class: "muted" }, "The server keeps only its hash: if it is lost, rotate the grant for a new one.")));
  }

  function actions(r) {
    const out = [];
    if (!r.revoked_at) {
      const rotate = h("button", { type: "button", "data-rotate": r.id }, "Rotate");
      rotate.addEventListener("click", () => busy(rotate, notice, async () => {
        const rotated = await post(`/api/v1/relays/${r.id}/rotate`);
        mount(notice, okBox(`The old credential of “${r.name}” is refused within 5 seconds.`));
        showCredential(rotated, "New credential for");
        load();
      }));
      const revoke = h("button", { type: "button", class: "danger", "data-revoke": r.id }, "Revoke");
      revoke.addEventListener("click", () => busy(revoke, notice, async () => {
        await post(`/api/v1/relays/${r.id}/revoke`);
        mount(notice, okBox(`“${r.name}” revoked: relays using it are refused within 5 seconds.`));
        mount(secret);
        load();
      }));
      out.push(rotate, revoke);
    }
    const remove = h("button", { type: "button", class: "danger", "data-delete": r.id }, "Delete");
    remove.addEventListener("click", () => busy(remove, notice, async () => {
      await del(`/api/v1/relays/${r.id}`);
      mount(notice, okBox(`“${r.name}” deleted.`));
      load();
    }));
    out.push(remove);
    return h("span", { class: "actions inline" }, out);
  }

  function nameCell(r) {
    const input = h("input", { name: "name", value: r.name, "aria-label": `Name of relay #${r.id}` });
    const save = h("button", { type: "button", "data-rename": r.id }, "Rename");
    save.addEventListener("click", () => busy(save, notice, async () => {
      const renamed = await put(`/api/v1/relays/${r.id}`, { name: input.value.trim() });
      mount(notice, okBox(`Renamed to “${renamed.name}”.`));
    }));
    return h("span", { class: "actions inline" }, input, save);
  }

  async function load() {
    mount(list, loading());
    try {
      const page = await get("/api/v1/relays");
      mount(list, table([
        { label: "Name", cell: nameCell },
        { label: "May carry", cell: (r) => scopeText(r.scope) },
        { label: "Created", cell: (r) => fmtTime(r.created_at) },
        { label: "Last seen", cell: (r) => (r.last_seen_at ? fmtTime(r.last_seen_at) : "never") },
        { label: "State", cell: (r) => (r.revoked_at ? badge("off", `revoked ${fmtTime(r.revoked_at)}`) : badge("on", "in force")) },
        { label: "", cell: actions },
      ], page.items, "No relays yet: create one below, then start `fleetpulse relay` with its credential.", "Relays"));
    } catch (e) {
      mount(list, errorBox(e, load));
    }
  }

  const own = ctx.session.enterprise_id;
  const name = h("input", { name: "name", id: "relay-name", autocomplete: "off", placeholder: "Site A lobby" });
  const kind = select("kind", own ? [["enterprise", "An enterprise"]] : [["enterprise", "An enterprise"], ["channel", "A channel and every enterprise below it"]], "enterprise");
  kind.id = "relay-scope-kind";
  const scopeId = h("input", { name: "scope_id", id: "relay-scope-id", type: "number", min: "1", value: own ? String(own) : "" });
  const createErrors = h("div");
  const create = h("button", { class: "primary", type: "submit", id: "relay-create" }, "Create relay");
  const form = h("form", { class: "panel", id: "relay-form", novalidate: true },
    h("h2", {}, "New relay"),
    field("Name", name),
    field("May carry the devices of", kind),
    field("Its id", scopeId, "The enterprise's or channel's id, as the tenants page shows it."),
    createErrors, create);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(create, createErrors, async () => {
      const created = await post("/api/v1/relays", { name: name.value.trim(), scope: { [kind.value]: Number(scopeId.value) } });
      showCredential(created, "Created");
      mount(notice);
      name.value = "";
      load();
    });
  });

  mount(main,
    h("h1", {}, "Relays"),
    h("p", { class: "muted" }, "A relay (fleetpulse relay) runs at a site and carries its devices to this server over one connection. Each relay authenticates with a credential granted here; each device still authenticates with its own."),
    notice, secret, list, form);
  load();
}
