// Firmware (PRV-4): an enterprise's images (upload with progress, list, delete), upgrading the
// devices of a filter through a scheduled task, and the upgrade form of a device's detail.

import { del, get, post, upload } from "./api.js";
import { fmtBytes } from "./page-commands.js";
import { busy, errorBox, field, fmtTime, h, link, loading, mount, okBox, select, table } from "./ui.js";

/** The enterprises the caller sees (one page; an enterprise account sees itself). */
async function enterprises() {
  const page = await get("/api/v1/enterprises", { limit: 200 });
  return page.items;
}

export function render(main, ctx) {
  const notice = h("div", { id: "firmware-notice" });
  const picker = h("div");
  const body = h("div");
  mount(main, h("h1", {}, "Firmware"), notice, picker, body);
  const state = { enterprise: null, images: [] };

  async function start() {
    let list;
    try {
      list = await enterprises();
    } catch (e) {
      return mount(picker, errorBox(e, start));
    }
    if (!list.length) return mount(picker, h("p", {}, "No enterprise to manage firmware for."));
    const chosen = ctx.query.get("enterprise_id") || list[0].id;
    const choice = select("enterprise_id", list.map((e) => [e.id, `${e.name} (#${e.id})`]), chosen);
    choice.id = "firmware-enterprise";
    choice.addEventListener("change", () => { state.enterprise = Number(choice.value); show(); });
    mount(picker, field("Enterprise", choice));
    state.enterprise = Number(choice.value);
    show();
  }

  function show() {
    const uploadSlot = h("section", { class: "panel" });
    const listSlot = h("div", { id: "firmware-list" }, loading());
    const upgradeSlot = h("section", { class: "panel" });
    mount(body, h("h2", {}, "Upload an image"), uploadSlot, h("h2", {}, "Images"), listSlot, h("h2", {}, "Upgrade devices"), upgradeSlot);
    uploadForm(uploadSlot, state, notice, () => loadList(listSlot, upgradeSlot));
    loadList(listSlot, upgradeSlot);
  }

  async function loadList(listSlot, upgradeSlot) {
    try {
      const page = await get("/api/v1/firmware", { enterprise_id: state.enterprise, limit: 100 });
      state.images = page.items;
    } catch (e) {
      return mount(listSlot, errorBox(e, () => loadList(listSlot, upgradeSlot)));
    }
    mount(listSlot, table([
      { label: "Model", cell: (i) => i.model },
      { label: "Version", cell: (i) => h("span", { class: "firmware-version" }, i.version) },
      { label: "File", cell: (i) => i.name },
      { label: "Size", cell: (i) => fmtBytes(i.size) },
      { label: "SHA-256", cell: (i) => h("code", { title: i.sha256 }, i.sha256.slice(0, 16) + "…") },
      { label: "Uploaded", cell: (i) => fmtTime(i.uploaded_at) },
      { label: "", cell: (i) => {
        const b = h("button", { type: "button", class: "danger", id: `delete-firmware-${i.id}` }, "Delete");
        b.addEventListener("click", () => busy(b, notice, async () => {
          await del(`/api/v1/firmware/${i.id}`);
          mount(notice, okBox(`Deleted ${i.model} ${i.version}.`));
          loadList(listSlot, upgradeSlot);
        }));
        return b;
      } },
    ], state.images, "No firmware images yet.", "Firmware images"));
    upgradeForm(upgradeSlot, state, notice, ctx);
  }

  start();
}

