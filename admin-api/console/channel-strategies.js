// A channel's own alarm strategies (issue 18), on the channel's page: what it hands down to the
// enterprises of its subtree (how many sub-channel levels, what they may do about it), its NOC
// receivers; create and delete. The API's messages show as they come.

import { del, get, post } from "./api.js";
import { busy, errorBox, field, h, loading, mount, okBox, select, table } from "./ui.js";

const MAY = [["locked", "nothing (locked)"], ["opt_out", "opt out"], ["override", "opt out or override"]];

export function channelStrategies(channel) {
  const slot = h("div", { id: "channel-strategies" });
  const notice = h("div", { id: "channel-strategy-notice" });
  const errors = h("div", { id: "channel-strategy-errors" });
  const save = h("button", { class: "primary", type: "submit", id: "save-channel-strategy" }, "Add strategy");
  const form = h("form", { class: "panel", id: "channel-strategy-form", novalidate: true },
    h("div", { class: "row" },
      field("Name", h("input", { name: "name" })),
      field("NOC receivers (one per line)", h("textarea", { name: "receivers", rows: 2 })),
      field("Sub-channel levels (empty: all)", h("input", { name: "levels", type: "number", min: 0 })),
      field("Enterprises may", select("may", MAY, "locked"))),
    errors, h("div", { class: "actions" }, save));

  async function load() {
    mount(slot, loading());
    try {
      const { items } = await get(`/api/v1/channels/${channel}/alarm-strategies`);
      const remove = (s) => {
        const b = h("button", { type: "button", class: "danger", "aria-label": `Delete channel strategy ${s.settings.name}` }, "Delete");
        b.addEventListener("click", () => { if (confirm(`Delete “${s.settings.name}”? Enterprises' choices about it go too.`)) busy(b, notice, async () => { await del(`/api/v1/channel-alarm-strategies/${s.id}`); mount(notice, okBox("Deleted.")); load(); }); });
        return b;
      };
      const reach = (s) => (s.inheritance.sub_channel_levels == null ? "whole subtree" : s.inheritance.sub_channel_levels === 0 ? "own enterprises" : `${s.inheritance.sub_channel_levels} sub-channel level(s)`);
      mount(slot, table([
        { label: "Name", cell: (s) => s.settings.name },
        { label: "Receivers", cell: (s) => s.settings.receivers.join(", "), wrap: true },
        { label: "Reaches", cell: reach },
        { label: "Enterprises may", cell: (s) => (MAY.find(([v]) => v === s.inheritance.enterprises_may) || [0, ""])[1] },
        { label: "Actions", cell: remove },
      ], items, "No channel strategies: its enterprises have only their own.", "Channel alarm strategies"));
    } catch (e) {
      mount(slot, errorBox(e, load));
    }
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const f = form.elements;
    const body = {
      name: f.name.value,
      receivers: f.receivers.value.split(/[\n,]/).map((r) => r.trim()).filter(Boolean),
      inheritance: { sub_channel_levels: f.levels.value === "" ? null : Number(f.levels.value), enterprises_may: f.may.value },
    };
    busy(save, errors, async () => {
      await post(`/api/v1/channels/${channel}/alarm-strategies`, body);
      mount(notice, okBox(`Strategy “${body.name}” added.`));
      form.reset();
      load();
    });
  });
  load();
  return h("section", {}, h("h2", {}, "Alarm strategies handed down"), notice, slot, form);
}
