// The effective alarm strategies of an enterprise (issue 18): its own and those its channels
// hand down, where each came from, whether it applies, and the enterprise's choice about an
// inherited one (opt out, override with one of its own, inherit again) as far as the channel
// permits. The API's refusals (409: the channel does not permit it) show as they come.

import { get, put } from "./api.js";
import { badge, busy, errorBox, h, loading, mount, table } from "./ui.js";

const STATUS = {
  applies: "applies",
  choice_not_permitted: "applies (the channel does not permit your choice)",
  opted_out: "opted out",
  overridden: "overridden",
  over_limit: "not applied (too many strategies)",
};

export function effectiveSection(enterprise, notice) {
  const slot = h("div", { id: "effective-strategies" });
  const section = h("section", {}, h("h2", {}, "Effective strategies"), h("p", { class: "muted" }, "Every strategy that evaluates this enterprise's alarms: its own and those its channels hand down."), slot);

  function render(items) {
    const own = items.filter((s) => s.origin.kind === "enterprise");
    const choose = (s, choice, overrideWith, label) => {
      const b = h("button", { type: "button", "aria-label": `${label}: ${s.name}` }, label);
      b.addEventListener("click", () => busy(b, notice, async () => {
        const body = { strategy_id: s.id, choice, override_with: overrideWith };
        render((await put(`/api/v1/enterprises/${enterprise}/alarm-strategy-choices`, body)).items);
      }));
      return b;
    };
    const actions = (s) => {
      if (s.origin.kind !== "channel") return "";
      const out = [];
      if (s.status !== "applies") out.push(choose(s, "inherit", null, "Inherit again"));
      if (s.status === "applies" && s.enterprises_may !== "locked") out.push(choose(s, "opt_out", null, "Opt out"));
      if (s.status === "applies" && s.enterprises_may === "override" && own.length) {
        const pick = h("select", { "aria-label": `Override ${s.name} with` }, own.map((o) => h("option", { value: o.id }, o.name)));
        const b = h("button", { type: "button" }, "Override");
        b.addEventListener("click", () => busy(b, notice, async () => {
          const body = { strategy_id: s.id, choice: "override", override_with: Number(pick.value) };
          render((await put(`/api/v1/enterprises/${enterprise}/alarm-strategy-choices`, body)).items);
        }));
        out.push(pick, b);
      }
      return h("span", { class: "actions" }, ...out);
    };
    const origin = (s) => (s.origin.kind === "enterprise" ? "this enterprise" : `channel ${s.origin.channel_name} (${s.origin.distance === 0 ? "its own" : `${s.origin.distance} up`})`);
    const status = (s) => {
      const text = STATUS[s.status] || s.status;
      const by = s.overridden_by ? ` by #${s.overridden_by}` : "";
      return badge(s.applies ? "enabled" : "disabled", text + by);
    };
    mount(slot, table([
      { label: "Name", cell: (s) => s.name },
      { label: "From", cell: origin },
      { label: "Status", cell: status },
      { label: "Enterprise may", cell: (s) => (s.enterprises_may ? s.enterprises_may.replace("_", " ") : "") },
      { label: "Receivers", cell: (s) => s.receivers.join(", "), wrap: true },
      { label: "Choice", cell: actions },
    ], items, "No strategy evaluates this enterprise's alarms.", "Effective strategies"));
  }

  (async () => {
    mount(slot, loading());
    try {
      render((await get(`/api/v1/enterprises/${enterprise}/effective-alarm-strategies`)).items);
    } catch (e) {
      mount(slot, errorBox(e));
    }
  })();
  return section;
}
