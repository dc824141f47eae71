//! The web console (UI-1): the portal as a browser app, served from assets compiled into the
//! binary at `/`, next to the API.
//!
//! The assets (`admin-api/console/`: hand-written HTML, CSS and ES modules, no build step) are
//! embedded with `include_str!`. At the first request each gets a name with its content's hash
//! (`app.3f9c…js`): assets are processed leaves first, and the references to earlier assets
//! (`"./api.js"` imports, `"/assets/app.css"` links) are rewritten to the hashed names before
//! the referring asset is hashed, so a change anywhere changes every name that leads to it.
//! Hashed assets are `immutable`; the shell (`index.html`, served for every console route) is
//! `no-cache`, so a new binary is picked up on the next load.
//!
//! Every console answer carries a strict Content-Security-Policy ([`CSP`]): scripts, styles,
//! images and fetches from this origin only, no inline script or style, no framing, no `<base>`,
//! no plugins. The console talks to the API only through its public routes with the session
//! cookie and the CSRF header (`cookies.rs`): it has no route of its own beyond these files.
//!
//! Routing ([`serve`], the router's fallback): `/api/…` paths no route matches stay the API's
//! JSON 404; `/assets/<hashed name>` is an asset; the console's own routes ([`is_console_route`])
//! answer the shell; anything else is the 404 page.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The Content-Security-Policy of every console answer.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
     object-src 'none'";

/// The console's sources, leaves first: an asset may refer only to assets listed before it.
const SOURCES: &[(&str, &str)] = &[
    ("app.css", include_str!("../console/app.css")),
    ("icon.svg", include_str!("../console/icon.svg")),
    ("api.js", include_str!("../console/api.js")),
    ("ui.js", include_str!("../console/ui.js")),
    ("enterprise.js", include_str!("../console/enterprise.js")),
    ("chart.js", include_str!("../console/chart.js")),
    ("page-login.js", include_str!("../console/page-login.js")),
    ("page-dashboard.js", include_str!("../console/page-dashboard.js")),
    ("page-commands.js", include_str!("../console/page-commands.js")),
    ("page-inventory.js", include_str!("../console/page-inventory.js")),
    ("page-firmware.js", include_str!("../console/page-firmware.js")),
    ("page-groups.js", include_str!("../console/page-groups.js")),
    ("page-orders.js", include_str!("../console/page-orders.js")),
    ("page-profiles.js", include_str!("../console/page-profiles.js")),
    ("page-devices.js", include_str!("../console/page-devices.js")),
    ("page-tasks.js", include_str!("../console/page-tasks.js")),
    ("page-sites.js", include_str!("../console/page-sites.js")),
    ("page-incidents.js", include_str!("../console/page-incidents.js")),
    ("page-windows.js", include_str!("../console/page-windows.js")),
    ("page-alarms.js", include_str!("../console/page-alarms.js")),
    ("strategy-receivers.js", include_str!("../console/strategy-receivers.js")),
    ("strategies-effective.js", include_str!("../console/strategies-effective.js")),
    ("page-strategies.js", include_str!("../console/page-strategies.js")),
    ("channel-strategies.js", include_str!("../console/channel-strategies.js")),
    ("page-tenants.js", include_str!("../console/page-tenants.js")),
    ("page-rps.js", include_str!("../console/page-rps.js")),
    ("page-sub-accounts.js", include_str!("../console/page-sub-accounts.js")),
    ("page-account.js", include_str!("../console/page-account.js")),
    ("page-oplog.js", include_str!("../console/page-oplog.js")),
    ("page-dead-letters.js", include_str!("../console/page-dead-letters.js")),
    ("page-nodes.js", include_str!("../console/page-nodes.js")),
    ("page-relays.js", include_str!("../console/page-relays.js")),
    ("app.js", include_str!("../console/app.js")),
];

/// The shell (every console route) and the 404 page; they refer to assets, are not assets.
const SHELL: &str = include_str!("../console/index.html");
const NOT_FOUND: &str = include_str!("../console/404.html");

/// The first path segments of the console's routes (the app's router knows the same list).
const ROUTES: &[&str] = &[
    "login",
    "forgot-password",
    "reset-password",
    "change-password",
    "dashboard",
    "devices",
    "groups",
    "tasks",
    "sites",
    "firmware",
    "profiles",
    "alarms",
    "strategies",
    "windows",
    "incidents",
    "tenants",
    "account",
    "operation-log",
    "device-imports",
    "sub-accounts",
    "channels",
    "orders",
    "statements",
    "rps",
    "dead-letters",
    "nodes",
    "relays",
];

/// One embedded asset, under its hashed name.
struct Asset {
    content_type: &'static str,
    body: String,
}

/// The console with every name hashed, built once.
struct Console {
    /// Hashed name → asset.
    assets: HashMap<String, Asset>,
    shell: String,
    not_found: String,
}

/// The console, built at the first request.
static CONSOLE: LazyLock<Console> = LazyLock::new(Console::build);

