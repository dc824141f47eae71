// The console's shell: the router (history API; the server answers the same shell for every
// console route), the session, the navigation, the latest-alarms bell, and error collection.

import { get, post, session as loadSession, setCsrf } from "./api.js";
import { announce, badge, fmtTime, h, mount, setTimeZone } from "./ui.js";
import * as login from "./page-login.js";
import * as dashboard from "./page-dashboard.js";
import * as devices from "./page-devices.js";
import * as alarms from "./page-alarms.js";
import * as strategies from "./page-strategies.js";
import * as windows from "./page-windows.js";
import * as incidents from "./page-incidents.js";
import * as tenants from "./page-tenants.js";
import * as account from "./page-account.js";
import * as oplog from "./page-oplog.js";
import * as tasks from "./page-tasks.js";
import * as inventory from "./page-inventory.js";
import * as subAccounts from "./page-sub-accounts.js";
import * as rps from "./page-rps.js";
import * as sites from "./page-sites.js";
import * as firmware from "./page-firmware.js";
import * as groups from "./page-groups.js";
import * as orders from "./page-orders.js";
import * as profiles from "./page-profiles.js";
import * as deadLetters from "./page-dead-letters.js";
import * as nodes from "./page-nodes.js";
import * as relays from "./page-relays.js";

// Uncaught errors, for people (the console) and for the browser tests (window.__errors).
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(String(e.message || e)));
window.addEventListener("unhandledrejection", (e) => window.__errors.push(String((e.reason && e.reason.message) || e.reason)));

const PUBLIC = { "/login": login.renderLogin, "/forgot-password": login.renderForgot, "/reset-password": login.renderReset };

/** Route table: [pattern, page, feature]; `:id` is a number. */
const ROUTES = [
  [/^\/change-password$/, login.renderChangePassword, null],
  [/^\/dashboard$/, dashboard.render, "devices"],
  [/^\/devices$/, devices.renderList, "devices"],
  [/^\/devices\/(\d+)$/, devices.renderDetail, "devices"],
  [/^\/alarms$/, alarms.renderList, "alarms"],
  [/^\/alarms\/(\d+)$/, alarms.renderDetail, "alarms"],
  [/^\/tasks$/, tasks.renderList, "devices"],
  [/^\/tasks\/(\d+)$/, tasks.renderDetail, "devices"],
  [/^\/sites$/, sites.renderList, "devices"],
  [/^\/sites\/(\d+)$/, sites.renderEdit, "devices"],
  [/^\/firmware$/, firmware.render, "devices"],
  [/^\/groups$/, groups.renderList, "devices"],
  [/^\/groups\/(\d+)$/, groups.renderDetail, "devices"],
  [/^\/profiles$/, profiles.renderList, "devices"],
  [/^\/profiles\/(\d+)$/, profiles.renderDetail, "devices"],
  [/^\/strategies$/, strategies.renderList, "strategies"],
  [/^\/strategies\/new$/, strategies.renderEdit, "strategies"],
  [/^\/strategies\/(\d+)$/, strategies.renderEdit, "strategies"],
  [/^\/windows$/, windows.renderList, "strategies"],
  [/^\/windows\/new$/, windows.renderEdit, "strategies"],
  [/^\/windows\/(\d+)$/, windows.renderEdit, "strategies"],
  [/^\/incidents$/, incidents.renderList, "alarms"],
  [/^\/incidents\/(\d+)$/, incidents.renderDetail, "alarms"],
  [/^\/tenants$/, tenants.render, null],
  [/^\/devices\/new$/, inventory.renderAdd, "devices"],
  [/^\/device-imports$/, inventory.renderImports, "devices"],
  [/^\/device-imports\/(\d+)$/, inventory.renderImport, "devices"],
  [/^\/sub-accounts$/, subAccounts.render, null],
  [/^\/rps$/, rps.render, "devices"],
  [/^\/channels\/(\d+)$/, tenants.renderChannel, "channels"],
  [/^\/account$/, account.render, null],
  [/^\/operation-log$/, oplog.render, "operation_log"],
  [/^\/orders$/, orders.renderOrders, "orders"],
  [/^\/statements$/, orders.renderStatements, "orders"],
  [/^\/dead-letters$/, deadLetters.render, "platform"],
  [/^\/nodes$/, nodes.render, "platform"],
  [/^\/relays$/, relays.render, "devices"],
];

