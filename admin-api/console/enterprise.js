// The enterprise a per-enterprise page works on (sites, profiles, strategies): the session's
// own, or for channel and platform admins the one chosen in the picker (?enterprise_id=).

import { get, qs } from "./api.js";
import { errorBox, field, h } from "./ui.js";

/** The enterprise the page works on: the session's own, else ?enterprise_id= (chosen below). */
export function enterpriseOf(ctx) {
  return ctx.session.enterprise_id || Number(ctx.query.get("enterprise_id")) || null;
}

/** A select of the caller's enterprises (`id` its element id); choosing one opens `base` for it. */
export async function enterprisePicker(ctx, current, base, id) {
  try {
    const { items } = await get("/api/v1/enterprises", { limit: 200 });
    if (!items.length) return h("p", { class: "muted" }, "No enterprises yet.");
    const sel = h("select", { id }, h("option", { value: "" }, "Choose an enterprise"), items.map((e) => h("option", { value: e.id, selected: e.id === current }, `${e.name} (#${e.id})`)));
    sel.addEventListener("change", () => ctx.navigate(base + qs({ enterprise_id: sel.value })));
    return h("div", { class: "row" }, field("Enterprise", sel));
  } catch (e) {
    return errorBox(e);
  }
}
