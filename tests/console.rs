//! The web console in a real browser (UI-1): headless Chromium driven through chromedriver
//! against the real binary with a seeded fleet. Each flow saves screenshots under
//! `<target>/console-screenshots/`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::alarms::{acked, alarm, device, outbox_read_only, strategy};
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, Api, RawDevice, TestServer};
use fleetpulse_proto::wire::{Message, ResourceReport};
use fleetpulse_testkit::browser::Browser;
use serde_json::{Value, json};

/// `<target>/console-screenshots/<name>.png` (the target directory the binary was built in).
fn shot(name: &str) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_fleetpulse"));
    let target = bin.parent().and_then(|p| p.parent()).expect("target/<profile>/fleetpulse");
    target.join("console-screenshots").join(format!("{name}.png"))
}

/// No uncaught error in the page, no error in the browser's console (HTTP error answers the
/// console handles, such as the 401 of the session probe before login, are not errors of the page).
async fn assert_clean(b: &Browser) {
    let errors = b.execute("return window.__errors || ['the app did not start'];", json!([])).await;
    assert_eq!(errors, json!([]), "uncaught errors in the console");
    let severe: Vec<_> = b
        .console_log()
        .await
        .into_iter()
        .filter(|(level, source, _)| level == "SEVERE" && source != "network")
        .collect();
    assert!(severe.is_empty(), "browser console errors: {severe:?}");
}

async fn sign_in(b: &Browser, server: &TestServer, email: &str, password: &str) {
    b.goto(&format!("{}/login", server.api())).await;
    b.type_into("#login-form input[name=email]", email).await;
    b.type_into("#login-form input[name=password]", password).await;
    b.click_on("#login-submit").await;
}

