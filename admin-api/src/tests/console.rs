//! The web console as the router serves it: the shell on console routes, hashed immutable
//! assets, the CSP on every console answer, the 404 page, the JSON 404 kept under `/api`; the
//! session route a reloaded page reads its CSRF token from; the dashboard's alarm summary; the
//! TOTP set-up's QR code.

use axum::http::{Method, StatusCode, header};
use fleetpulse_proto::domain::{AlarmChange, AlarmChangeKind, DeviceKey};
use fleetpulse_proto::{EnterpriseId, Mac, UnixMillis, alarm_types};
use fleetpulse_store::{EventBatch, NewDevice};
use serde_json::json;

use super::*;

fn header_of(reply: &Reply, name: header::HeaderName) -> &str {
    reply.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn assert_csp(reply: &Reply) {
    let csp = header_of(reply, header::CONTENT_SECURITY_POLICY);
    for directive in
        ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "object-src 'none'"]
    {
        assert!(csp.contains(directive), "{directive} missing from {csp:?}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(header_of(reply, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
}

#[tokio::test]
async fn the_console_is_served_with_hashed_assets_and_a_strict_csp() {
    let h = harness();
    let mut total = 0;
    for route in ["/", "/login", "/devices", "/devices/7", "/strategies/new", "/reset-password?token=abc"] {
        let shell = h.call(Method::GET, route, None, None).await;
        assert_eq!(shell.status, StatusCode::OK, "{route}");
        assert!(header_of(&shell, header::CONTENT_TYPE).starts_with("text/html"), "{route}");
        assert_eq!(header_of(&shell, header::CACHE_CONTROL), "no-cache", "{route}");
        assert_eq!(header_of(&shell, header::REFERRER_POLICY), "no-referrer", "{route}");
        assert_csp(&shell);
        total = shell.body.len();
    }
    let shell = h.call(Method::GET, "/", None, None).await.text();
    assert!(!shell.contains("<script>") && !shell.contains("style="), "no inline script or style");
    // Every asset the shell names is served, immutable; the app imports the rest by hashed name.
    let app = crate::console::asset_name("app.js").expect("app.js");
    assert!(shell.contains(&format!("\"/assets/{app}\"")), "the shell loads the hashed app");
    let mut pending = vec![app, crate::console::asset_name("app.css").expect("app.css")];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let asset = h.call(Method::GET, &format!("/assets/{name}"), None, None).await;
        assert_eq!(asset.status, StatusCode::OK, "{name}");
        assert_eq!(header_of(&asset, header::CACHE_CONTROL), "public, max-age=31536000, immutable");
        assert_csp(&asset);
        total += asset.body.len();
        let text = asset.text();
        for import in text.split("from \"./").skip(1) {
            pending.push(import.split('"').next().expect("a quoted name").to_owned());
        }
    }
    assert!(seen.len() >= 10, "every module is reachable from the app: {seen:?}");
    assert!(total < 300 * 1024, "first load {total} bytes");

    for missing in ["/assets/app.js", "/assets/nope.0123.js", "/nope", "/devices/abc"] {
        let reply = h.call(Method::GET, missing, None, None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{missing}");
        assert!(reply.text().contains("Page not found"), "{missing}: the 404 page");
        assert_csp(&reply);
    }
    h.call(Method::GET, "/api/v1/nope", None, None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    h.call(Method::GET, "/api", None, None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    h.call(Method::POST, "/devices", None, None)
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn a_reloaded_page_reads_its_session_and_csrf_token_again() {
    let h = harness();
    let bearer = h.admin_token().await;
    let body = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "cookie": true});
    let login = h.call(Method::POST, "/api/v1/auth/login", None, Some(body)).await;
    let csrf = login.json()["csrf_token"].as_str().expect("csrf").to_owned();
    let cookie = header_of(&login, header::SET_COOKIE).split(';').next().expect("pair").to_owned();
    let req = Request::builder().uri("/api/v1/auth/session").header(header::COOKIE, &cookie).body(Body::empty());
    let session = h.send(req.expect("request")).await;
    assert_eq!(session.status, StatusCode::OK, "{}", session.text());
    let session = session.json();
    assert_eq!(session["csrf_token"], json!(csrf), "the same token the login gave");
    assert_eq!((&session["account"]["email"], &session["must_change_password"]), (&json!(ADMIN_EMAIL), &json!(false)));
    assert_eq!(
        (&session["acting"], &session["time_zone"], &session["features"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    // A bearer session has no CSRF token; no session is 401.
    assert_eq!(h.get("/api/v1/auth/session", &bearer).await.json()["csrf_token"], Value::Null);
    h.call(Method::GET, "/api/v1/auth/session", None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // An enterprise account sees its enterprise's time zone; before its first password change
    // it may read its session (and nothing else).
    let e = h
        .call(
            Method::POST,
            "/api/v1/enterprises",
            Some(&bearer),
            Some(json!({"name": "Zoned", "time_zone": "Asia/Tokyo"})),
        )
        .await;
    let e = e.json()["id"].as_u64().expect("id");
    let account =
        json!({"email": "e@example.com", "password": "first-password", "role": "enterprise_admin", "enterprise_id": e});
    assert_eq!(
        h.call(Method::POST, "/api/v1/accounts", Some(&bearer), Some(account)).await.status,
        StatusCode::CREATED
    );
    let token = h.login("e@example.com", "first-password").await.json()["token"].as_str().expect("token").to_owned();
    let session = h.get("/api/v1/auth/session", &token).await.json();
    assert_eq!((&session["must_change_password"], &session["enterprise_id"]), (&json!(true), &json!(e)));
    assert_eq!(session["time_zone"], json!("Asia/Tokyo"));
    h.get("/api/v1/devices", &token).await.assert_error(StatusCode::FORBIDDEN, "password_change_required");
}

#[tokio::test]
async fn the_alarm_summary_counts_by_severity_and_time() {
    let h = harness();
    let token = h.admin_token().await;
    let e = h.call(Method::POST, "/api/v1/enterprises", Some(&token), Some(json!({"name": "a"}))).await.json()["id"]
        .as_u64()
        .expect("id");
    let now = h.clock.now().0;
    let mut changes = Vec::new();
    for (i, (code, ago_h)) in
        [(alarm_types::OFFLINE, 1), (alarm_types::OFFLINE, 5), (alarm_types::OFFLINE, 30)].iter().enumerate()
    {
        let new = NewDevice {
            enterprise_id: EnterpriseId(e),
            key: DeviceKey::Mac(Mac::parse(&format!("00156500000{i}")).expect("mac")),
            serial: None,
            model: "T54W".into(),
            firmware: "1.0".into(),
            at: UnixMillis(1),
        };
        let device = h.store.entities.register_device(new).await.expect("register").device.id;
        changes.push(AlarmChange {
            device_id: device,
            enterprise_id: EnterpriseId(e),
            code: *code,
            at: UnixMillis(now - ago_h * 3_600_000),
            kind: AlarmChangeKind::Raise { description: "gone".into() },
        });
    }
    h.store.events.append(EventBatch { alarm_changes: changes, ..EventBatch::default() }).await.expect("append");
    let first = h.get("/api/v1/alarms?limit=1", &token).await.json()["items"][0]["id"].as_u64().expect("id");
    assert_eq!(
        h.call(Method::POST, &format!("/api/v1/alarms/{first}/acknowledge"), Some(&token), None).await.status,
        StatusCode::OK
    );

    let s = h.get("/api/v1/alarms/summary", &token).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text());
    let s = s.json();
    assert_eq!(s["active"], json!({"critical": 2, "major": 0, "minor": 0}), "{s}");
    assert_eq!(s["acknowledged"], json!({"critical": 1, "major": 0, "minor": 0}), "{s}");
    let series = s["series"].as_array().expect("series");
    assert_eq!((series.len(), &s["bucket_ms"], &s["truncated"]), (24, &json!(3_600_000), &json!(false)));
    let counted: u64 = series.iter().map(|b| b["counts"]["critical"].as_u64().expect("count")).sum();
    assert_eq!(counted, 2, "the alarm 30 hours ago is outside the default 24 hours: {s}");
    // The window is [now - 24 h, now) in hours: one hour ago opens the last bucket.
    assert_eq!(series[23]["counts"]["critical"], json!(1), "{s}");
    assert_eq!(series[19]["counts"]["critical"], json!(1), "{s}");
    let other = h.get(&format!("/api/v1/alarms/summary?enterprise_id={}", e + 1), &token).await.json();
    assert_eq!(other["active"], json!({"critical": 0, "major": 0, "minor": 0}));
    h.get("/api/v1/alarms/summary?buckets=0", &token).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    h.get("/api/v1/alarms/summary?from=10&to=5", &token).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn the_totp_setup_answers_its_uri_as_an_svg_qr_code() {
    let h = harness();
    let token = h.admin_token().await;
    let setup = h.call(Method::POST, "/api/v1/account/totp/setup", Some(&token), None).await.json();
    let uri = setup["otpauth_uri"].as_str().expect("otpauth_uri");
    let svg = setup["qr_svg"].as_str().expect("qr_svg");
    // An SVG document with nothing but shapes in it.
    assert!(svg.starts_with("<?xml") && svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{svg}");
    assert!(!svg.contains("<script") && !svg.contains("style") && !svg.contains("href"), "{svg}");
    // A QR code of version v is 17 + 4v modules wide, plus the 4-module quiet zone each side,
    // drawn 4 px per module: the size says it is a real code, of a version the URI needs.
    let width: u32 = svg
        .split("width=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|w| w.parse().ok())
        .expect("a width");
    let modules = width / 4 - 8;
    assert_eq!((width % 4, (modules - 17) % 4), (0, 0), "{width}");
    assert!((5..=10).contains(&((modules - 17) / 4)), "version of a ~100-character URI: {modules} modules");
    // The path draws exactly the dark modules of the URI's QR code, inside the quiet zone.
    let code = qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M).expect("a QR code");
    let n = code.width();
    assert_eq!(n as u32, modules);
    let mut drawn = vec![qrcode::Color::Light; n * n];
    let d = svg.split(" d=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("a path");
    for segment in d.split('M').skip(1) {
        let (xy, rest) = segment.split_once('h').expect("M x y h run");
        let (x, y) = xy.split_once(' ').expect("x y");
        let (x, y): (usize, usize) = (x.parse().expect("x"), y.parse().expect("y"));
        let run: usize = rest.split('v').next().and_then(|r| r.parse().ok()).expect("run");
        assert!(x >= 4 && y >= 4 && x + run <= n + 4 && y < n + 4, "{segment} outside the code");
        for cell in &mut drawn[(y - 4) * n + x - 4..(y - 4) * n + x - 4 + run] {
            *cell = qrcode::Color::Dark;
        }
    }
    assert!(drawn == code.to_colors(), "the SVG is not the URI's QR code");
    // Each setup is a fresh secret, so a fresh code.
    let again = h.call(Method::POST, "/api/v1/account/totp/setup", Some(&token), None).await.json();
    assert_ne!(again["qr_svg"], setup["qr_svg"]);
}