impl Console {
    fn build() -> Console {
        let mut names: Vec<(&'static str, String)> = Vec::new();
        let mut assets = HashMap::new();
        for (name, source) in SOURCES {
            let body = rewrite(source, &names);
            let hashed = hashed_name(name, &body);
            assets.insert(hashed.clone(), Asset { content_type: content_type(name), body });
            names.push((name, hashed));
        }
        Console { shell: rewrite(SHELL, &names), not_found: rewrite(NOT_FOUND, &names), assets }
    }
}

/// `source` with the references to the already hashed assets (`"./name"` imports and
/// `"/assets/name"` links, always double-quoted) replaced by their hashed names.
fn rewrite(source: &str, names: &[(&'static str, String)]) -> String {
    let mut out = source.to_owned();
    for (name, hashed) in names {
        out = out.replace(&format!("\"./{name}\""), &format!("\"./{hashed}\""));
        out = out.replace(&format!("\"/assets/{name}\""), &format!("\"/assets/{hashed}\""));
    }
    out
}

/// `app.js` → `app.<first 12 hex digits of SHA-256 of the body>.js`.
fn hashed_name(name: &str, body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let hash = crate::secrets::hex(&digest[..6]);
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{name}.{hash}"),
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// Whether `path` is one of the console's pages (the shell answers it).
pub(crate) fn is_console_route(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    let mut segments = rest.split('/');
    match (segments.next(), segments.next(), segments.next()) {
        (Some(""), None, None) => true,
        (Some(first), second, None) if ROUTES.contains(&first) => second
            .is_none_or(|s| s.is_empty() || s == "new" || (s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))),
        _ => false,
    }
}

/// The hashed name of a console source.
#[cfg(test)]
pub(crate) fn asset_name(source: &str) -> Option<String> {
    let (stem, ext) = source.rsplit_once('.')?;
    CONSOLE
        .assets
        .keys()
        .find(|k| k.len() == source.len() + 13 && k.starts_with(&format!("{stem}.")) && k.ends_with(&format!(".{ext}")))
        .cloned()
}

/// The headers every console answer carries.
fn secure(mut response: Response, cache: &'static str) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Reset links carry their token in the query string: never send it on.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

fn html(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], body).into_response()
}

/// The router's fallback: the API's JSON 404 under `/api`, else the console (an asset, the
/// shell for a console route, or the 404 page).
pub(crate) async fn serve(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        return ApiError::NotFound("route").into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return ApiError::MethodNotAllowed.into_response();
    }
    let console = &*CONSOLE;
    if let Some(name) = path.strip_prefix("/assets/") {
        return match console.assets.get(name) {
            Some(asset) => {
                let response = ([(header::CONTENT_TYPE, asset.content_type)], asset.body.as_str()).into_response();
                secure(response, "public, max-age=31536000, immutable")
            }
            None => secure(html(StatusCode::NOT_FOUND, &console.not_found), "no-cache"),
        };
    }
    if is_console_route(path) {
        return secure(html(StatusCode::OK, &console.shell), "no-cache");
    }
    secure(html(StatusCode::NOT_FOUND, &console.not_found), "no-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_routes_are_the_listed_pages_with_an_optional_id() {
        for ok in ["/", "/login", "/devices", "/devices/", "/devices/42", "/strategies/new", "/reset-password"] {
            assert!(is_console_route(ok), "{ok}");
        }
        for no in ["/nope", "/devices/x", "/devices/1/2", "/assets", "//", "/devices/123456789012345678901"] {
            assert!(!is_console_route(no), "{no}");
        }
    }

    #[test]
    fn every_page_of_the_apps_router_is_served_on_a_deep_link() {
        let app = SOURCES.iter().find(|(name, _)| *name == "app.js").expect("the app is a source").1;
        let mut pages = 0;
        for line in app.lines().map(str::trim_start).filter(|l| l.starts_with("[/^\\/")) {
            let first = line["[/^\\/".len()..].split(['\\', '$', '(']).next().unwrap_or_default();
            assert!(first.is_empty() || ROUTES.contains(&first), "/{first} is routed by app.js but not in ROUTES");
            pages += 1;
        }
        assert!(pages > 20, "the router's table was found ({pages} pages)");
    }

    #[test]
    fn references_are_rewritten_to_hashed_names_before_hashing() {
        let names = vec![("api.js", "api.0123456789ab.js".to_owned())];
        let out = rewrite("import { x } from \"./api.js\";\n<link href=\"/assets/api.js\">", &names);
        assert_eq!(out, "import { x } from \"./api.0123456789ab.js\";\n<link href=\"/assets/api.0123456789ab.js\">");
        let a = hashed_name("app.js", "one");
        assert!(a.starts_with("app.") && a.ends_with(".js") && a.len() == "app..js".len() + 12, "{a}");
        assert_ne!(a, hashed_name("app.js", "two"));
        // Every source referring to another refers to it by its hashed name.
        for (name, _) in SOURCES {
            let hashed = asset_name(name).expect("every source has a hashed name");
            let body = &CONSOLE.assets[&hashed].body;
            for (other, _) in SOURCES {
                assert!(!body.contains(&format!("\"./{other}\"")), "{name} still imports {other} unhashed");
            }
        }
        assert!(!CONSOLE.shell.contains("\"/assets/app.js\""), "the shell refers to hashed names");
    }
}