const NAV = [
  ["/dashboard", "Dashboard", "devices"],
  ["/devices", "Devices", "devices"],
  ["/groups", "Device groups", "devices"],
  ["/tasks", "Scheduled tasks", "devices"],
  ["/sites", "Sites", "devices"],
  ["/firmware", "Firmware", "devices"],
  ["/profiles", "Configuration profiles", "devices"],
  ["/rps", "RPS devices", "devices"],
  ["/relays", "Relays", "devices"],
  ["/alarms", "Alarms", "alarms"],
  ["/strategies", "Alarm strategies", "strategies"],
  ["/windows", "Maintenance windows", "strategies"],
  ["/incidents", "Site incidents", "alarms"],
  ["/tenants", "Tenants", null],
  ["/sub-accounts", "Sub-accounts", "full-account"],
  ["/operation-log", "Operation log", "operation_log"],
  ["/orders", "Orders", "orders"],
  ["/statements", "Statements", "orders"],
  ["/dead-letters", "Dead letters", "platform"],
  ["/nodes", "Nodes", "platform"],
  ["/account", "Account settings", null],
];

const state = { session: null, cleanup: null };
const main = document.getElementById("main");
const app = document.getElementById("app");

function allowed(feature) {
  const s = state.session;
  if (!s || !feature) return true;
  if (feature === "full-account") return !s.features && !s.acting;
  if (feature === "platform") return s.account.role === "platform_admin" && !s.acting && !s.features;
  return !s.features || s.features.includes(feature);
}

function navigate(path, replace) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  route();
}

async function signedIn(next) {
  state.session = await loadSession();
  if (!state.session) return navigate("/login", true);
  setTimeZone(state.session.time_zone);
  renderChrome();
  if (state.session.must_change_password) return navigate("/change-password", true);
  navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/dashboard", true);
}

async function signOut() {
  try {
    await post("/api/v1/auth/logout");
  } catch (_) {
    /* the session may be gone already */
  }
  setCsrf(null);
  state.session = null;
  stopBell();
  navigate("/login", true);
  announce("Signed out");
}

function renderChrome() {
  const s = state.session;
  const top = document.getElementById("topbar");
  const side = document.getElementById("sidebar");
  const bare = !s || s.must_change_password;
  app.classList.toggle("bare", bare);
  top.hidden = bare;
  side.hidden = bare;
  if (bare) return;
  const acting = s.acting ? Object.entries(s.acting)[0] : null;
  mount(
    top,
    h("a", { class: "brand", href: "/dashboard", "data-link": "" }, "fleetpulse"),
    acting ? h("span", { class: "acting", id: "acting" }, `Acting as ${acting[0]} #${acting[1]}`) : null,
    allowed("alarms") ? bellButton() : null,
    h("span", { class: "who", id: "who" }, s.account.email, " · ", s.account.role.replace(/_/g, " ")),
    h("button", { type: "button", id: "logout", onclick: signOut }, acting ? "Stop acting (sign out)" : "Sign out"),
  );
  mount(
    side,
    NAV.filter(([, , f]) => allowed(f)).map(([path, label]) => h("a", { href: path, "data-link": "" }, label)),
  );
  startBell();
}

