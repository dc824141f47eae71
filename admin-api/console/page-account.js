// Account settings: contact details, login protection (none, emailed code, authenticator app
// with its set-up), and the password change.

import { get, post, put, setCsrf } from "./api.js";
import { busy, errorBox, field, h, loading, mount, okBox, select, zoneName } from "./ui.js";

export function render(main, ctx) {
  mount(main, h("h1", {}, "Account settings"), loading());
  const notice = h("div", { id: "account-notice" });

  async function load() {
    let s;
    try {
      s = await get("/api/v1/account");
    } catch (e) {
      return mount(main, h("h1", {}, "Account settings"), errorBox(e, load));
    }
    const save = h("button", { class: "primary", type: "submit" }, "Save");
    const errors = h("div");
    const settings = h("form", { class: "panel", id: "settings-form" }, h("h2", {}, "Contact"),
      field("Email", h("input", { value: s.email, disabled: true })),
      field("Contact name", h("input", { name: "contact_name", value: s.contact_name, maxlength: 128 })),
      field("Phone", h("input", { name: "phone", value: s.phone, maxlength: 32, type: "tel" })),
      field("Country or area", h("input", { name: "country", value: s.country, maxlength: 64 })),
      h("p", { class: "muted" }, `Times are shown in ${zoneName()}${ctx.session.time_zone ? " (the enterprise's time zone)" : " (this browser's time zone)"}.`),
      errors, h("div", { class: "actions" }, save));
    settings.addEventListener("submit", (e) => {
      e.preventDefault();
      const f = settings.elements;
      busy(save, errors, async () => {
        await put("/api/v1/account", { contact_name: f.contact_name.value, phone: f.phone.value, country: f.country.value });
        mount(notice, okBox("Settings saved."));
      });
    });
    mount(main, h("h1", {}, "Account settings"), notice, settings, protection(s, load), passwordForm(ctx));
  }

  function protection(s, reload) {
    const panel = h("section", { class: "panel", id: "login-protection" }, h("h2", {}, "Login protection"));
    const errors = h("div");
    if (s.login_protection === "totp") {
      const code = h("input", { name: "code", inputmode: "numeric", maxlength: 6, autocomplete: "one-time-code" });
      const off = h("button", { type: "submit", class: "danger" }, "Turn off the authenticator app");
      const form = h("form", {}, h("p", {}, "Logins need a code from your authenticator app."), field("Current code", code), errors, h("div", { class: "actions" }, off));
      form.addEventListener("submit", (e) => { e.preventDefault(); busy(off, errors, async () => { await post("/api/v1/account/totp/disable", { code: code.value.trim() }); mount(notice, okBox("The authenticator app is off.")); reload(); }); });
      panel.append(form);
      return panel;
    }
    const choice = select("login_protection", [["none", "Password only"], ["email", "Password and a code sent by email"]], s.login_protection);
    const save = h("button", { type: "submit" }, "Save protection");
    const form = h("form", { class: "row" }, field("Protection", choice), save);
    form.addEventListener("submit", (e) => { e.preventDefault(); busy(save, errors, async () => { await put("/api/v1/account", { login_protection: choice.value }); mount(notice, okBox("Login protection saved.")); }); });
    const setup = h("button", { type: "button", id: "totp-setup" }, "Set up an authenticator app");
    const totpSlot = h("div");
    setup.addEventListener("click", () => busy(setup, errors, async () => {
      const t = await post("/api/v1/account/totp/setup");
      const code = h("input", { name: "code", inputmode: "numeric", maxlength: 6, autocomplete: "one-time-code" });
      const confirm = h("button", { class: "primary", type: "submit" }, "Turn on");
      const f = h("form", { id: "totp-confirm" },
        h("p", {}, "Scan this code with your authenticator app (or type the secret below into it), then enter the code it shows."),
        h("img", { id: "totp-qr", class: "qr", src: "data:image/svg+xml;charset=utf-8," + encodeURIComponent(t.qr_svg), alt: "QR code of the authenticator set-up (the same as the secret and link below)" }),
        h("dl", { class: "kv" }, h("dt", {}, "Secret"), h("dd", {}, h("code", { id: "totp-secret" }, t.secret)), h("dt", {}, "Link"), h("dd", {}, h("pre", { class: "code" }, t.otpauth_uri))),
        field("Code from the app", code), h("div", { class: "actions" }, confirm));
      f.addEventListener("submit", (e) => { e.preventDefault(); busy(confirm, errors, async () => { await post("/api/v1/account/totp", { secret: t.secret, code: code.value.trim() }); mount(notice, okBox("The authenticator app is on: logins now need its code.")); reload(); }); });
      mount(totpSlot, f);
    }));
    panel.append(form, h("div", { class: "actions" }, setup), totpSlot, errors);
    return panel;
  }

  load();
}

function passwordForm(ctx) {
  const current = h("input", { type: "password", name: "current_password", autocomplete: "current-password" });
  const next = h("input", { type: "password", name: "new_password", autocomplete: "new-password", minlength: 8 });
  const again = h("input", { type: "password", name: "again", autocomplete: "new-password", minlength: 8 });
  const errors = h("div");
  const save = h("button", { type: "submit" }, "Change password");
  const form = h("form", { class: "panel", id: "change-password" }, h("h2", {}, "Password"), field("Current password", current), field("New password", next, "At least 8 characters. Every other session of your account ends."), field("New password again", again), errors, h("div", { class: "actions" }, save));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (next.value !== again.value) return errors.replaceChildren(errorBox({ message: "The two new passwords differ." }));
    busy(save, errors, async () => {
      const answer = await post("/api/v1/account/password", { current_password: current.value, new_password: next.value });
      setCsrf(answer.csrf_token);
      form.reset();
      errors.replaceChildren(okBox("Password changed."));
    });
  });
  return form;
}
