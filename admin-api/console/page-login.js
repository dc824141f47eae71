// Signing in: the password, the second step (a code from the authenticator app, or the code
// emailed for login protection by email), the forced first password change, the forgotten
// password request and the reset link's page.

import { ApiError, post, setCsrf } from "./api.js";
import { busy, errorBox, field, h, link, mount, okBox } from "./ui.js";

const LOCK_HINT = "After 10 wrong passwords or codes in a row the account is locked for 5 minutes; a locked account is refused like a wrong password.";

function page(main, title, ...body) {
  mount(main, h("div", { class: "panel" }, h("h1", {}, title), ...body));
}

function input(name, type, autocomplete, extra) {
  return h("input", { name, type, autocomplete, required: true, ...(extra || {}) });
}

export function renderLogin(main, ctx) {
  let failures = 0;
  const email = input("email", "email", "username", { autofocus: true });
  const password = input("password", "password", "current-password");
  const errors = h("div", { id: "login-error" });
  const submit = h("button", { class: "primary", type: "submit", id: "login-submit" }, "Sign in");
  const form = h(
    "form",
    { id: "login-form", novalidate: true },
    field("Email", email),
    field("Password", password),
    errors,
    h("div", { class: "actions" }, submit, link("/forgot-password", "Forgot your password?")),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, null, async () => {
      errors.replaceChildren();
      try {
        const body = { email: email.value.trim(), password: password.value, cookie: true };
        const answer = await post("/api/v1/auth/login", body);
        setCsrf(answer.csrf_token);
        await ctx.signedIn(ctx.query.get("next"));
      } catch (e) {
        if (e instanceof ApiError && e.code === "mfa_required") {
          if (e.body && e.body.challenge) return secondStep(main, ctx, "email", { challenge: e.body.challenge });
          return secondStep(main, ctx, "totp", { email: email.value.trim(), password: password.value });
        }
        failures += 1;
        const msg = e.status === 401 ? "Wrong email or password, or the account is locked." : e.message;
        errors.replaceChildren(errorBox({ message: msg }), failures >= 3 ? h("p", { class: "muted", id: "lock-hint" }, LOCK_HINT) : null);
        password.select();
      }
    });
  });
  page(main, "Sign in to fleetpulse", form);
}

function secondStep(main, ctx, kind, pending) {
  const code = input("code", "text", "one-time-code", { inputmode: "numeric", pattern: "[0-9]{6}", maxlength: 6, autofocus: true });
  const errors = h("div");
  const submit = h("button", { class: "primary", type: "submit" }, "Verify");
  const form = h("form", { id: "code-form" }, field(kind === "email" ? "Code from the email" : "Code from the authenticator app", code), errors, h("div", { class: "actions" }, submit, link("/login", "Start again")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, errors, async () => {
      const answer =
        kind === "email"
          ? await post("/api/v1/auth/login/verify", { challenge: pending.challenge, code: code.value.trim(), cookie: true })
          : await post("/api/v1/auth/login", { email: pending.email, password: pending.password, code: code.value.trim(), cookie: true });
      setCsrf(answer.csrf_token);
      await ctx.signedIn(ctx.query.get("next"));
    });
  });
  page(main, "Second step", h("p", {}, kind === "email" ? "A 6-digit code was emailed to you; it is valid for 10 minutes." : "Enter the 6-digit code your authenticator app shows."), form);
  code.focus();
}

export function renderChangePassword(main, ctx) {
  const current = input("current_password", "password", "current-password", { autofocus: true });
  const next = input("new_password", "password", "new-password", { minlength: 8 });
  const again = input("again", "password", "new-password", { minlength: 8 });
  const errors = h("div");
  const submit = h("button", { class: "primary", type: "submit" }, "Change password");
  const form = h("form", { id: "password-form" }, field("Current password", current), field("New password", next, "At least 8 characters."), field("New password again", again), errors, h("div", { class: "actions" }, submit, h("button", { type: "button", onclick: () => ctx.signOut() }, "Sign out")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (next.value !== again.value) return errors.replaceChildren(errorBox({ message: "The two new passwords differ." }));
    busy(submit, errors, async () => {
      const answer = await post("/api/v1/account/password", { current_password: current.value, new_password: next.value });
      setCsrf(answer.csrf_token);
      await ctx.signedIn("/dashboard");
    });
  });
  page(main, "Change your password", h("p", {}, "Choose a new password before you continue. Every other session of your account ends."), form);
}

export function renderForgot(main) {
  const email = input("email", "email", "username", { autofocus: true });
  const errors = h("div");
  const submit = h("button", { class: "primary", type: "submit" }, "Send reset link");
  const form = h("form", { id: "forgot-form" }, field("Email", email), errors, h("div", { class: "actions" }, submit, link("/login", "Back to sign in")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, errors, async () => {
      await post("/api/v1/auth/forgot-password", { email: email.value.trim() });
      form.replaceWith(okBox("If this address has an account, a reset link is on its way. The link works once, for 10 minutes."), link("/login", "Back to sign in"));
    });
  });
  page(main, "Forgot your password?", form);
}

export function renderReset(main, ctx) {
  const token = ctx.query.get("token") || "";
  // The token leaves the address bar (and the history) at once.
  history.replaceState(null, "", "/reset-password");
  if (!token) return page(main, "Reset your password", errorBox({ message: "This link has no token. Ask for a new one." }), link("/forgot-password", "Ask for a new link"));
  const next = input("new_password", "password", "new-password", { minlength: 8, autofocus: true });
  const again = input("again", "password", "new-password", { minlength: 8 });
  const errors = h("div");
  const submit = h("button", { class: "primary", type: "submit" }, "Set password");
  const form = h("form", { id: "reset-form" }, field("New password", next, "At least 8 characters."), field("New password again", again), errors, h("div", { class: "actions" }, submit));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (next.value !== again.value) return errors.replaceChildren(errorBox({ message: "The two passwords differ." }));
    busy(submit, errors, async () => {
      await post("/api/v1/auth/reset-password", { token, new_password: next.value });
      form.replaceWith(okBox("Your password is set. Every session of your account ended."), link("/login", "Sign in"));
    });
  });
  page(main, "Reset your password", form);
}
