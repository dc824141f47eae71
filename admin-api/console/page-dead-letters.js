// Dead letters (issue 18 item 5, platform accounts): events the pipeline gave up after their
// retries, by stage, with their reason and copy; *Replay* feeds one back into its stage (deleted
// once it succeeds), *Replay all* the listed stage's (at most 1,000). The API's 409 (a copy that
// cannot be taken back) and 503 (the stage failed again) show in place.

import { get, post, qs } from "./api.js";
import { badge, busy, errorBox, fmtTime, h, loading, mount, okBox, select, table } from "./ui.js";

const STAGES = [["", "Every stage"], ["alarm_engine", "Alarm engine"], ["alarm_effects", "Alarm effects"], ["snapshots", "Device snapshots"]];

function subject(d) {
  const parts = [];
  if (d.enterprise_id) parts.push(`enterprise #${d.enterprise_id}`);
  if (d.device_id) parts.push(`device #${d.device_id}`);
  return parts.join(", ") || "—";
}

export function render(main, ctx) {
  const stage = ctx.query.get("stage") || "";
  const afters = [0];
  const slot = h("div", { id: "dead-letters" }, loading());
  const notice = h("div", { id: "dead-letters-notice" });
  const picker = select("stage", STAGES, stage);
  picker.id = "dead-letter-stage";
  picker.addEventListener("change", () => ctx.navigate("/dead-letters" + qs({ stage: picker.value })));
  const replayAll = h("button", { type: "button", id: "replay-all", disabled: !stage }, "Replay all of this stage");
  replayAll.addEventListener("click", () => busy(replayAll, notice, async () => {
    const r = await post("/api/v1/dead-letters/replay" + qs({ stage }));
    mount(notice, r.failed.length
      ? h("p", { class: "alert error", role: "alert" }, `Replayed ${r.replayed}; ${r.failed.length} left: ${r.failed.map((f) => `#${f.id} ${f.error}`).join("; ")}`)
      : okBox(`Replayed ${r.replayed}.`));
    load();
  }));
  mount(main,
    h("h1", {}, "Dead letters"),
    h("p", { class: "muted" }, "Events the pipeline gave up after its retries: they are counted in fleetpulse_dead_letters_total and kept here (the newest 10,000) until replayed."),
    h("div", { class: "panel row" }, h("label", {}, "Stage ", picker), replayAll),
    notice, slot);

  function replayButton(d) {
    const b = h("button", { type: "button", class: "replay", "data-id": String(d.id) }, "Replay");
    b.addEventListener("click", () => busy(b, notice, async () => {
      await post(`/api/v1/dead-letters/${d.id}/replay`);
      mount(notice, okBox(`Dead letter #${d.id} replayed.`));
      load();
    }));
    return b;
  }

  async function load() {
    mount(slot, loading());
    try {
      const page = await get("/api/v1/dead-letters", { stage: stage || undefined, after: afters[afters.length - 1] || undefined, limit: 50 });
      const n = afters.length - 1;
      mount(slot,
        table([
          { label: "Id", cell: (d) => `#${d.id}` },
          { label: "Given up", cell: (d) => fmtTime(d.at) },
          { label: "Stage", cell: (d) => d.stage },
          { label: "Reason", cell: (d) => badge("off", d.reason) },
          { label: "Last error", cell: (d) => d.detail, wrap: true },
          { label: "About", cell: subject },
          { label: "Attempts", cell: (d) => String(d.attempts) },
          { label: "Copy", cell: (d) => h("code", {}, d.payload.kind || "—") },
          { label: "", cell: replayButton },
        ], page.items, "No dead letters: every event was stored and evaluated.", "Dead letters"),
        h("div", { class: "pager" },
          h("button", { type: "button", disabled: n === 0, onclick: () => { afters.pop(); load(); } }, "Previous"),
          h("span", { class: "muted" }, `Page ${n + 1}`),
          h("button", { type: "button", disabled: !page.next_after, onclick: () => { afters.push(page.next_after); load(); } }, "Next")));
    } catch (e) {
      mount(slot, e.status === 403 ? h("p", { class: "muted" }, "Dead letters are for platform accounts.") : errorBox(e, load));
    }
  }
  load();
}