function uploadForm(slot, state, notice, uploaded) {
  const model = h("input", { name: "model", id: "firmware-model", required: true, placeholder: "T54W" });
  const version = h("input", { name: "version", id: "firmware-version", required: true, placeholder: "96.86.0.100" });
  const file = h("input", { type: "file", name: "file", id: "firmware-file", required: true });
  const bar = h("progress", { id: "firmware-progress", max: "100", value: "0", hidden: true });
  const errors = h("div");
  const button = h("button", { type: "submit", id: "firmware-upload" }, "Upload");
  const form = h("form", { novalidate: true }, field("Model", model, "As the devices report it"), field("Version", version), field("Image file", file), bar, errors, button);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const chosen = file.files && file.files[0];
    busy(button, errors, async () => {
      if (!chosen) throw new Error("Choose the image file.");
      bar.hidden = false;
      bar.value = 0;
      const path = `/api/v1/firmware?${new URLSearchParams({ enterprise_id: state.enterprise, model: model.value.trim(), version: version.value.trim(), name: chosen.name.replace(/[^A-Za-z0-9._-]/g, "_") })}`;
      const image = await upload(path, chosen, (sent, total) => { bar.value = total ? Math.round((sent / total) * 100) : 0; }, "application/octet-stream");
      bar.value = 100;
      mount(notice, okBox(`Uploaded ${image.model} ${image.version} (${fmtBytes(image.size)}, SHA-256 ${image.sha256}).`));
      form.reset();
      bar.hidden = true;
      uploaded();
    });
  });
  mount(slot, form);
}

function upgradeForm(slot, state, notice, ctx) {
  if (!state.images.length) return mount(slot, h("p", { class: "muted" }, "Upload an image first."));
  const image = select("image", state.images.map((i) => [i.id, `${i.model} ${i.version} (#${i.id})`]));
  image.id = "upgrade-image";
  const filter = h("input", { name: "filter", id: "upgrade-filter", placeholder: "online=true" });
  const errors = h("div");
  const button = h("button", { type: "submit", id: "upgrade-devices" }, "Upgrade matching devices");
  const form = h("form", { novalidate: true },
    field("Image", image),
    field("Device filter", filter, "The device list's filters (as in its address), e.g. online=true; only devices of the image's model are upgraded"),
    errors, button);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(button, errors, async () => {
      const chosen = state.images.find((i) => String(i.id) === image.value);
      const extra = filter.value.trim().replace(/^\?/, "");
      const task = await post("/api/v1/tasks", {
        enterprise_id: state.enterprise,
        name: `Firmware ${chosen.model} ${chosen.version}`,
        kind: "upgrade_firmware",
        args: { image: chosen.id },
        targets: { filter: [`model=${encodeURIComponent(chosen.model)}`, extra].filter(Boolean).join("&") },
        schedule: { kind: "once", at: Date.now() },
        deadline_s: 86400,
      });
      mount(notice, okBox(`Upgrade task “${task.name}” created: its runs show each device's result. `), link(`/tasks/${task.id}`, "Open the task"));
      if (ctx.navigate) ctx.navigate(`/tasks/${task.id}`);
    });
  });
  mount(slot, form);
}

/** The firmware upgrade of a device's detail: images of its model, and the upgrade button. */
export async function deviceUpgrade(slot, d) {
  mount(slot, loading());
  let images;
  try {
    images = (await get("/api/v1/firmware", { enterprise_id: d.enterprise_id, limit: 100 })).items.filter((i) => i.model === d.model);
  } catch (e) {
    return mount(slot, errorBox(e, () => deviceUpgrade(slot, d)));
  }
  if (!images.length) return mount(slot, h("p", { class: "muted", id: "device-firmware-none" }, `No firmware image for ${d.model} yet. `, link(`/firmware?enterprise_id=${d.enterprise_id}`, "Upload one")));
  const image = select("image", images.map((i) => [i.id, `${i.version} (${fmtBytes(i.size)})`]));
  image.id = "device-upgrade-image";
  const errors = h("div");
  const button = h("button", { type: "submit", id: "device-upgrade" }, "Upgrade firmware");
  const form = h("form", { novalidate: true }, field("Image", image), errors, button);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(button, errors, async () => {
      const command = await post(`/api/v1/devices/${d.id}/firmware-upgrade`, { image: Number(image.value) });
      mount(errors, okBox(`Upgrade queued as command #${command.id}: its progress and result are under Commands & diagnostics.`));
    });
  });
  mount(slot, form);
}