/// Waits until the API's dashboard shows `online` devices online.
async fn wait_online(api: &Api, online: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while api.get("/api/v1/dashboard").await["online"] != json!(online) {
        assert!(Instant::now() < deadline, "devices did not come online");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A bearer session of an account created with a first password, after its forced change.
async fn first_login(api: &Api, email: &str, first: &str, second: &str) -> String {
    let c = &api.client;
    let login: Value = c
        .post(format!("{}/api/v1/auth/login", api.base))
        .json(&json!({"email": email, "password": first}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().expect("token");
    let changed: Value = c
        .post(format!("{}/api/v1/account/password", api.base))
        .bearer_auth(token)
        .json(&json!({"current_password": first, "new_password": second}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    changed["token"].as_str().expect("a fresh token").to_owned()
}

/// Chooses `value` in the `<select>` matching `css` as a person would (the change event fires).
async fn choose(b: &Browser, css: &str, value: &str) {
    b.find(css).await;
    let chosen = b
        .execute(
            "const s = document.querySelector(arguments[0]); s.value = arguments[1];
             s.dispatchEvent(new Event('change', {bubbles: true})); return s.value;",
            json!([css, value]),
        )
        .await;
    assert_eq!(chosen, json!(value), "{css} has no option {value}");
}

/// Scrolls the element matching `css` into view (for the screenshot that follows).
async fn show(b: &Browser, css: &str) {
    b.execute("document.querySelector(arguments[0]).scrollIntoView({block: 'start'});", json!([css])).await;
}

async fn post_as(api: &Api, token: &str, path: &str) {
    let r = api.client.post(format!("{}{path}", api.base)).bearer_auth(token).json(&json!({})).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_walks_the_portal_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (acme, credential) = api.enterprise("Acme").await;
    // A seeded fleet: three phones online, one raising an alarm and reporting CPU and memory.
    let mut fleet = Vec::new();
    for i in 1..=3 {
        fleet.push(device(&server, &credential, &format!("00156500000{i}")).await);
    }
    let resources = |seq, cpu| {
        RawDevice::data(
            seq,
            Message::ResourceReport(ResourceReport {
                cpu_centi_pct: cpu,
                mem_used_bytes: 300 << 20,
                mem_total_bytes: 1 << 30,
            }),
        )
    };
    fleet[0].send(&[alarm(1, 105, true, "segfault in app"), resources(2, 2500), resources(3, 4200)]).await;
    acked(&mut fleet[0], 3).await;
    wait_online(&api, 3).await;
    // A channel with an enterprise that authorized it (TEN-3), and the channel's admin.
    let channel = api.post("/api/v1/channels", json!({"name": "Resellers"})).await["id"].as_u64().unwrap();
    let inside =
        api.post("/api/v1/enterprises", json!({"name": "Globex", "channel_id": channel})).await["id"].as_u64().unwrap();
    api.post("/api/v1/accounts", json!({"email": "reseller@example.com", "password": "first-password", "role": "channel_admin", "channel_id": channel})).await;
    api.post("/api/v1/accounts", json!({"email": "globex@example.com", "password": "first-password", "role": "enterprise_admin", "enterprise_id": inside})).await;
    let reseller = first_login(&api, "reseller@example.com", "first-password", "reseller-password").await;
    post_as(&api, &reseller, &format!("/api/v1/enterprises/{inside}/authorization")).await;
    let globex = first_login(&api, "globex@example.com", "first-password", "globex-password").await;
    post_as(&api, &globex, &format!("/api/v1/enterprises/{inside}/authorization/accept")).await;

    let b = Browser::start().await;
    // Login → dashboard.
    b.goto(&server.api()).await;
    b.wait_path("/login").await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    b.wait_text("#tile-online", "3 / 3").await;
    b.wait_text("#severity-tiles", "Active critical").await;
    b.find("svg.chart rect.critical").await;
    b.screenshot(&shot("01-dashboard")).await;
    assert_clean(&b).await;

    // Filter devices → open one.
    b.click_on("#sidebar a[href='/devices']").await;
    b.wait_text("#device-total", "3 devices").await;
    b.type_into("#device-filters input[name=q]", "001565000001").await;
    b.click_on("#device-filters button[type=submit]").await;
    b.wait_text("#device-total", "1 device match").await;
    b.click_on("#save-label").await;
    b.type_into("#label-form input[name=label_name]", "first phone").await;
    b.click_on("#label-form button[type=submit]").await;
    b.wait_text("#labels", "first phone").await;
    b.screenshot(&shot("02-devices-filtered")).await;
    b.click_on("#device-list td a").await;
    b.wait_text("#device-status", "T54W").await;
    b.click_on("#tab-1").await;
    b.find("#panel-1 svg.chart path.line").await;
    b.click_on("#tab-3").await;
    b.find("#command-form").await;
    b.click_on("#tab-2").await;
    b.wait_text("#panel-2", "Application crash").await;
    b.screenshot(&shot("03-device-alarms")).await;

    // Acknowledge an alarm; the latest-alarms indicator knows it.
    b.click_on("#panel-2 td a").await;
    b.wait_text("#alarm-status", "active").await;
    b.click_on("#acknowledge").await;
    b.wait_text("#alarm-status", "acknowledged").await;
    b.wait_text("#bell", "Alarms").await;
    b.screenshot(&shot("04-alarm-acknowledged")).await;
    let records = api.get(&format!("/api/v1/alarms?enterprise_id={acme}")).await;
    assert_eq!(records["items"][0]["status"], json!("acknowledged"), "{records}");

    // Create a strategy: the API's validation message first, then saved with a typed address and
    // a ticked account of the enterprise (ALM-3), shown by name.
    let lead = json!({"email": "lead@acme.example", "password": "first-password", "role": "enterprise_admin",
        "enterprise_id": acme});
    let lead = api.post("/api/v1/accounts", lead).await["id"].as_u64().unwrap();
    b.goto(&format!("{}/strategies/new?enterprise_id={acme}", server.api())).await;
    b.type_into("#strategy-form input[name=name]", "night shift").await;
    b.type_into("#strategy-form textarea[name=receivers]", "not an address").await;
    b.click_on("#save-strategy").await;
    b.wait_text("#strategy-errors", "is not an email address").await;
    b.type_into("#strategy-form textarea[name=receivers]", "noc@example.com").await;
    b.click_on(&format!("#receiver-accounts input[name=account_{lead}]")).await;
    b.click_on("#save-strategy").await;
    b.wait_path("/strategies").await;
    b.wait_text("#strategy-list", "night shift").await;
    b.wait_text("#strategy-list", "noc@example.com, lead@acme.example").await;
    b.wait_text("#effective-strategies", "lead@acme.example").await;
    b.screenshot(&shot("05-strategies")).await;
    let stored = api.get(&format!("/api/v1/enterprises/{acme}/alarm-strategies")).await;
    let receivers = json!([{"email": "noc@example.com"}, {"account": lead}]);
    assert_eq!(stored["items"][0]["settings"]["receivers"], receivers, "{stored}");
    assert_clean(&b).await;

    // Log out; the channel's admin signs in and acts as its enterprise.
    b.click_on("#logout").await;
    b.wait_path("/login").await;
    sign_in(&b, &server, "reseller@example.com", "reseller-password").await;
    b.wait_path("/dashboard").await;
    b.click_on("#sidebar a[href='/tenants']").await;
    b.click_on(&format!("button.act[data-enterprise='{inside}']")).await;
    b.wait_text("#acting", &format!("Acting as enterprise #{inside}")).await;
    b.wait_text("#dash-devices", "No devices yet").await;
    b.screenshot(&shot("06-acting")).await;
    let session = b
        .execute_async(
            "fetch('/api/v1/auth/session').then(r => r.json()).then(arguments[arguments.length - 1]);",
            json!([]),
        )
        .await;
    assert_eq!(session["acting"], json!({"enterprise": inside}), "{session}");
    assert_clean(&b).await;
    b.click_on("#logout").await;
    b.wait_path("/login").await;
    let status = b
        .execute_async("fetch('/api/v1/auth/session').then(r => arguments[arguments.length - 1](r.status));", json!([]))
        .await;
    assert_eq!(status, json!(401), "logged out");
    b.quit().await;
    drop(fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_and_the_first_password_change_are_seen_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (acme, _) = api.enterprise("Acme").await;
    for email in ["locked@example.com", "fresh@example.com"] {
        api.post(
            "/api/v1/accounts",
            json!({"email": email, "password": "first-password", "role": "enterprise_admin", "enterprise_id": acme}),
        )
        .await;
    }
    let b = Browser::start().await;
    // Ten wrong passwords lock the account: the right one is then refused too.
    b.goto(&format!("{}/login", server.api())).await;
    for i in 0..10 {
        b.type_into("#login-form input[name=email]", "locked@example.com").await;
        b.type_into("#login-form input[name=password]", &format!("wrong-password-{i}")).await;
        b.click_on("#login-submit").await;
        b.wait_text("#login-error", "Wrong email or password").await;
        b.execute("document.getElementById('login-error').replaceChildren();", json!([])).await;
    }
    b.type_into("#login-form input[name=password]", "first-password").await;
    b.click_on("#login-submit").await;
    b.wait_text("#login-error", "locked").await;
    b.find("#lock-hint").await;
    b.screenshot(&shot("07-lockout")).await;
    assert!(b.url().await.ends_with("/login"), "still at the login page");

    // A new account must change its password before anything else.
    b.type_into("#login-form input[name=email]", "fresh@example.com").await;
    b.type_into("#login-form input[name=password]", "first-password").await;
    b.click_on("#login-submit").await;
    b.wait_path("/change-password").await;
    b.screenshot(&shot("08-first-password-change")).await;
    b.type_into("#password-form input[name=current_password]", "first-password").await;
    b.type_into("#password-form input[name=new_password]", "a-better-password").await;
    b.type_into("#password-form input[name=again]", "a-better-password").await;
    b.click_on("#password-form button[type=submit]").await;
    b.wait_path("/dashboard").await;
    b.wait_text("#who", "fresh@example.com").await;
    // A reload keeps the session (the CSRF token comes again from GET /api/v1/auth/session).
    b.goto(&format!("{}/account", server.api())).await;
    b.wait_text("#settings-form", "Contact").await;
    b.type_into("#settings-form input[name=contact_name]", "Fresh Admin").await;
    b.click_on("#settings-form button[type=submit]").await;
    b.wait_text("#account-notice", "Settings saved").await;
    assert_clean(&b).await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_enforces_csrf_and_csp_and_shows_a_404_page() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let page = reqwest::get(format!("{}/dashboard", server.api())).await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    for directive in ["default-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "object-src 'none'"] {
        assert!(csp.contains(directive), "{csp}");
    }
    let b = Browser::start().await;
    // First load, cold: every byte the console needs, and when it was interactive.
    b.goto(&format!("{}/login", server.api())).await;
    b.find("#login-form").await;
    let timing = b
        .execute(
            "const n = performance.getEntriesByType('navigation')[0];
             const r = performance.getEntriesByType('resource').filter(e => e.name.includes('/assets/'));
             return {shell: n.transferSize, body: n.encodedBodySize, assets: r.reduce((s, e) => s + e.encodedBodySize, 0),
                     count: r.length, interactive: n.domInteractive, loaded: n.loadEventEnd};",
            json!([]),
        )
        .await;
    let bytes = timing["body"].as_u64().unwrap() + timing["assets"].as_u64().unwrap();
    println!("console first load: {bytes} bytes in {} files; {timing}", timing["count"]);
    assert!(bytes <= 300 * 1024, "first load {bytes} bytes");
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    // The session cookie alone changes nothing: a fetch without the CSRF header is refused.
    let refused = b
        .execute_async(
            "fetch('/api/v1/enterprises', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{\"name\": \"Forged\"}'})
               .then(r => r.json().then(j => arguments[arguments.length - 1]({status: r.status, code: j.error.code})));",
            json!([]),
        )
        .await;
    assert_eq!(refused, json!({"status": 403, "code": "csrf_failed"}));
    // The console itself sends it: the same creation through the Tenants page works.
    b.click_on("#sidebar a[href='/tenants']").await;
    b.type_into("#create-enterprise input[name=name]", "Initech").await;
    b.click_on("#create-enterprise button[type=submit]").await;
    b.wait_text("#tenant-notice", "Initech").await;
    let api = Api::login(&server.api()).await;
    let names: Vec<Value> =
        api.get("/api/v1/enterprises").await["items"].as_array().unwrap().iter().map(|e| e["name"].clone()).collect();
    assert_eq!(names, vec![json!("Initech")], "the forged request created nothing");
    // Inline script is blocked by the CSP.
    let blocked = b
        .execute_async(
            "const done = arguments[arguments.length - 1];
             document.addEventListener('securitypolicyviolation', e => done(e.violatedDirective), {once: true});
             const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.body.append(s);
             setTimeout(() => done(window.__inline ? 'ran' : 'no event'), 2000);",
            json!([]),
        )
        .await;
    assert!(blocked.as_str().is_some_and(|d| d.starts_with("script-src")), "{blocked}");
    b.console_log().await; // the violation report is expected
    assert_eq!(b.execute("return window.__errors;", json!([])).await, json!([]));
    // Unknown pages get the 404 page; the API keeps its JSON 404.
    b.goto(&format!("{}/no-such-page", server.api())).await;
    b.wait_text("h1", "Page not found").await;
    b.screenshot(&shot("09-not-found")).await;
    let api_404 = reqwest::get(format!("{}/api/v1/no-such-route", server.api())).await.unwrap();
    assert_eq!(api_404.status(), 404);
    assert_eq!(api_404.json::<Value>().await.unwrap()["error"]["code"], json!("not_found"));
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_tasks_the_totp_qr_code_and_tenant_forms_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (acme, credential) = api.enterprise("Acme").await;
    let phone = device(&server, &credential, "001565000009").await;
    wait_online(&api, 1).await;
    // A device added by hand that never connects: its commands stay queued (the connected phone
    // would be sent them at once), so one can be cancelled.
    let added =
        api.post("/api/v1/devices", json!({"enterprise_id": acme, "mac": "001565000010", "model": "T46U"})).await;
    let id = added["id"].as_u64().unwrap();
    let commands = |path: String| {
        let api = &api;
        async move { api.get(&path).await["items"].as_array().unwrap().clone() }
    };

    let b = Browser::start().await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    // A device's commands tab: a ping with its target is queued for the offline device.
    b.goto(&format!("{}/devices/{id}", server.api())).await;
    b.click_on("#tab-3").await;
    b.find("#command-form").await;
    choose(&b, "#command-kind", "ping").await;
    b.type_into("#command-args input[name='arg:target']", "10.0.0.1").await;
    b.click_on("#send-command").await;
    b.wait_text("#command-errors", "is queued").await;
    let listed = b.wait_text("#command-list", "10.0.0.1").await;
    assert!(listed.contains("queued"), "{listed}");
    let sent = commands(format!("/api/v1/devices/{id}/commands")).await;
    assert_eq!(
        (sent.len(), &sent[0]["kind"], &sent[0]["args"]),
        (1, &json!("ping"), &json!({"target": "10.0.0.1", "count": 4}))
    );
    let ping = sent[0]["id"].as_u64().unwrap();
    // A bad argument: the API's message, naming it, in place; nothing queued.
    b.type_into("#command-args input[name='arg:count']", "99").await;
    b.click_on("#send-command").await;
    let refused = b.wait_text("#command-errors", "count").await;
    assert!(refused.contains("1 to 20"), "{refused}");
    assert_eq!(commands(format!("/api/v1/devices/{id}/commands")).await.len(), 1);
    // A factory reset wants the confirmation ticked before anything is sent.
    choose(&b, "#command-kind", "factory_reset").await;
    b.click_on("#send-command").await;
    b.wait_text("#command-errors", "tick the confirmation").await;
    assert_eq!(commands(format!("/api/v1/devices/{id}/commands")).await.len(), 1);
    // Cancel the queued ping.
    b.click_on(&format!("#cancel-{ping}")).await;
    b.wait_text(&format!(".command-state[data-command='{ping}']"), "cancelled").await;
    assert_eq!(api.get(&format!("/api/v1/commands/{ping}")).await["state"], json!("cancelled"));
    b.wait_text("#file-list", "no files").await;
    show(&b, "#command-list").await;
    b.screenshot(&shot("10-device-commands")).await;
    assert_clean(&b).await;

    // The device list's bulk command to the devices of its filter.
    b.goto(&format!("{}/devices?model=T46U", server.api())).await;
    b.wait_text("#device-total", "1 device match").await;
    b.click_on("#bulk-command").await;
    choose(&b, "#bulk-kind", "refresh_status").await;
    b.wait_text("#bulk-target", "The 1 device matching this filter").await;
    b.click_on("#bulk-send").await;
    b.wait_text("#bulk-result", "1 command queued").await;
    show(&b, "#bulk-form").await;
    b.screenshot(&shot("11-bulk-command")).await;
    let sent = commands(format!("/api/v1/devices/{id}/commands")).await;
    assert_eq!((sent.len(), &sent[0]["kind"]), (2, &json!("refresh_status")), "{sent:?}");

    // A daily task from the tasks page; paused and resumed.
    b.click_on("#sidebar a[href='/tasks']").await;
    b.wait_text("#task-list", "No scheduled tasks yet").await;
    b.type_into("#task-form input[name=enterprise_id]", &acme.to_string()).await;
    b.type_into("#task-form input[name=name]", "nightly reboot").await;
    choose(&b, "#task-kind", "reboot").await;
    b.type_into("#task-form input[name=filter]", "model=T54W").await;
    choose(&b, "#task-form select[name=schedule_kind]", "daily").await;
    b.type_into("#task-form input[name=time_zone]", "Europe/Berlin").await;
    b.click_on("#create-task").await;
    b.wait_text("#task-notice", "first run").await;
    b.wait_text("#task-list", "nightly reboot").await;
    let task = api.get("/api/v1/tasks").await["items"][0].clone();
    let tid = task["id"].as_u64().unwrap();
    assert_eq!(
        (&task["schedule"], &task["time_zone"], &task["targets"], &task["state"]),
        (
            &json!({"kind": "daily", "time": "03:00"}),
            &json!("Europe/Berlin"),
            &json!({"filter": "model=T54W"}),
            &json!("active")
        ),
        "{task}"
    );
    b.click_on(&format!("#pause-task-{tid}")).await;
    b.wait_text(&format!(".task-state[data-task='{tid}']"), "paused").await;
    assert_eq!(api.get(&format!("/api/v1/tasks/{tid}")).await["state"], json!("paused"));
    b.click_on(&format!("#resume-task-{tid}")).await;
    b.wait_text(&format!(".task-state[data-task='{tid}']"), "active").await;
    assert_eq!(api.get(&format!("/api/v1/tasks/{tid}")).await["state"], json!("active"));
    show(&b, "#task-list").await;
    b.screenshot(&shot("12-tasks")).await;
    b.click_on(&format!("#task-list a[href='/tasks/{tid}']")).await;
    b.wait_text("#task-detail", "daily at 03:00 (Europe/Berlin)").await;
    b.wait_text("#run-list", "No runs yet").await;
    assert_clean(&b).await;

    // The authenticator set-up shows its QR code: an SVG image the browser decoded.
    b.click_on("#sidebar a[href='/account']").await;
    b.click_on("#totp-setup").await;
    b.find("#totp-qr").await;
    let qr = b
        .execute_async(
            "const img = document.getElementById('totp-qr'); const done = arguments[arguments.length - 1];
             const report = () => done({svg: img.src.startsWith('data:image/svg+xml'), width: img.naturalWidth,
                                         bytes: decodeURIComponent(img.src.split(',')[1]).length});
             img.complete ? report() : img.addEventListener('load', report);",
            json!([]),
        )
        .await;
    assert_eq!(qr["svg"], json!(true), "{qr}");
    assert!(qr["width"].as_u64().unwrap() > 100, "{qr}");
    println!("totp qr code: {qr}");
    show(&b, "#totp-confirm").await;
    b.screenshot(&shot("13-totp-qr")).await;
    assert_clean(&b).await;

    // Tenants: a channel, then its admin's account, created from their forms.
    b.click_on("#sidebar a[href='/tenants']").await;
    b.type_into("#create-channel input[name=name]", "Partners").await;
    b.click_on("#create-channel button[type=submit]").await;
    b.wait_text("#tenant-notice", "Channel “Partners” created").await;
    let channel = api.get("/api/v1/channels").await["items"][0].clone();
    assert_eq!(channel["name"], json!("Partners"), "{channel}");
    b.type_into("#create-account input[name=email]", "partner@example.com").await;
    b.type_into("#create-account input[name=password]", "first-password").await;
    choose(&b, "#create-account select[name=role]", "channel_admin").await;
    b.type_into("#create-account input[name=channel_id]", &channel["id"].to_string()).await;
    b.click_on("#create-account button[type=submit]").await;
    b.wait_text("#tenant-notice", "Account partner@example.com created").await;
    let accounts = api.get("/api/v1/accounts").await;
    let partner =
        accounts["items"].as_array().unwrap().iter().find(|a| a["email"] == json!("partner@example.com")).cloned();
    assert_eq!(
        partner.map(|a| (a["role"].clone(), a["channel_id"].clone())),
        Some((json!("channel_admin"), channel["id"].clone()))
    );
    b.screenshot(&shot("14-tenant-forms")).await;
    assert_clean(&b).await;
    b.quit().await;
    drop(phone);
}

/// Starts capturing what the console hands to `URL.createObjectURL` (its downloads), so a test
/// can read a downloaded file's text: headless Chromium saves downloads nowhere.
async fn capture_downloads(b: &Browser) {
    b.execute(
        "window.__blobs = []; const make = URL.createObjectURL;
         URL.createObjectURL = (blob) => { window.__blobs.push(blob); return make.call(URL, blob); };",
        json!([]),
    )
    .await;
}

/// The text of the `n`th file the console downloaded since [`capture_downloads`], waiting for it.
async fn downloaded(b: &Browser, n: usize) -> String {
    let text = b
        .execute_async(
            "const [n, done] = [arguments[0], arguments[arguments.length - 1]];
             const poll = (left) => window.__blobs[n] ? window.__blobs[n].text().then(done)
               : left ? setTimeout(() => poll(left - 1), 50) : done(null);
             poll(200);",
            json!([n]),
        )
        .await;
    text.as_str().unwrap_or_else(|| panic!("no download #{n}")).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_in_a_browser_add_edit_import_export_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (acme, _) = api.enterprise("Acme").await;
    let b = Browser::start().await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;

    // Add a device from the device list.
    b.goto(&format!("{}/devices?enterprise_id={acme}", server.api())).await;
    b.wait_text("#device-list", "No device matches these filters").await;
    b.click_on("#add-device-link").await;
    b.wait_path("/devices/new").await;
    b.type_into("#add-device input[name=enterprise_id]", &acme.to_string()).await;
    b.type_into("#add-device input[name=mac]", "00:15:65:AA:00:01").await;
    b.type_into("#add-device input[name=model]", "T54W").await;
    b.type_into("#add-device input[name=name]", "front desk").await;
    b.type_into("#add-device textarea[name=attributes]", "room=12").await;
    b.click_on("#add-device button[type=submit]").await;
    b.wait_text("#device-status", "001565aa0001").await;
    b.wait_text("h1", "front desk").await;
    let id = api.get(&format!("/api/v1/devices?enterprise_id={acme}")).await["items"][0]["id"].as_u64().unwrap();
    assert!(b.url().await.ends_with(&format!("/devices/{id}")));

    // Edit it from its Manage tab: the API's refusal in place, then saved.
    b.click_on("#tab-4").await;
    b.type_into("#edit-device input[name=name]", "reception").await;
    b.type_into("#edit-device textarea[name=attributes]", "Room=14").await;
    b.click_on("#edit-device button[type=submit]").await;
    b.wait_text("#edit-device", "may hold only").await;
    b.type_into("#edit-device textarea[name=attributes]", "room=14\nfloor=2").await;
    b.click_on("#edit-device button[type=submit]").await;
    b.wait_text("#manage-notice", "Saved").await;
    b.wait_text("h1", "reception").await;
    let detail = api.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!((&detail["name"], &detail["attributes"]), (&json!("reception"), &json!({"floor": "2", "room": "14"})));
    b.screenshot(&shot("15-device-manage")).await;
    assert_clean(&b).await;

    // Import a CSV with one bad row: the row error with its line, errors.csv, the past imports.
    let csv = dir.path().join("phones.csv");
    std::fs::write(
        &csv,
        "mac_address;endpoint_type;endpoint_name;site\n0015650b0001;T46U;hall;north\nnot-a-mac;T46U;broken;north\n\
         0015650b0002;T46U;lab;south\n",
    )
    .unwrap();
    b.goto(&format!("{}/devices?enterprise_id={acme}", server.api())).await;
    b.click_on("#import-link").await;
    b.wait_path("/device-imports").await;
    b.wait_text("#import-list", "No imports yet").await;
    b.type_into("#import-form input[name=enterprise_id]", &acme.to_string()).await;
    b.choose_file("#import-form input[type=file]", &csv).await;
    choose(&b, "#import-form select[name=mode]", "merge").await;
    b.click_on("#import-form button[type=submit]").await;
    let log = b.wait_text("#import-log", "Refused rows").await;
    assert!(log.contains("not-a-mac") || log.contains("mac_address"), "{log}");
    let row = b.wait_text("#import-log tbody tr", "mac_address").await;
    assert!(row.starts_with('3'), "the bad row is line 3: {row}");
    b.wait_text("#import-created", "2").await;
    b.wait_text("#import-progress-text", "done").await;
    b.wait_text("#import-list", "#1").await;
    capture_downloads(&b).await;
    b.click_on("#errors-csv").await;
    let errors = downloaded(&b, 0).await;
    assert!(errors.starts_with("line,column,reason\r\n3,mac_address,"), "{errors}");
    show(&b, "#import-log").await;
    b.screenshot(&shot("16-device-import")).await;
    let imports = api.get("/api/v1/device-imports").await;
    assert_eq!(
        (&imports["items"][0]["state"], &imports["items"][0]["failed"]),
        (&json!("done"), &json!(1)),
        "{imports}"
    );
    assert_clean(&b).await;

    // Export the list under its filter; bulk edit the same filter.
    b.goto(&format!("{}/devices?enterprise_id={acme}&model=T46U", server.api())).await;
    b.wait_text("#device-total", "2 devices match").await;
    capture_downloads(&b).await;
    b.click_on("#export-csv").await;
    let export = downloaded(&b, 0).await;
    let lines: Vec<&str> = export.trim_end().split("\r\n").collect();
    assert!(lines[0].starts_with("mac_address,serial_number,endpoint_type,endpoint_name"), "{export}");
    assert_eq!(lines.len(), 3, "the header and the two T46U devices: {export}");
    assert!(
        lines[1..].iter().all(|l| l.contains("T46U")) && export.contains("hall") && export.contains("lab"),
        "{export}"
    );
    b.click_on("#bulk-edit-open").await;
    b.type_into("#bulk-edit textarea[name=attributes]", "site=\nfloor=1").await;
    b.click_on("#bulk-edit button[type=submit]").await;
    b.wait_text("main", "2 devices changed").await;
    let listed = api.get(&format!("/api/v1/devices?enterprise_id={acme}&model=T46U")).await;
    for d in listed["items"].as_array().unwrap() {
        let attrs = api.get(&format!("/api/v1/devices/{}", d["id"])).await["attributes"].clone();
        assert_eq!(attrs, json!({"floor": "1"}), "site removed, floor set");
    }
    b.screenshot(&shot("17-device-bulk-edit")).await;

    // Delete the first device: it asks first.
    b.goto(&format!("{}/devices/{id}", server.api())).await;
    b.click_on("#tab-4").await;
    b.click_on("#delete-device").await;
    b.wait_text("#delete-section", "Delete reception?").await;
    b.screenshot(&shot("18-device-delete-confirm")).await;
    assert_eq!(
        api.get(&format!("/api/v1/devices/{id}")).await["id"],
        json!(id),
        "nothing deleted before the confirmation"
    );
    b.click_on("#confirm-delete").await;
    b.wait_path("/devices").await;
    b.wait_text("main", "Device 001565aa0001 deleted").await;
    let gone =
        api.client.get(format!("{}/api/v1/devices/{id}", api.base)).bearer_auth(&api.token).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    assert_clean(&b).await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_accounts_and_a_channel_are_managed_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let channel = api
        .post("/api/v1/channels", json!({"name": "Resellers", "allow_sub_channels": true, "device_management": true}))
        .await["id"]
        .as_u64()
        .unwrap();
    let globex =
        api.post("/api/v1/enterprises", json!({"name": "Globex", "channel_id": channel})).await["id"].as_u64().unwrap();
    let east =
        api.post("/api/v1/channels", json!({"name": "East", "parent_id": channel})).await["id"].as_u64().unwrap();
    api.post("/api/v1/accounts", json!({"email": "reseller@example.com", "password": "first-password", "role": "channel_admin", "channel_id": channel})).await;
    first_login(&api, "reseller@example.com", "first-password", "reseller-password").await;

    let b = Browser::start().await;
    sign_in(&b, &server, "reseller@example.com", "reseller-password").await;
    b.wait_path("/dashboard").await;
    b.click_on("#sidebar a[href='/sub-accounts']").await;
    b.wait_text("#sub-account-list", "No sub-accounts yet").await;
    // Create one with the devices and alarms features and all data.
    b.type_into("#create-sub-account input[name=email]", "helper@example.com").await;
    b.type_into("#create-sub-account input[name=password]", "helper-first-1").await;
    b.click_on("#new-feature-alarms").await;
    b.click_on("#create-sub-account button[type=submit]").await;
    b.wait_text("#sub-notice", "Sub-account helper@example.com created").await;
    b.wait_text("#sub-account-list", "devices, alarms").await;
    let accounts = api.get("/api/v1/accounts?q=helper").await;
    let helper = accounts["items"][0].clone();
    let hid = helper["id"].as_u64().unwrap();
    assert_eq!(
        (&helper["role"], &helper["channel_id"], &helper["permissions"]),
        (&json!("channel_admin"), &json!(channel), &json!({"features": ["devices", "alarms"], "data": "all"})),
        "{helper}"
    );
    // Narrow its permissions: only Globex, without alarms; an unknown enterprise is refused first.
    b.click_on(&format!("button[data-edit='{hid}']")).await;
    b.click_on("#edit-feature-alarms").await;
    choose(&b, "#edit-permissions select[name=data]", "only").await;
    b.type_into("#edit-permissions input[name=enterprises]", "999999").await;
    b.click_on("#edit-permissions button[type=submit]").await;
    b.wait_text("#edit-permissions", "not found").await;
    b.type_into("#edit-permissions input[name=enterprises]", &globex.to_string()).await;
    b.click_on("#edit-permissions button[type=submit]").await;
    b.wait_text("#sub-notice", "helper@example.com saved; its permissions apply from its next request.").await;
    b.wait_text("#sub-account-list", &format!("Only enterprises #{globex}")).await;
    let permissions = api.get(&format!("/api/v1/accounts/{hid}")).await["permissions"].clone();
    assert_eq!(
        permissions,
        json!({"features": ["devices"], "data": {"only": {"channels": [], "enterprises": [globex]}}})
    );
    // Freeze it: it can no longer sign in; unfreeze it.
    b.click_on(&format!("button[data-account='{hid}']")).await;
    b.wait_text("#sub-notice", "is frozen").await;
    b.wait_text("#sub-account-list", "frozen").await;
    b.screenshot(&shot("19-sub-accounts")).await;
    let login = |password: &'static str| {
        let api = &api;
        async move {
            api.client
                .post(format!("{}/api/v1/auth/login", api.base))
                .json(&json!({"email": "helper@example.com", "password": password}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(login("helper-first-1").await, 401, "a frozen sub-account cannot sign in");
    assert_eq!(api.get(&format!("/api/v1/accounts/{hid}")).await["frozen"], json!(true));
    b.click_on(&format!("button[data-account='{hid}']")).await;
    b.wait_text("#sub-notice", "active again").await;
    assert_eq!(login("helper-first-1").await, 200);
    assert_clean(&b).await;

    // Edit a sub-channel: its contact and the permissions it grants.
    b.click_on("#sidebar a[href='/tenants']").await;
    b.click_on(&format!("#channel-list a[href='/channels/{east}']")).await;
    b.wait_text("h1", "Channel East").await;
    b.type_into("#edit-channel input[name=contact]", "Eve East").await;
    b.click_on("#edit-channel input[name=allow_sub_channels]").await;
    b.click_on("#edit-channel button[type=submit]").await;
    b.wait_text("#channel-notice", "Channel “East” saved").await;
    let stored = api.get(&format!("/api/v1/channels/{east}")).await;
    assert_eq!((&stored["contact"], &stored["allow_sub_channels"]), (&json!("Eve East"), &json!(true)), "{stored}");
    // Its own channel's permissions are granted from above: the API's refusal in place.
    b.goto(&format!("{}/channels/{channel}", server.api())).await;
    b.wait_text("h1", "Channel Resellers").await;
    b.click_on("#edit-channel input[name=rps]").await;
    b.click_on("#edit-channel button[type=submit]").await;
    b.wait_text("#edit-channel", "may not").await;
    b.screenshot(&shot("20-channel-edit")).await;
    assert_eq!(api.get(&format!("/api/v1/channels/{channel}")).await["rps"], json!(false));
    b.console_log().await; // the refused save is an expected 403
    assert_eq!(b.execute("return window.__errors;", json!([])).await, json!([]));
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_is_made_in_the_browser_and_a_device_lands_in_it() {
    use fleetpulse_proto::wire::{CallStatus, IpAddress, StatusChange};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (acme, credential) = api.enterprise("Acme").await;
    let mut phone = device(&server, &credential, "001565000a51").await;
    let status = StatusChange {
        lines: vec![],
        call_status: CallStatus::Idle,
        firmware: "96.86.0.100".into(),
        public_ip: Some(IpAddress::V4([198, 51, 100, 7])),
        private_ip: Some(IpAddress::V4([10, 1, 2, 3])),
        uptime_s: 60,
        last_reboot_ms: None,
    };
    phone.send(&[RawDevice::data(1, Message::StatusChange(status))]).await;
    acked(&mut phone, 1).await;
    let device_id = api.get(&format!("/api/v1/devices?enterprise_id={acme}")).await["items"][0]["id"].as_u64().unwrap();

    let b = Browser::start().await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    b.goto(&format!("{}/sites?enterprise_id={acme}", server.api())).await;
    b.wait_text("#site-list", "Internet").await;
    // The API's message for a subnet with host bits set, then the site saved.
    b.type_into("#site-name", "Branch").await;
    b.type_into("#site-subnets", "198.51.100.1/24 > 10.1.0.0/16").await;
    b.click_on("#save-site").await;
    b.wait_text("#site-errors", "198.51.100.0/24").await;
    b.type_into("#site-subnets", "198.51.100.0/24 > 10.1.0.0/16").await;
    b.click_on("#save-site").await;
    b.wait_text("#site-notice", "Site created").await;
    b.wait_text("#site-list", "Branch").await;
    // A child site, then deleting the parent is refused with the reason.
    b.type_into("#site-name", "Branch lab").await;
    let branch = api.get(&format!("/api/v1/sites?enterprise_id={acme}")).await["roots"][0]["id"].as_u64().unwrap();
    choose(&b, "#site-parent", &branch.to_string()).await;
    b.click_on("#save-site").await;
    b.wait_text("#site-list", "Branch lab").await;
    b.execute("window.confirm = () => true;", json!([])).await;
    b.click_on("button[aria-label='Delete site Branch']").await;
    b.wait_text("#site-notice", "has child sites: \"Branch lab\"").await;
    b.screenshot(&shot("20-sites")).await;
    // The device is in Branch: its detail, the list's site column and filter, the dashboard.
    b.goto(&format!("{}/devices/{device_id}", server.api())).await;
    b.wait_text("#device-site", "Branch").await;
    b.goto(&format!("{}/devices?enterprise_id={acme}&site_id={branch}", server.api())).await;
    b.wait_text("#device-total", "1 device").await;
    b.wait_text("#device-list", "Branch").await;
    let tree = api.get(&format!("/api/v1/sites?enterprise_id={acme}")).await;
    assert_eq!(tree["roots"][0]["devices"], json!(1), "{tree}");
    assert_clean(&b).await;
    b.quit().await;
    drop(phone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_is_uploaded_and_devices_upgraded_from_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "[firmware]\nhttps_listen = \"127.0.0.1:0\"\n");
    let api = Api::login(&server.api()).await;
    let (acme, _) = api.enterprise("Acme").await;
    let added =
        api.post("/api/v1/devices", json!({"enterprise_id": acme, "mac": "001565000020", "model": "T54W"})).await;
    let id = added["id"].as_u64().unwrap();
    let image = dir.path().join("T54W-2.0.rom");
    std::fs::write(&image, vec![0x5a; 300 * 1024]).unwrap();

    let b = Browser::start().await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    b.click_on("#sidebar a[href='/firmware']").await;
    b.wait_text("#firmware-list", "No firmware images yet").await;
    b.type_into("#firmware-model", "T54W").await;
    b.type_into("#firmware-version", "2.0").await;
    b.type_into("#firmware-file", image.to_str().unwrap()).await;
    b.click_on("#firmware-upload").await;
    b.wait_text("#firmware-notice", "Uploaded T54W 2.0").await;
    b.wait_text("#firmware-list", "T54W-2.0.rom").await;
    let images = api.get(&format!("/api/v1/firmware?enterprise_id={acme}")).await["items"].clone();
    assert_eq!(
        (images[0]["size"].as_u64(), images[0]["version"].as_str()),
        (Some(300 * 1024), Some("2.0")),
        "{images}"
    );
    let image_id = images[0]["id"].as_u64().unwrap();
    b.screenshot(&shot("15-firmware")).await;

    // A device's detail: its model's image, upgraded with one click.
    b.goto(&format!("{}/devices/{id}", server.api())).await;
    b.find("#device-upgrade").await;
    b.click_on("#device-upgrade").await;
    b.wait_text("#device-firmware", "Upgrade queued as command").await;
    let commands = api.get(&format!("/api/v1/devices/{id}/commands")).await["items"].clone();
    assert_eq!(
        (commands[0]["kind"].as_str(), commands[0]["args"]["image"].as_u64()),
        (Some("upgrade_firmware"), Some(image_id))
    );
    show(&b, "#device-firmware").await;
    b.screenshot(&shot("16-device-firmware")).await;

    // In use: the deletion is refused and says why.
    b.click_on("#sidebar a[href='/firmware']").await;
    b.click_on(&format!("#delete-firmware-{image_id}")).await;
    b.wait_text("#firmware-notice", "pending upgrade").await;
    // The devices of a filter, through a task.
    b.type_into("#upgrade-filter", "online=false").await;
    b.click_on("#upgrade-devices").await;
    b.wait_text("#task-detail", "upgrade").await;
    let tasks = api.get("/api/v1/tasks").await["items"].clone();
    let args: Value = serde_json::from_str(tasks[0]["args"].as_str().unwrap()).unwrap();
    assert_eq!(
        (tasks[0]["kind"].as_str(), args, tasks[0]["targets"]["filter"].as_str()),
        (Some("upgrade_firmware"), json!({"image": image_id}), Some("model=T54W&online=false")),
        "{tasks}"
    );
    assert_clean(&b).await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_groups_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (acme, credential) = api.enterprise("Acme").await;
    // A group that devices join when they add themselves, before they connect.
    let lab = api.post("/api/v1/groups", json!({"enterprise_id": acme, "name": "Lab"})).await["id"].as_u64().unwrap();
    api.put(&format!("/api/v1/default-groups?enterprise_id={acme}"), json!({"group_ids": [lab]})).await;
    let mut fleet = Vec::new();
    for i in 1..=3 {
        fleet.push(device(&server, &credential, &format!("00156500010{i}")).await);
    }
    wait_online(&api, 3).await;
    let first =
        api.get(&format!("/api/v1/devices?enterprise_id={acme}&sort=mac")).await["items"][0]["id"].as_u64().unwrap();

    let b = Browser::start().await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    b.wait_text("#dash-one-enterprise", "one enterprise").await;
    b.goto(&format!("{}/dashboard?enterprise_id={acme}", server.api())).await;
    b.wait_text("#dash-groups", "Lab").await;
    // Create a group on the groups page; the default groups are listed there.
    b.goto(&format!("{}/groups?enterprise_id={acme}", server.api())).await;
    b.wait_text("#defaults-editor", "Lab").await;
    b.type_into("#create-group input[name=name]", "Front desk").await;
    b.click_on("#create-group button[type=submit]").await;
    b.wait_text("#group-list", "Front desk").await;
    b.screenshot(&shot("20-groups")).await;
    // Its page: add the devices a filter finds, then see them as members.
    let desk = api.get(&format!("/api/v1/groups?enterprise_id={acme}")).await["items"][1]["id"].as_u64().unwrap();
    b.click_on(&format!("#group-list a[href='/groups/{desk}']")).await;
    b.wait_text("#candidate-total", "3 devices match").await;
    b.click_on("#add-matching").await;
    b.wait_text("#group-notice", "3 device(s) joined").await;
    b.wait_text("#member-total", "3 members").await;
    b.click_on("#top-priority").await;
    b.wait_text("#group-notice", "top-priority group").await;
    b.screenshot(&shot("21-group-members")).await;
    let detail = api.get(&format!("/api/v1/devices/{first}")).await;
    let order: Vec<&str> = detail["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(order, ["Front desk", "Lab"], "top priority: {detail}");
    // The device list filters by group; the device's Groups tab reorders its groups.
    b.goto(&format!("{}/devices?group={desk}", server.api())).await;
    b.wait_text("#device-total", "3 devices match").await;
    b.goto(&format!("{}/devices/{first}", server.api())).await;
    b.wait_text("#device-status", "T54W").await;
    b.click_on("#tab-5").await;
    b.wait_text("#device-groups", "Front desk").await;
    b.click_on(&format!("#device-groups li[data-group='{lab}'] button.up")).await;
    b.click_on("#device-groups-save").await;
    b.wait_text("#device-groups", "Saved").await;
    b.screenshot(&shot("22-device-groups")).await;
    let detail = api.get(&format!("/api/v1/devices/{first}")).await;
    let order: Vec<&str> = detail["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(order, ["Lab", "Front desk"], "{detail}");
    assert_clean(&b).await;
    b.quit().await;
    drop(fleet);
}

/// Sets the value of the input matching `css` to a UTC date `days` from today (date inputs take
/// typed text by the browser's locale; the value is what the form reads).
async fn set_date(b: &Browser, css: &str, days: i64) -> String {
    let date = b
        .execute(
            "const d = new Date(Date.now() + arguments[1] * 86400000).toISOString().slice(0, 10);
             document.querySelector(arguments[0]).value = d; return d;",
            json!([css, days]),
        )
        .await;
    date.as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_placed_cancelled_and_stated_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (acme, _) = api.enterprise("Acme").await;

    let b = Browser::start().await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    b.goto(&format!("{}/orders", server.api())).await;
    b.wait_text("#orders-list", "No orders yet.").await;
    // A date in the past: the API's reason in place, nothing placed.
    b.type_into("#order-form input[name=enterprise_id]", &acme.to_string()).await;
    b.type_into("#order-form input[name=max_devices]", "25").await;
    set_date(&b, "#order-form input[name=effective_date]", -2).await;
    b.click_on("#order-form button[type=submit]").await;
    b.wait_text("#order-notice", "in the past").await;
    // Tomorrow: placed and pending; then one effective today.
    let tomorrow = set_date(&b, "#order-form input[name=effective_date]", 1).await;
    b.click_on("#order-form button[type=submit]").await;
    b.wait_text("#order-notice", "placed (pending)").await;
    b.wait_text("#orders-list", &tomorrow).await;
    set_date(&b, "#order-form input[name=effective_date]", 0).await;
    b.click_on("#order-form button[type=submit]").await;
    b.wait_text("#order-notice", "placed (active)").await;
    b.screenshot(&shot("24-orders")).await;
    // Only the pending order has a Cancel button; cancelling it is shown and listed.
    let buttons = b.execute("return document.querySelectorAll('button.cancel-order').length;", json!([])).await;
    assert_eq!(buttons, json!(1));
    b.click_on("button.cancel-order").await;
    b.wait_text("#orders-notice", "cancelled").await;
    b.wait_text("#orders-list", "cancelled").await;
    let orders = api.get(&format!("/api/v1/orders?enterprise_id={acme}")).await;
    let statuses: Vec<&str> =
        orders["items"].as_array().unwrap().iter().map(|o| o["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["active", "cancelled"], "{orders}");
    // The statement: totals of both orders, and its export with the totals line.
    b.goto(&format!("{}/statements", server.api())).await;
    b.wait_text("#statement-totals", "2 orders, 50 devices, 600 device-months").await;
    b.screenshot(&shot("25-statements")).await;
    capture_downloads(&b).await;
    b.click_on("#export-statement").await;
    let csv = downloaded(&b, 0).await;
    assert!(csv.starts_with("order_id,order_time,enterprise_id,enterprise,"), "{csv}");
    assert!(csv.lines().last().unwrap().starts_with("totals,2 orders,"), "{csv}");
    assert_clean(&b).await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_deployed_in_the_browser_and_a_device_shows_its_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (acme, _) = api.enterprise("Acme").await;
    let device = api
        .post(
            "/api/v1/devices",
            json!({"enterprise_id": acme, "mac": "001565000c01", "model": "T54W", "name": "Reception"}),
        )
        .await;
    let device_id = device["id"].as_u64().unwrap();

    let b = Browser::start().await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    b.click_on("#sidebar a[href='/profiles']").await;
    choose(&b, "#profile-enterprise", &acme.to_string()).await;
    b.wait_text("#profile-list", "No profiles yet").await;
    // Two profiles; a bad key gets the API's message in place.
    b.type_into("#create-profile input[name=name]", "Base").await;
    b.type_into("#create-profile textarea[name=parameters]", "call.autoAnswer.SIP=0\nbad key=1").await;
    b.click_on("#create-profile button[type=submit]").await;
    b.wait_text("#profile-errors", "bad key").await;
    b.execute(
        "document.querySelector('#create-profile textarea[name=parameters]').value = arguments[0];",
        json!(["call.autoAnswer.SIP=0\nphone.label=${name}"]),
    )
    .await;
    b.click_on("#create-profile button[type=submit]").await;
    b.wait_text("#profile-notice", "Profile “Base” created").await;
    b.type_into("#create-profile input[name=name]", "Front desk").await;
    b.type_into("#create-profile textarea[name=parameters]", "call.autoAnswer.SIP=1").await;
    b.click_on("#create-profile button[type=submit]").await;
    b.wait_text("#profile-notice", "Profile “Front desk” created").await;
    let profiles = api.get(&format!("/api/v1/profiles?enterprise_id={acme}")).await;
    let id_of = |name: &str| {
        profiles["items"].as_array().unwrap().iter().find(|p| p["settings"]["name"] == name).unwrap()["id"]
            .as_u64()
            .unwrap()
    };
    let (base, desk) = (id_of("Base"), id_of("Front desk"));

    // Deploy Base globally, Front desk to the T54W model.
    b.wait_text("#deployments", "Nothing is deployed yet").await;
    choose(&b, "#deployment-editor select[name=add_group]", &base.to_string()).await;
    b.click_on("#deployment-editor-save").await;
    b.wait_text("#deployments", "Every device").await;
    choose(&b, "#deploy-container", "model").await;
    b.execute(
        "const m = document.querySelector('#deploy-member'); m.value = 'T54W';
         m.dispatchEvent(new Event('change', {bubbles: true}));",
        json!([]),
    )
    .await;
    choose(&b, "#deployment-editor select[name=add_group]", &desk.to_string()).await;
    b.click_on("#deployment-editor-save").await;
    b.wait_text("#deployments", "T54W").await;
    b.screenshot(&shot("23-profiles")).await;
    let deployments = api.get(&format!("/api/v1/profile-deployments?enterprise_id={acme}")).await;
    let targets: Vec<(Value, Value)> =
        deployments["items"].as_array().unwrap().iter().map(|d| (d["target"].clone(), d["profiles"].clone())).collect();
    assert!(targets.contains(&(json!({"container": "global"}), json!([base]))), "{deployments}");
    assert!(targets.contains(&(json!({"container": "model", "model": "T54W"}), json!([desk]))), "{deployments}");

    // Copy; deleting a deployed profile says where it is deployed.
    b.execute("window.prompt = () => 'Base copy'; window.confirm = () => true;", json!([])).await;
    b.click_on(&format!("button[data-copy='{base}']")).await;
    b.wait_text("#profile-list", "Base copy").await;
    b.click_on(&format!("button[data-delete='{desk}']")).await;
    b.wait_text("#profile-notice", "is deployed to").await;
    // Edit Base on its own page.
    b.click_on(&format!("#profile-list a[href='/profiles/{base}']")).await;
    b.wait_text("h1", "Base").await;
    b.execute(
        "document.querySelector('#edit-profile textarea[name=parameters]').value = arguments[0];",
        json!(["call.autoAnswer.SIP=0\nphone.label=${name}\nlines.1.label=${mac_address}"]),
    )
    .await;
    b.click_on("#edit-profile button[type=submit]").await;
    b.wait_text("#profile-notice", "Saved “Base”").await;
    assert_eq!(
        api.get(&format!("/api/v1/profiles/{base}")).await["settings"]["parameters"].as_object().unwrap().len(),
        3
    );

    // The device's Configuration tab: every key with its profile and container; Push now.
    b.goto(&format!("{}/devices/{device_id}", server.api())).await;
    b.wait_text("#device-status", "T54W").await;
    b.click_on("#tab-6").await;
    b.wait_text("#device-configuration", "lines.1.label").await;
    let text = b.wait_text("#device-configuration", "001565000c01").await;
    assert!(text.contains("Front desk") && text.contains("Model") && text.contains("Global"), "{text}");
    b.wait_text("#last-provision", "Never provisioned").await;
    b.click_on("#push-now").await;
    b.wait_text("#push-result", "Queued 1 command(s): 3 key(s) set, 0 removed").await;
    b.wait_text("#last-provision", "pending").await;
    b.screenshot(&shot("24-device-configuration")).await;
    let commands = api.get(&format!("/api/v1/devices/{device_id}/commands")).await;
    assert_eq!(commands["items"][0]["kind"], "apply_config", "{commands}");
    assert_eq!(commands["items"][0]["args"]["changes"]["call.autoAnswer.SIP"], "1", "{commands}");
    b.console_log().await; // the refused delete is an expected 409
    assert_eq!(b.execute("return window.__errors;", json!([])).await, json!([]));
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_frozen_moved_and_given_rps_devices_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let north = api.post("/api/v1/channels", json!({"name": "North"})).await["id"].as_u64().unwrap();
    let south = api.post("/api/v1/channels", json!({"name": "South"})).await["id"].as_u64().unwrap();
    let body = json!({"email": "north@example.com", "password": "first-password", "role": "channel_admin", "channel_id": north});
    let north_admin = api.post("/api/v1/accounts", body).await["id"].as_u64().unwrap();
    let helper =
        json!({"email": "helper@example.com", "password": "first-password", "features": ["devices"], "data": "all"});
    api.post("/api/v1/sub-accounts", helper).await;

    let b = Browser::start().await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    // TEN-1: an enterprise with its master administrator (who gets the account) and RPS.
    b.click_on("#sidebar a[href='/tenants']").await;
    b.type_into("#create-enterprise input[name=name]", "Umbrella").await;
    b.type_into("#create-enterprise input[name=channel_id]", &north.to_string()).await;
    b.type_into("#create-enterprise input[name=master_admin_email]", "boss@umbrella.example").await;
    b.click_on("#create-enterprise input[name=rps]").await;
    b.click_on("#create-enterprise button[type=submit]").await;
    b.wait_text("#tenant-notice", "boss@umbrella.example was created").await;
    let umbrella = api.get("/api/v1/enterprises?q=Umbrella").await["items"][0].clone();
    assert_eq!((&umbrella["rps"], &umbrella["channel_id"]), (&json!(true), &json!(north)), "{umbrella}");
    let e = umbrella["id"].as_u64().unwrap();
    let accounts = api.get("/api/v1/accounts?q=boss%40umbrella").await;
    assert_eq!(accounts["items"][0]["role"], "enterprise_admin", "{accounts}");

    // TEN-5: freeze every account of channel North, then give back exactly those.
    b.goto(&format!("{}/tenants", server.api())).await;
    b.wait_text("#enterprise-list", "Umbrella").await;
    b.click_on(&format!("[data-freeze='channels-{north}'] button")).await;
    b.wait_text("#tenant-notice", "Froze 2 account(s)").await;
    assert_eq!(api.get(&format!("/api/v1/accounts/{north_admin}")).await["frozen"], json!(true));
    b.screenshot(&shot("26-tenant-frozen")).await;
    b.click_on(&format!("[data-freeze='channels-{north}'] button + button")).await;
    b.wait_text("#tenant-notice", "Unfroze 2 account(s)").await;
    assert_eq!(api.get(&format!("/api/v1/accounts/{north_admin}")).await["frozen"], json!(false));

    // Move Umbrella from North to South.
    b.click_on(&format!("button[data-move='{e}']")).await;
    b.type_into("#move-enterprise input[name=channel_id]", &south.to_string()).await;
    b.click_on("#move-enterprise button[type=submit]").await;
    b.wait_text("#tenant-notice", &format!("now belongs to channel #{south}")).await;
    assert_eq!(api.get(&format!("/api/v1/enterprises/{e}")).await["channel_id"], json!(south));

    // DEV-1: its RPS list; the device's lookup answers the URL.
    b.goto(&format!("{}/rps?enterprise_id={e}", server.api())).await;
    b.wait_text("#rps-list", "No RPS devices yet").await;
    b.type_into("#add-rps input[name=key]", "00:15:65:12:34:56").await;
    b.type_into("#add-rps input[name=server_url]", "https://dm.umbrella.example").await;
    b.click_on("#add-rps button[type=submit]").await;
    b.wait_text("#rps-list", "001565123456").await;
    b.screenshot(&shot("27-rps-devices")).await;
    let lookup = reqwest::get(format!("{}/api/v1/rps/redirect?mac=001565123456", server.api())).await.unwrap();
    assert_eq!(lookup.json::<Value>().await.unwrap(), json!({"server_url": "https://dm.umbrella.example"}));

    // TEN-5: a sub-account edited, then deleted (a confirmation in place).
    b.click_on("#sidebar a[href='/sub-accounts']").await;
    b.wait_text("#sub-account-list", "helper@example.com").await;
    b.click_on("button[data-edit]").await;
    b.type_into("#edit-permissions input[name=contact_name]", "Hal Helper").await;
    b.click_on("#edit-permissions button[type=submit]").await;
    b.wait_text("#sub-notice", "helper@example.com saved").await;
    let subs = api.get("/api/v1/sub-accounts").await;
    let id = subs["items"][0]["id"].as_u64().unwrap();
    assert_eq!(api.get(&format!("/api/v1/sub-accounts/{id}")).await["contact_name"], "Hal Helper");
    b.click_on("button[data-delete]").await;
    b.click_on("#confirm-delete").await;
    b.wait_text("#sub-notice", "is deleted").await;
    b.wait_text("#sub-account-list", "No sub-accounts yet").await;
    b.screenshot(&shot("28-sub-account-deleted")).await;
    assert_clean(&b).await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enterprise_sees_where_its_strategies_come_from_and_opts_out_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let reseller = api.post("/api/v1/channels", json!({"name": "Reseller"})).await["id"].as_u64().unwrap();
    let shop =
        api.post("/api/v1/enterprises", json!({"name": "Shop", "channel_id": reseller})).await["id"].as_u64().unwrap();

    let b = Browser::start().await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    // The channel's page: a strategy handed down to its enterprises, which may opt out.
    b.goto(&format!("{}/channels/{reseller}", server.api())).await;
    b.wait_text("#channel-strategies", "No channel strategies").await;
    b.type_into("#channel-strategy-form input[name=name]", "Reseller NOC").await;
    b.type_into("#channel-strategy-form textarea[name=receivers]", "not an address").await;
    b.click_on("#save-channel-strategy").await;
    b.wait_text("#channel-strategy-errors", "is not an email address").await;
    b.type_into("#channel-strategy-form textarea[name=receivers]", "noc@reseller.example").await;
    choose(&b, "#channel-strategy-form select[name=may]", "opt_out").await;
    b.click_on("#save-channel-strategy").await;
    b.wait_text("#channel-strategies", "noc@reseller.example").await;
    b.wait_text("#channel-strategies", "whole subtree").await;
    // The enterprise's strategies page says where it came from.
    b.goto(&format!("{}/strategies?enterprise_id={shop}", server.api())).await;
    b.wait_text("#effective-strategies", "channel Reseller (its own)").await;
    b.wait_text("#effective-strategies", "noc@reseller.example").await;
    b.click_on("button[aria-label='Opt out: Reseller NOC']").await;
    b.wait_text("#effective-strategies", "opted out").await;
    b.screenshot(&shot("30-effective-strategies")).await;
    let effective = api.get(&format!("/api/v1/enterprises/{shop}/effective-alarm-strategies")).await;
    assert_eq!(effective["items"][0]["status"], "opted_out", "{effective}");
    b.click_on("button[aria-label='Inherit again: Reseller NOC']").await;
    b.wait_text("#effective-strategies", "applies").await;
    assert_clean(&b).await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_is_made_in_the_browser_and_shown_on_the_alarm_it_holds_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (acme, credential) = api.enterprise("Acme").await;
    strategy(&api, acme, json!({})).await;

    let b = Browser::start().await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    b.goto(&format!("{}/windows?enterprise_id={acme}", server.api())).await;
    b.wait_text("#window-list", "No maintenance windows").await;
    // Every day from two minutes ago (UTC: the enterprise has no time zone) for an hour.
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let start = (now_s / 60 + 24 * 60 - 2) % (24 * 60);
    let start = format!("{:02}:{:02}", start / 60, start % 60);
    b.goto(&format!("{}/windows/new?enterprise_id={acme}", server.api())).await;
    b.type_into("#window-form input[name=name]", "Night works").await;
    b.type_into("#window-form input[name=duration]", "0").await;
    b.execute("document.querySelector('#window-form input[name=start_time]').value = arguments[0];", json!([start]))
        .await;
    b.click_on("#save-window").await;
    b.wait_text("#window-errors", "1 minute to 7 days").await;
    b.type_into("#window-form input[name=duration]", "60").await;
    b.click_on("#save-window").await;
    b.wait_text("#window-list", "Night works").await;
    b.wait_text("#window-list", "every day").await;
    b.screenshot(&shot("40-maintenance-windows")).await;

    // A crash inside the window: recorded, held back, and the alarm's detail says by which window.
    let mut phone = device(&server, &credential, "001565000c01").await;
    phone.send(&[alarm(1, 105, true, "segfault during works")]).await;
    acked(&mut phone, 1).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let id = loop {
        let items = api.get(&format!("/api/v1/alarms?enterprise_id={acme}")).await["items"].clone();
        if let Some(id) = items[0]["id"].as_u64() {
            let story = api.get(&format!("/api/v1/alarms/{id}/notifications")).await;
            if story["window"]["state"] == "suppressed" {
                break id;
            }
        }
        assert!(Instant::now() < deadline, "the window did not hold the alarm back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    b.goto(&format!("{}/alarms/{id}", server.api())).await;
    b.wait_text("#alarm-window", "Suppressed by window “Night works”").await;
    show(&b, "#alarm-notifications").await;
    b.screenshot(&shot("41-alarm-held-by-window")).await;
    assert_clean(&b).await;
    b.quit().await;
    drop(phone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_admin_sees_the_nodes_of_a_scale_out_deployment() {
    use fleetpulse_testkit::clickhouse::ClickHouseServer;
    use fleetpulse_testkit::postgres::PostgresServer;

    let (pg, ch) = (PostgresServer::start(), ClickHouseServer::start());
    let store = common::scaleout_config(&pg, &ch, "console_nodes");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, &format!("{store}[cluster]\nnode_id = \"node-a\"\n"));
    let api = Api::login(&server.api()).await;
    let (_, credential) = api.enterprise("Acme").await;
    // One phone connected: its session is this node's.
    let phone = device(&server, &credential, "001565007701").await;

    let b = Browser::start().await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    b.click_on("#sidebar a[href='/nodes']").await;
    b.wait_path("/nodes").await;
    b.wait_text("#nodes-list", "node-a").await;
    // The device's session is recorded as this node's within the recorder's flush.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        b.click_on("#nodes-refresh").await;
        let summary = b.execute("return document.querySelector('#nodes-summary')?.textContent || '';", json!([])).await;
        // The only node evaluates every enterprise: it holds all 16 engine buckets.
        let buckets = b
            .execute("return document.querySelector('#nodes-list .engine-buckets')?.textContent || '';", json!([]))
            .await;
        if summary == json!("1 of 1 nodes up, 1 device sessions held.") && buckets == json!("16") {
            break;
        }
        assert!(Instant::now() < deadline, "the node's session and buckets never showed: {summary} {buckets}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    b.wait_text("#nodes-list", "up").await;
    b.screenshot(&shot("31-nodes")).await;
    assert_clean(&b).await;
    b.quit().await;
    drop(phone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_and_replayed_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "[notify]\nstore_attempts = 1\n");
    let api = Api::login(&server.api()).await;
    let (acme, credential) = api.enterprise("Acme").await;
    strategy(&api, acme, json!({})).await;
    // The outbox refuses writes: the notification of a crash is given up at once.
    outbox_read_only(dir.path(), true);
    let mut phone = device(&server, &credential, "001565000d51").await;
    phone.send(&[alarm(1, 105, true, "segfault with the outbox down")]).await;
    acked(&mut phone, 1).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while api.get("/api/v1/dead-letters").await["items"].as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let b = Browser::start().await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    b.click_on("a[href='/dead-letters']").await;
    b.wait_path("/dead-letters").await;
    b.wait_text("#dead-letters", "store_unavailable").await;
    b.wait_text("#dead-letters", "notification").await;
    choose(&b, "#dead-letter-stage", "alarm_effects").await;
    b.wait_path("/dead-letters").await;
    b.wait_text("#dead-letters", "read-only").await;
    let url = b.execute("return location.search;", json!([])).await;
    assert_eq!(url, json!("?stage=alarm_effects"));
    b.screenshot(&shot("50-dead-letters")).await;
    // Still refused: the 503 shows in place and the letter stays.
    b.click_on("#dead-letters button.replay").await;
    b.wait_text("#dead-letters-notice", "retry later").await;
    outbox_read_only(dir.path(), false);
    b.click_on("#dead-letters button.replay").await;
    b.wait_text("#dead-letters-notice", "replayed").await;
    b.wait_text("#dead-letters", "No dead letters").await;
    b.screenshot(&shot("51-dead-letter-replayed")).await;
    let outbox = api.get("/api/v1/dead-letters").await;
    assert_eq!(outbox["items"], json!([]), "{outbox}");
    assert_clean(&b).await;
    b.quit().await;
    drop(phone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_incident_is_listed_and_shown_on_its_alarms_in_the_browser() {
    use fleetpulse_proto::wire::{CallStatus, IpAddress, StatusChange};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (acme, credential) = api.enterprise("Acme").await;
    let site = json!({"enterprise_id": acme, "name": "Berlin-3", "subnets": [{"public": "198.51.100.0/24"}]});
    let site_id = api.post("/api/v1/sites", site).await["id"].as_u64().unwrap();
    // Three phones at Berlin-3 that beat every 5 s (offline 15 s after they go quiet).
    let mut phones = Vec::new();
    for i in 1..=3u8 {
        let mut phone = RawDevice::connect(&server).await;
        phone.send(&[RawDevice::hello(&format!("001565000d{i:02}"), &credential, 5)]).await;
        assert!(matches!(phone.next().await, Some(fleetpulse_proto::wire::Downlink::Welcome(_))));
        let status = StatusChange {
            lines: vec![],
            call_status: CallStatus::Idle,
            firmware: "96.86.0.100".into(),
            public_ip: Some(IpAddress::V4([198, 51, 100, i])),
            private_ip: None,
            uptime_s: 60,
            last_reboot_ms: None,
        };
        phone.send(&[RawDevice::data(1, Message::StatusChange(status))]).await;
        acked(&mut phone, 1).await;
        phones.push(phone);
    }
    let in_site = format!("/api/v1/devices?enterprise_id={acme}&site_id={site_id}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while api.get(&in_site).await["items"].as_array().map_or(0, Vec::len) < 3 {
        assert!(Instant::now() < deadline, "the phones were not matched into Berlin-3");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rule = json!({"min_devices": 2, "min_fraction_pct": 0, "window_s": 30, "resolve_fraction_pct": 100});
    strategy(&api, acme, json!({"site_incident": rule})).await;
    // They go quiet: one incident of the three.
    drop(phones);
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let items = api.get(&format!("/api/v1/incidents?enterprise_id={acme}")).await["items"].clone();
        if items[0]["affected"] == 3 {
            break items[0]["id"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "no incident of the three phones: {items}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let b = Browser::start().await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    b.goto(&format!("{}/incidents?enterprise_id={acme}", server.api())).await;
    b.wait_text("#incident-list", "Berlin-3").await;
    b.wait_text("#incident-list", "3 of 3").await;
    b.click_on(&format!("#incident-list a[href='/incidents/{id}']")).await;
    b.wait_text("#incident-summary", "3 of 3 devices at site Berlin-3: Offline; 0 back").await;
    b.wait_text("#incident-members", "down").await;
    b.screenshot(&shot("42-site-incident")).await;
    // Its alarms say they are part of it.
    let alarm = api.get(&format!("/api/v1/alarms?enterprise_id={acme}")).await["items"][0]["id"].as_u64().unwrap();
    b.goto(&format!("{}/alarms/{alarm}", server.api())).await;
    b.wait_text("#alarm-incidents", &format!("Part of incident #{id}")).await;
    assert_clean(&b).await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_is_granted_rotated_and_revoked_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (acme, _) = api.enterprise("Acme").await;

    let b = Browser::start().await;
    sign_in(&b, &server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.wait_path("/dashboard").await;
    b.click_on("a[href='/relays']").await;
    b.wait_path("/relays").await;
    b.wait_text("#relays-list", "No relays yet").await;
    // A refusal shows in place: no such enterprise.
    b.type_into("#relay-name", "Lobby").await;
    b.type_into("#relay-scope-id", "999999").await;
    b.click_on("#relay-create").await;
    b.wait_text("#relay-form", "not found").await;
    b.execute("document.querySelector('#relay-scope-id').value = '';", json!([])).await;
    b.type_into("#relay-scope-id", &acme.to_string()).await;
    b.click_on("#relay-create").await;
    b.wait_text("#relay-credential", "shown this once").await;
    let value = "return document.querySelector('#relay-credential-value').textContent;";
    let first = b.execute(value, json!([])).await.as_str().unwrap().to_owned();
    assert!(first.starts_with("fpr_") && first.len() == 68, "{first}");
    b.wait_text("#relays-list", "in force").await;
    b.wait_text("#relays-list", &format!("Enterprise #{acme}")).await;
    show(&b, "#relay-credential").await;
    b.screenshot(&shot("60-relay-created")).await;
    let listed = api.get("/api/v1/relays").await;
    assert_eq!(listed["items"][0]["name"], "Lobby", "{listed}");
    assert!(!listed.to_string().contains(&first), "the credential is never listed");

    b.click_on("#relays-list button[data-rotate]").await;
    b.wait_text("#relay-credential", "New credential").await;
    let second = b.execute(value, json!([])).await.as_str().unwrap().to_owned();
    assert!(second.starts_with("fpr_") && second != first, "{second}");
    b.wait_text("#relays-notice", "refused within 5 seconds").await;

    b.click_on("#relays-list button[data-revoke]").await;
    b.wait_text("#relays-notice", "revoked").await;
    b.wait_text("#relays-list", "revoked").await;
    b.screenshot(&shot("61-relay-revoked")).await;
    let grant = &api.get("/api/v1/relays").await["items"][0];
    assert!(grant["rotated_at"].is_i64() && grant["revoked_at"].is_i64(), "{grant}");
    assert!(b.try_find("#relays-list button[data-rotate]").await.is_none(), "a revoked grant cannot be rotated");
    b.click_on("#relays-list button[data-delete]").await;
    b.wait_text("#relays-list", "No relays yet").await;
    assert_eq!(api.get("/api/v1/relays").await["items"], json!([]));
    assert_clean(&b).await;
    b.quit().await;
}