function markNav() {
  for (const a of document.querySelectorAll("#sidebar a")) {
    const here = location.pathname === a.getAttribute("href") || location.pathname.startsWith(a.getAttribute("href") + "/");
    if (here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function route() {
  if (state.cleanup) state.cleanup();
  state.cleanup = null;
  const path = location.pathname.replace(/\/+$/, "") || "/";
  const query = new URLSearchParams(location.search);
  if (PUBLIC[path]) {
    if (state.session && !state.session.must_change_password && path === "/login") return navigate("/dashboard", true);
    app.classList.add("bare");
    document.getElementById("topbar").hidden = true;
    document.getElementById("sidebar").hidden = true;
    state.cleanup = PUBLIC[path](main, { query, signedIn, navigate }) || null;
    return focusMain();
  }
  if (!state.session) return navigate("/login" + (path === "/" ? "" : "?next=" + encodeURIComponent(path + location.search)), true);
  if (state.session.must_change_password && path !== "/change-password") return navigate("/change-password", true);
  if (path === "/") return navigate("/dashboard", true);
  for (const [pattern, page, feature] of ROUTES) {
    const m = pattern.exec(path);
    if (!m) continue;
    if (!allowed(feature)) {
      mount(main, h("h1", {}, "Not available"), h("p", {}, "This account may not use this page."));
      return focusMain();
    }
    markNav();
    // A page answers its cleanup function, or nothing (whatever else it returns is ignored).
    const cleanup = page(main, { id: m[1], query, session: state.session, navigate, signedIn, signOut });
    state.cleanup = typeof cleanup === "function" ? cleanup : null;
    return focusMain();
  }
  mount(main, h("h1", {}, "Page not found"), h("p", {}, "There is no console page at this address."), h("a", { href: "/dashboard", "data-link": "" }, "Go to the dashboard"));
  focusMain();
}

function focusMain() {
  const heading = main.querySelector("h1");
  document.title = (heading ? heading.textContent + " · " : "") + "fleetpulse";
  main.focus({ preventScroll: true });
}

// The latest-alarms bell: polls /api/v1/alarms/latest while the page is visible, one request at
// a time, every 15 s (backing off to 2 min on errors; stopping when signed out).
const bell = { timer: null, delay: 15000, inflight: false, items: [], unread: 0, open: false };
const SEEN_KEY = "fp.alarms.seen";

function bellButton() {
  const button = h("button", { type: "button", class: "bell", id: "bell", "aria-haspopup": "true", "aria-expanded": "false", onclick: toggleBell }, "Alarms", h("span", { class: "count", id: "bell-count", hidden: true }));
  return h("span", {}, button, h("div", { class: "popover", id: "bell-list", hidden: true }));
}

function startBell() {
  stopBell();
  bell.delay = 15000;
  pollBell();
}

function stopBell() {
  clearTimeout(bell.timer);
  bell.timer = null;
}

async function pollBell() {
  if (!state.session || !allowed("alarms")) return;
  if (!document.hidden && !bell.inflight) {
    bell.inflight = true;
    try {
      const since = Number(localStorage.getItem(SEEN_KEY)) || undefined;
      const feed = await get("/api/v1/alarms/latest", { limit: 10, since });
      bell.items = feed.items;
      bell.unread = feed.unread;
      bell.delay = 15000;
      paintBell();
    } catch (e) {
      if (e.status === 401 || e.status === 403) return;
      bell.delay = Math.min(bell.delay * 2, 120000);
    } finally {
      bell.inflight = false;
    }
  }
  bell.timer = setTimeout(pollBell, bell.delay);
}

function paintBell() {
  const count = document.getElementById("bell-count");
  if (count) {
    count.hidden = bell.unread === 0;
    count.textContent = String(bell.unread);
    document.getElementById("bell").setAttribute("aria-label", `Latest alarms, ${bell.unread} new`);
  }
  const list = document.getElementById("bell-list");
  if (list && bell.open) {
    mount(
      list,
      bell.items.length
        ? h("ul", {}, bell.items.map((a) => h("li", {}, badge(a.severity), " ", h("a", { href: `/alarms/${a.id}`, "data-link": "" }, a.name), h("div", { class: "muted" }, `Device #${a.device_id} · ${fmtTime(a.latest_at)}`))))
        : h("p", { class: "empty" }, "No alarms yet."),
      h("p", { class: "pager" }, h("a", { href: "/alarms", "data-link": "" }, "All alarms")),
    );
  }
}

function toggleBell() {
  bell.open = !bell.open;
  const list = document.getElementById("bell-list");
  const button = document.getElementById("bell");
  list.hidden = !bell.open;
  button.setAttribute("aria-expanded", String(bell.open));
  if (bell.open) {
    paintBell();
    const newest = bell.items.reduce((m, a) => Math.max(m, a.latest_at), 0);
    if (newest) localStorage.setItem(SEEN_KEY, String(newest));
    bell.unread = 0;
    document.getElementById("bell-count").hidden = true;
  }
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-link]");
  if (a && e.button === 0 && !e.metaKey && !e.ctrlKey && !e.shiftKey && !e.altKey) {
    e.preventDefault();
    if (bell.open) toggleBell();
    navigate(a.getAttribute("href"));
  }
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && bell.open) toggleBell();
});
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && state.session && bell.timer) {
    stopBell();
    pollBell();
  }
});
window.addEventListener("popstate", route);
window.addEventListener("fp:navigate", (e) => navigate(e.detail));
window.addEventListener("fp:signed-out", () => {
  state.session = null;
  stopBell();
  if (!PUBLIC[location.pathname]) navigate("/login?next=" + encodeURIComponent(location.pathname + location.search), true);
});
window.addEventListener("fp:password-change", () => {
  if (state.session) state.session.must_change_password = true;
  navigate("/change-password", true);
});

async function boot() {
  try {
    state.session = await loadSession();
  } catch (e) {
    mount(main, h("h1", {}, "The console could not start"), h("div", { class: "alert error", role: "alert" }, e.message));
    return;
  }
  if (state.session) setTimeZone(state.session.time_zone);
  else setTimeZone(null);
  renderChrome();
  await route();
  document.documentElement.dataset.ready = "true";
}

boot();
