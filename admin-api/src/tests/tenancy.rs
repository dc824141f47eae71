//! Tenant isolation (TEN-4, ALM-7): the authorization matrix, walked from the route table, and
//! the channel tree's visibility.

use axum::http::{Method, StatusCode};
use fleetpulse_proto::domain::DeviceKey;
use fleetpulse_proto::{ChannelId, EnterpriseId, Mac, UnixMillis};
use fleetpulse_store::{NewAccount, NewDeviceLabel, Role, StrategyReceiver, StrategySettings};
use serde_json::{Value, json};

use super::*;
use crate::hash_password;

/// Routes that are not about tenant objects: the caller's own session and account, and ops.
const SELF_ROUTES: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/auth/login",
    "/api/v1/auth/login/verify",
    "/api/v1/auth/session",
    "/api/v1/auth/forgot-password",
    "/api/v1/auth/reset-password",
    "/api/v1/auth/logout",
    "/api/v1/account",
    "/api/v1/account/password",
    "/api/v1/account/totp/setup",
    "/api/v1/account/totp",
    "/api/v1/account/totp/disable",
    "/api/v1/openapi.json",
    "/api/v1/account/device-columns",
    "/api/v1/command-kinds",
    "/api/v1/rps/redirect",
];

/// Routes that take foreign ids in the body and answer per id: checked by content below (every
/// foreign device `not_found`, nothing queued).
const BY_CONTENT: &[&str] = &["/api/v1/commands", "/api/v1/devices/bulk-edit"];

/// Listings checked by content (they take no foreign id): nothing foreign may appear.
const LISTINGS: &[&str] = &[
    "/api/v1/enterprises",
    "/api/v1/channels",
    "/api/v1/accounts",
    "/api/v1/sub-accounts",
    "/api/v1/device-labels",
    "/api/v1/relays",
];

struct World {
    h: Harness,
    platform: String,
    channel_admin: String,
    enterprise_admin: String,
    a: ChannelId,
    b: ChannelId,
    ea: EnterpriseId,
    ea1: EnterpriseId,
    eb: EnterpriseId,
    /// Objects of enterprise EB (channel B): foreign to both tenant accounts.
    device: u64,
    alarm: u64,
    strategy: u64,
    /// A maintenance window of EB.
    window: u64,
    incident: u64,
    /// A strategy of channel B, handed down to EB.
    channel_strategy: u64,
    /// The enterprise admin account of EB.
    eb_admin: u64,
    /// A sub-account of channel B's admin that sees only EB2 (another enterprise of channel B):
    /// the sibling of `eb_sub`, which sees EB.
    sibling: String,
    /// The sub-account of channel B's admin that sees EB.
    eb_sub: u64,
    eb2: EnterpriseId,
    /// A saved device search of EB's admin.
    label: u64,
    /// A command queued for `device`, and a file it uploaded.
    command: u64,
    file: u64,
    /// A scheduled task of EB and one of its runs.
    task: u64,
    run: u64,
    /// A device import of EB.
    import: u64,
    /// A site of EB.
    site: u64,
    /// A firmware image of EB.
    firmware: u64,
    /// A configuration profile of EB.
    profile: u64,
    /// A device group of EB, with `device` as its member.
    group: u64,
    /// A pending order of EB.
    order: u64,
    /// An entry of EB's RPS device list.
    rps: u64,
    /// A dead letter about EB's device (platform only).
    dead_letter: u64,
    /// A relay grant of EB, and one of channel B.
    relay: u64,
    channel_relay: u64,
}

async fn account(
    h: &Harness,
    email: &str,
    role: Role,
    channel: Option<ChannelId>,
    enterprise: Option<EnterpriseId>,
) -> String {
    sub_account(h, email, role, channel, enterprise, None).await
}

/// Creates an account (a sub-account of `parent` with these permissions, if given) and logs in.
async fn sub_account(
    h: &Harness,
    email: &str,
    role: Role,
    channel: Option<ChannelId>,
    enterprise: Option<EnterpriseId>,
    parent: Option<(fleetpulse_proto::AccountId, fleetpulse_store::Permissions)>,
) -> String {
    let (parent_id, permissions) = parent.unzip();
    let new = NewAccount {
        parent_id,
        permissions,
        email: email.into(),
        password_hash: hash_password("tenant-password").expect("hash"),
        role,
        channel_id: channel,
        enterprise_id: enterprise,
        must_change_password: false,
    };
    h.store.entities.create_account(new).await.expect("account");
    let reply = h.login(email, "tenant-password").await;
    reply.json()["token"].as_str().expect("token").to_owned()
}

async fn world() -> World {
    let h = harness();
    let platform = h.admin_token().await;
    let a = stored_channel(&h, "A", None).await;
    let a1 = stored_channel(&h, "A1", Some(a)).await;
    let b = stored_channel(&h, "B", None).await;
    let ea = stored_enterprise(&h, "EA", a).await;
    let ea1 = stored_enterprise(&h, "EA1", a1).await;
    let eb = stored_enterprise(&h, "EB", b).await;
    let channel_admin = account(&h, "channel-a@example.com", Role::ChannelAdmin, Some(a), None).await;
    let enterprise_admin = account(&h, "enterprise-a@example.com", Role::EnterpriseAdmin, None, Some(ea)).await;
    account(&h, "enterprise-b@example.com", Role::EnterpriseAdmin, None, Some(eb)).await;
    let eb_admin =
        h.store.entities.account_by_email("enterprise-b@example.com").await.expect("read").expect("EB admin");
    // Sibling sub-accounts of channel B's admin, with every feature: one sees EB, one EB2 only.
    let eb2 = stored_enterprise(&h, "EB2", b).await;
    account(&h, "channel-b@example.com", Role::ChannelAdmin, Some(b), None).await;
    let b_admin = h.store.entities.account_by_email("channel-b@example.com").await.expect("read").expect("B admin");
    let only = |e: EnterpriseId| fleetpulse_store::Permissions {
        features: fleetpulse_store::Feature::ALL.to_vec(),
        data: fleetpulse_store::DataPermission::Only { channels: vec![], enterprises: vec![e] },
    };
    let sub = |email: &'static str, e: EnterpriseId| {
        sub_account(&h, email, Role::ChannelAdmin, Some(b), None, Some((b_admin.id, only(e))))
    };
    sub("sub-eb@example.com", eb).await;
    let sibling = sub("sub-eb2@example.com", eb2).await;
    let eb_sub = h.store.entities.account_by_email("sub-eb@example.com").await.expect("read").expect("sub").id.0;

    let device = h.phone(eb, "00156500bb01", "T54W").await;
    let alarm = h.raise(eb, device, 105, "crash").await;
    let settings = StrategySettings {
        name: "B ops".into(),
        enabled: true,
        alarm_types: vec![],
        severities: vec![],
        receivers: vec![StrategyReceiver::Email("ops@b.example".into())],
        group_wait_ms: 0,
        group_interval_ms: 60_000,
        repeat_interval_ms: 3_600_000,
        thresholds: vec![],
        site_incident: None,
    };
    let strategy = h.store.entities.create_strategy(eb, settings.clone(), UnixMillis(1)).await.expect("strategy").id.0;
    let window = fleetpulse_store::WindowSettings {
        name: "B nightly".into(),
        enabled: true,
        scope: fleetpulse_store::WindowScope::Enterprise,
        alarm_types: vec![],
        timing: fleetpulse_store::WindowTiming::Recurring {
            weekdays: vec![],
            hour: 1,
            minute: 0,
            duration_minutes: 60,
        },
    };
    let window = h.store.entities.create_window(eb, window, UnixMillis(1)).await.expect("window").id.0;
    let incident = fleetpulse_store::IncidentUpdate {
        enterprise_id: eb,
        strategy_id: fleetpulse_proto::StrategyId(strategy),
        site_id: fleetpulse_proto::SiteId(1),
        site_name: "B HQ".into(),
        code: fleetpulse_proto::AlarmTypeCode(109),
        opened_at: UnixMillis(1),
        at: UnixMillis(1),
        site_devices: 1,
        affected: 1,
        back: 0,
        resolved_at: None,
        members: vec![],
    };
    let incident = h.store.entities.record_incident(incident).await.expect("incident").0;
    let inheritance = fleetpulse_store::StrategyInheritance {
        sub_channel_levels: None,
        enterprises_may: fleetpulse_store::EnterpriseFreedom::Override,
    };
    let channel_strategy =
        h.store.entities.create_channel_strategy(b, settings, inheritance, UnixMillis(1)).await.expect("strategy").id.0;
    let label = NewDeviceLabel { account_id: eb_admin.id, name: "B online".into(), filter: "online=true".into() };
    let label = h.store.entities.create_device_label(label, UnixMillis(1)).await.expect("label").id;
    let (command, file) = super::commands::command_and_file(&h, device, eb, eb_admin.id).await;
    let task = fleetpulse_store::NewTask {
        enterprise_id: eb,
        name: "B reboot".into(),
        kind: "reboot".into(),
        args: "{}".into(),
        deadline_s: 3_600,
        targets: fleetpulse_store::TaskTargets::DeviceIds(vec![device]),
        schedule: fleetpulse_store::TaskSchedule::Once { at: UnixMillis(100) },
        time_zone: "UTC".into(),
        missed: fleetpulse_store::MissedRuns::RunOnce,
        created_by: eb_admin.id,
        next_run_at: UnixMillis(100),
    };
    let task = h.store.entities.create_task(task, UnixMillis(1)).await.expect("task").id;
    let run = h.store.entities.claim_run(task, UnixMillis(100), None, true, UnixMillis(200)).await.expect("claim");
    let run = run.expect("a run").id.0;
    let import = h
        .store
        .entities
        .create_device_import(eb, eb_admin.id, fleetpulse_store::ImportMode::Merge, UnixMillis(1))
        .await
        .expect("import")
        .id;
    let site = fleetpulse_store::NewSite {
        enterprise_id: eb,
        parent_id: None,
        name: "B HQ".into(),
        description: String::new(),
        location: String::new(),
        subnets: vec![],
        at: UnixMillis(1),
    };
    let site = h.store.entities.create_site(site).await.expect("site").id.0;
    let firmware = super::firmware::stored_image(&h, eb, eb_admin.id, "T54W", "2.0").await.id.0;
    let profile_settings = fleetpulse_store::ProfileSettings {
        name: "B profile".into(),
        description: String::new(),
        parameters: [("call.autoAnswer.SIP".to_owned(), "1".to_owned())].into_iter().collect(),
        firmware: Default::default(),
    };
    let profile = h.store.entities.create_profile(eb, profile_settings, UnixMillis(1)).await.expect("profile").id.0;
    let group = fleetpulse_store::NewGroup {
        enterprise_id: eb,
        name: "B desks".into(),
        description: String::new(),
        at: UnixMillis(1),
    };
    let group = h.store.entities.create_group(group).await.expect("group").id;
    let members = fleetpulse_store::GroupTargets::Devices(vec![device]);
    h.store.entities.add_group_members(group, members).await.expect("members");
    let order = fleetpulse_store::NewOrder {
        enterprise_id: eb,
        seller_channel_id: Some(b),
        package: "B package".into(),
        max_devices: 5,
        duration_months: 12,
        effective_date: "2999-01-01".into(),
        starts_at: UnixMillis(i64::MAX - 2),
        ends_at: UnixMillis(i64::MAX - 1),
        amount: 100,
        created_by: eb_admin.id,
        created_at: UnixMillis(1),
    };
    let order = h.store.entities.create_order(order).await.expect("order").id.0;
    let rps = fleetpulse_store::NewRpsDevice {
        enterprise_id: eb,
        key: DeviceKey::Mac(Mac::parse("00156500bb02").expect("mac")),
        server_url: "https://rps.b.example".into(),
        at: UnixMillis(1),
    };
    let rps = h.store.entities.add_rps_device(rps).await.expect("RPS entry").id.0;
    let letter = fleetpulse_store::NewDeadLetter {
        stage: fleetpulse_store::DeadLetterStage::AlarmEffects,
        reason: fleetpulse_store::DeadLetterReason { code: "store_refused", detail: "test".into() },
        enterprise_id: Some(eb),
        device_id: Some(device),
        payload: json!({"kind": "alarm_record"}),
        attempts: 1,
        at: UnixMillis(1),
    };
    let dead_letter = h.store.entities.record_dead_letter(letter, 10).await.expect("dead letter").0.0;
    let relay = |name: &str, scope: fleetpulse_store::TenantRef, hash: u8| fleetpulse_store::NewRelay {
        name: name.into(),
        scope,
        credential_hash: fleetpulse_store::TokenHash([hash; 32]),
        created_by: eb_admin.id,
        at: UnixMillis(1),
    };
    let eb_relay = relay("B lobby", fleetpulse_store::TenantRef::Enterprise(eb), 1);
    let channel_relay = relay("B sites", fleetpulse_store::TenantRef::Channel(b), 2);
    let relay = h.store.entities.create_relay(eb_relay).await.expect("relay").id.0;
    let channel_relay = h.store.entities.create_relay(channel_relay).await.expect("relay").id.0;
    World {
        h,
        platform,
        channel_admin,
        enterprise_admin,
        a,
        b,
        ea,
        ea1,
        eb,
        device: device.0,
        alarm,
        strategy,
        window,
        incident,
        channel_strategy,
        eb_admin: eb_admin.id.0,
        sibling,
        eb_sub,
        eb2,
        label,
        command: command.0,
        file: file.0,
        task: task.0,
        run,
        import,
        site,
        firmware,
        profile,
        group: group.0,
        order,
        rps,
        dead_letter,
        relay,
        channel_relay,
    }
}

fn strategy_body() -> Value {
    json!({"name": "x", "receivers": ["x@example.com"]})
}

/// The concrete request for a route aimed at tenant B's objects, or `None` for self routes and
/// listings. Panics for a route the matrix does not know: add it here when adding a route.
fn foreign_request(w: &World, path: &str, method: &Method) -> Option<(String, Option<Value>)> {
    if SELF_ROUTES.contains(&path) || BY_CONTENT.contains(&path) || (LISTINGS.contains(&path) && method == Method::GET)
    {
        return None;
    }
    let id = |prefix: &str| path.starts_with(prefix) && path.contains("{id}");
    let uri = if id("/api/v1/enterprises/") {
        path.replace("{id}", &w.eb.to_string())
    } else if id("/api/v1/devices/") {
        path.replace("{id}", &w.device.to_string())
    } else if id("/api/v1/alarms/") {
        path.replace("{id}", &w.alarm.to_string())
    } else if id("/api/v1/channel-alarm-strategies/") {
        path.replace("{id}", &w.channel_strategy.to_string())
    } else if id("/api/v1/alarm-strategies/") {
        path.replace("{id}", &w.strategy.to_string())
    } else if id("/api/v1/maintenance-windows/") {
        path.replace("{id}", &w.window.to_string())
    } else if id("/api/v1/incidents/") {
        path.replace("{id}", &w.incident.to_string())
    } else if id("/api/v1/channels/") {
        path.replace("{id}", &w.b.to_string())
    } else if id("/api/v1/accounts/") {
        path.replace("{id}", &w.eb_admin.to_string())
    } else if id("/api/v1/sub-accounts/") {
        path.replace("{id}", &w.eb_sub.to_string())
    } else if id("/api/v1/device-labels/") {
        path.replace("{id}", &w.label.to_string())
    } else if id("/api/v1/commands/") {
        path.replace("{id}", &w.command.to_string())
    } else if id("/api/v1/files/") {
        path.replace("{id}", &w.file.to_string())
    } else if id("/api/v1/device-imports/") {
        path.replace("{id}", &w.import.to_string())
    } else if id("/api/v1/sites/") {
        path.replace("{id}", &w.site.to_string())
    } else if id("/api/v1/firmware/") {
        path.replace("{id}", &w.firmware.to_string())
    } else if path == "/api/v1/firmware" && method == Method::POST {
        format!("{path}?enterprise_id={}&model=T54W&version=9", w.eb)
    } else if id("/api/v1/profiles/") {
        path.replace("{id}", &w.profile.to_string())
    } else if id("/api/v1/groups/") {
        path.replace("{id}", &w.group.to_string())
    } else if id("/api/v1/rps-devices/") {
        path.replace("{id}", &w.rps.to_string())
    } else if id("/api/v1/orders/") {
        path.replace("{id}", &w.order.to_string())
    } else if id("/api/v1/dead-letters/") {
        path.replace("{id}", &w.dead_letter.to_string())
    } else if matches!(path, "/api/v1/dead-letters" | "/api/v1/dead-letters/replay") {
        format!("{path}?stage=alarm_effects")
    } else if id("/api/v1/relays/") {
        path.replace("{id}", &w.relay.to_string())
    } else if id("/api/v1/tasks/") {
        path.replace("{id}", &w.task.to_string()).replace("{run}", &w.run.to_string())
    } else if matches!(
        path,
        "/api/v1/devices"
            | "/api/v1/dashboard"
            | "/api/v1/alarms"
            | "/api/v1/alarms/latest"
            | "/api/v1/alarms/summary"
            | "/api/v1/operation-logs"
            | "/api/v1/operation-logs/export"
            | "/api/v1/tasks"
            | "/api/v1/devices/export"
            | "/api/v1/device-imports"
            | "/api/v1/sites"
            | "/api/v1/sites/import"
            | "/api/v1/firmware"
            | "/api/v1/profiles"
            | "/api/v1/profile-deployments"
            | "/api/v1/groups"
            | "/api/v1/default-groups"
            | "/api/v1/orders"
            | "/api/v1/orders/export"
            | "/api/v1/statements"
            | "/api/v1/statements/export"
            | "/api/v1/rps-devices"
            | "/api/v1/rps-devices/import"
            | "/api/v1/incidents"
    ) {
        format!("{path}?enterprise_id={}", w.eb)
    } else if matches!(
        path,
        "/api/v1/enterprises"
            | "/api/v1/channels"
            | "/api/v1/accounts"
            | "/api/v1/sub-accounts"
            | "/api/v1/device-labels"
            | "/api/v1/nodes"
            | "/api/v1/relays"
    ) {
        path.to_owned()
    } else {
        panic!("route {path} is not in the authorization matrix: say which tenant object it reaches");
    };
    let body = match (path, method) {
        (_, m) if m == Method::GET || m == Method::DELETE => None,
        ("/api/v1/enterprises", _) => Some(json!({"name": "intruder", "channel_id": w.b})),
        ("/api/v1/channels", _) => Some(json!({"name": "intruder", "parent_id": w.b})),
        ("/api/v1/device-labels", _) => Some(json!({"name": "intruder", "filter": format!("enterprise_id={}", w.eb)})),
        ("/api/v1/accounts", _) => Some(json!({
            "email": "intruder@example.com", "password": "long-enough-1", "role": "enterprise_admin", "enterprise_id": w.eb
        })),
        ("/api/v1/sub-accounts", _) => Some(json!({
            "email": "intruder-sub@example.com", "password": "long-enough-1", "features": ["devices"],
            "data": {"only": {"enterprises": [w.eb]}}
        })),
        ("/api/v1/sub-accounts/{id}/permissions", _) => Some(json!({"features": ["devices"], "data": "all"})),
        ("/api/v1/devices/{id}/commands", _) => Some(json!({"kind": "reboot"})),
        ("/api/v1/devices/{id}/firmware-upgrade", _) => Some(json!({"image": w.firmware})),
        ("/api/v1/devices/{id}/move", _) => Some(json!({"enterprise_id": w.eb})),
        ("/api/v1/sites", _) => Some(json!({"enterprise_id": w.eb, "name": "intruder"})),
        ("/api/v1/sites/{id}", _) => Some(json!({"name": "intruder"})),
        ("/api/v1/devices/{id}/groups" | "/api/v1/default-groups", _) => Some(json!({"group_ids": [w.group]})),
        ("/api/v1/groups", _) => Some(json!({"enterprise_id": w.eb, "name": "intruders"})),
        ("/api/v1/orders", _) => Some(json!({
            "enterprise_id": w.eb, "package": "intruder", "max_devices": 1, "duration_months": 1,
            "effective_date": "2999-01-01"
        })),
        ("/api/v1/groups/{id}", _) => Some(json!({"name": "intruders"})),
        ("/api/v1/enterprises/{id}/move", _) => Some(json!({"channel_id": w.a})),
        ("/api/v1/sub-accounts/{id}", _) => Some(json!({"contact_name": "intruder", "data": "all"})),
        ("/api/v1/rps-devices", _) => {
            Some(json!({"enterprise_id": w.eb, "mac": "001565000ffe", "server_url": "https://intruder.example"}))
        }
        ("/api/v1/rps-devices/{id}", _) => Some(json!({"server_url": "https://intruder.example"})),
        ("/api/v1/groups/{id}/members" | "/api/v1/groups/{id}/members/remove", _) => {
            Some(json!({"device_ids": [w.device]}))
        }
        ("/api/v1/relays", _) => Some(json!({"name": "intruder", "scope": {"enterprise": w.eb}})),
        ("/api/v1/relays/{id}", _) => Some(json!({"name": "intruder"})),
        ("/api/v1/devices", m) if m == Method::POST => Some(json!({"enterprise_id": w.eb, "mac": "0015650fffff"})),
        (p, _)
            if p.ends_with("alarm-strategies")
                || p == "/api/v1/alarm-strategies/{id}"
                || p == "/api/v1/channel-alarm-strategies/{id}" =>
        {
            Some(strategy_body())
        }
        (p, _) if p.ends_with("maintenance-windows") || p == "/api/v1/maintenance-windows/{id}" => {
            Some(json!({"name": "intruder", "timing": {"kind": "once", "start": 1, "end": 2}}))
        }
        ("/api/v1/enterprises/{id}/alarm-strategy-choices", _) => {
            Some(json!({"strategy_id": w.channel_strategy, "choice": "opt_out"}))
        }
        ("/api/v1/accounts/{id}/email", _) => Some(json!({"email": "intruder@example.com"})),
        ("/api/v1/profiles", _) => Some(json!({"enterprise_id": w.eb, "name": "intruder"})),
        ("/api/v1/profiles/{id}", _) => Some(json!({"name": "intruder"})),
        ("/api/v1/profiles/{id}/copy", _) => Some(json!({"name": "intruder"})),
        ("/api/v1/profile-deployments", _) => Some(json!({
            "enterprise_id": w.eb, "target": {"container": "global"}, "profiles": [w.profile]
        })),
        ("/api/v1/tasks", _) => Some(json!({
            "enterprise_id": w.eb, "kind": "reboot", "targets": {"device_ids": [w.device]},
            "schedule": {"kind": "daily", "time": "03:00"}
        })),
        _ => Some(json!({})),
    };
    Some((uri, body))
}

#[tokio::test]
async fn every_route_answers_404_or_403_for_another_tenants_objects() {
    let w = world().await;
    let mut cells = 0;
    let callers = [
        ("channel A admin", &w.channel_admin),
        ("enterprise EA admin", &w.enterprise_admin),
        ("channel B sub-account seeing EB2 only (sibling of EB's)", &w.sibling),
    ];
    for (caller, token) in callers {
        for (path, _) in crate::routes::all() {
            for method in [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
                let Some((uri, body)) = foreign_request(&w, path, &method) else { continue };
                let reply = w.h.call(method.clone(), &uri, Some(token), body).await;
                if reply.status == StatusCode::METHOD_NOT_ALLOWED {
                    continue;
                }
                cells += 1;
                assert!(!reply.text().contains("route not found"), "{method} {uri}: the matrix must reach the route");
                assert!(
                    matches!(reply.status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN),
                    "{caller}: {method} {uri} answered {} {}",
                    reply.status,
                    reply.text()
                );
            }
        }
    }
    assert!(cells >= 100, "the matrix covered {cells} cells");
    // Bulk commands name foreign devices in the body: each is not found, none is queued.
    for (caller, token) in callers {
        let by_ids = json!({"kind": "reboot", "device_ids": [w.device]});
        let reply = w.h.call(Method::POST, "/api/v1/commands", Some(token), Some(by_ids)).await;
        assert_eq!(reply.status, StatusCode::OK, "{caller}: {}", reply.text());
        assert_eq!(reply.json()["queued"], 0, "{caller}: {}", reply.text());
        assert_eq!(reply.json()["results"][0]["error"]["code"], "not_found", "{caller}: {}", reply.text());
        let by_filter = json!({"kind": "reboot", "filter": {"enterprise_id": w.eb}});
        let reply = w.h.call(Method::POST, "/api/v1/commands", Some(token), Some(by_filter)).await;
        let refused = matches!(reply.status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN);
        assert!(refused || reply.json()["queued"] == 0, "{caller}: {} {}", reply.status, reply.text());
    }
    let device = fleetpulse_proto::DeviceId(w.device);
    let commands = w.h.store.entities.list_device_commands(device, fleetpulse_store::Page::first(10)).await.unwrap();
    assert_eq!(commands.len(), 1, "only the world's own command");
    assert_eq!(commands[0].state, fleetpulse_store::CommandState::Queued, "not cancelled");
    // Nothing of B changed.
    let eb_admin = w.h.store.entities.account(fleetpulse_proto::AccountId(w.eb_admin)).await.unwrap().expect("kept");
    assert!(!eb_admin.frozen);
    let strategy = w.h.store.entities.strategy(fleetpulse_proto::StrategyId(w.strategy)).await.unwrap().expect("kept");
    assert_eq!(strategy.settings.name, "B ops");
    let window = w.h.store.entities.window(fleetpulse_proto::WindowId(w.window)).await.unwrap().expect("kept");
    assert_eq!(window.settings.name, "B nightly");
    let channel_strategy = fleetpulse_proto::StrategyId(w.channel_strategy);
    let channel_strategy = w.h.store.entities.channel_strategy(channel_strategy).await.unwrap().expect("kept");
    assert_eq!(channel_strategy.settings.name, "B ops");
    assert!(w.h.store.entities.strategy_choices(w.eb).await.unwrap().is_empty(), "EB chose nothing");
    let labels = w.h.store.entities.list_device_labels(fleetpulse_proto::AccountId(w.eb_admin)).await.unwrap();
    assert_eq!(labels.iter().map(|l| l.id).collect::<Vec<_>>(), [w.label]);
    let sites = w.h.store.entities.list_sites(w.eb).await.unwrap();
    assert_eq!(
        sites.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["B HQ", "Internet", "Intranet"],
        "B's sites"
    );
    let task = w.h.store.entities.task(fleetpulse_proto::TaskId(w.task)).await.unwrap().expect("kept");
    assert_eq!(task.state, fleetpulse_store::TaskState::Completed, "B's task is as it was");
    let tasks = w.h.store.entities.list_tasks(None, fleetpulse_store::Page::first(10)).await.unwrap();
    assert_eq!(tasks.len(), 1, "no task was created for B");
    let image = fleetpulse_proto::FirmwareId(w.firmware);
    assert!(w.h.store.entities.firmware(image).await.unwrap().is_some(), "B's firmware image is kept");
    let profile = w.h.store.entities.profile(fleetpulse_proto::ProfileId(w.profile)).await.unwrap().expect("kept");
    assert_eq!(profile.settings.name, "B profile");
    assert!(w.h.store.entities.list_deployments(w.eb).await.unwrap().is_empty(), "no deployment was made for B");
    let group = w.h.store.entities.group(fleetpulse_proto::GroupId(w.group)).await.unwrap().expect("kept");
    assert_eq!((group.name.as_str(), group.members), ("B desks", 1), "B's group is as it was");
    assert_eq!(w.h.store.entities.device_groups(device).await.unwrap(), [group.id]);
    assert!(w.h.store.entities.default_groups(w.eb).await.unwrap().is_empty());
    let groups = w.h.store.entities.list_groups(None, 0, 100).await.unwrap();
    assert_eq!(groups.len(), 1, "no group was created for B");
    let b_orders = fleetpulse_store::OrderFilter::at(UnixMillis(1));
    let b_orders = w.h.store.entities.list_orders(&b_orders, fleetpulse_store::Page::first(10)).await.unwrap();
    assert_eq!(b_orders.len(), 1, "no order was placed for B");
    assert_eq!(b_orders[0].cancelled_at, None, "B's order is not cancelled");
    let rps = w.h.store.entities.rps_device(fleetpulse_proto::RpsDeviceId(w.rps)).await.unwrap().expect("kept");
    assert_eq!(rps.server_url, "https://rps.b.example");
    let dead_letter = fleetpulse_store::DeadLetterId(w.dead_letter);
    assert!(w.h.store.entities.dead_letter(dead_letter).await.unwrap().is_some(), "the dead letter is kept");
    let b_freeze = w.h.store.entities.tenant_freeze(fleetpulse_store::TenantRef::Channel(w.b)).await.unwrap();
    assert_eq!(b_freeze, None, "channel B is not frozen");
    let relay = w.h.store.entities.relay(fleetpulse_store::RelayId(w.relay)).await.unwrap().expect("kept");
    assert_eq!(
        (relay.name.as_str(), relay.revoked_at, relay.rotated_at),
        ("B lobby", None, None),
        "B's relay as it was"
    );
    assert_eq!(w.h.store.entities.list_relays().await.unwrap().len(), 2, "no relay was created for B");
    let eb_freeze = w.h.store.entities.tenant_freeze(fleetpulse_store::TenantRef::Enterprise(w.eb)).await.unwrap();
    assert_eq!(eb_freeze, None, "EB is not frozen");
    assert_eq!(w.h.store.entities.enterprise(w.eb).await.unwrap().expect("kept").channel_id, Some(w.b), "not moved");
    let eb_sub = w.h.store.entities.account(fleetpulse_proto::AccountId(w.eb_sub)).await.unwrap().expect("not deleted");
    assert_eq!(eb_sub.permissions.map(|p| p.features.len()), Some(fleetpulse_store::Feature::ALL.len()));
    let alarm = w.h.store.events.alarm_record(w.alarm).await.unwrap().expect("kept");
    assert_eq!(alarm.status, fleetpulse_store::AlarmStatus::Active);
    assert_eq!(
        w.h.store.entities.enterprise(w.eb).await.unwrap().expect("kept").channel_authorization,
        fleetpulse_store::ChannelAuthorization::None
    );
    // The sibling's listings hold only what its data permissions give it.
    let listed = |uri: &'static str| {
        let h = &w.h;
        let token = w.sibling.clone();
        async move {
            let r = h.get(uri, &token).await;
            assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
            r.json()["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|e| e["id"].as_u64().expect("id"))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("/api/v1/enterprises").await, [w.eb2.0]);
    // No caller lists EB's import among its own.
    for (caller, token) in callers {
        let imports = w.h.get("/api/v1/device-imports", token).await;
        assert_eq!(imports.status, StatusCode::OK, "{caller}: {}", imports.text());
        assert!(!item_ids(&imports).contains(&w.import), "{caller}: {}", imports.text());
    }
    assert!(listed("/api/v1/channels").await.is_empty());
    assert!(listed("/api/v1/relays").await.is_empty(), "EB's and channel B's relays are not EB2's");
    for (caller, token) in callers {
        let relays = w.h.get("/api/v1/relays", token).await;
        assert_eq!(relays.status, StatusCode::OK, "{caller}: {}", relays.text());
        let ids = item_ids(&relays);
        assert!(!ids.contains(&w.relay) && !ids.contains(&w.channel_relay), "{caller}: {}", relays.text());
    }
    assert!(listed("/api/v1/accounts").await.iter().all(|&a| a != w.eb_admin));
}

#[tokio::test]
async fn listings_show_a_channel_its_subtree_and_an_enterprise_itself() {
    let w = world().await;
    let ids = |r: Reply| -> Vec<u64> {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()["items"].as_array().expect("items").iter().map(|e| e["id"].as_u64().expect("id")).collect()
    };
    let mine = ids(w.h.get("/api/v1/enterprises", &w.channel_admin).await);
    assert_eq!(mine, [w.ea.0, w.ea1.0], "channel A sees EA and its sub-channel's EA1, not EB");
    assert_eq!(ids(w.h.get("/api/v1/enterprises", &w.enterprise_admin).await), [w.ea.0]);
    let channels = ids(w.h.get("/api/v1/channels", &w.channel_admin).await);
    assert_eq!(channels.len(), 1, "only A1 below A: {channels:?}");
    assert!(!channels.contains(&w.b.0) && !channels.contains(&w.a.0));
    w.h.get("/api/v1/channels", &w.enterprise_admin).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let accounts = ids(w.h.get("/api/v1/accounts", &w.channel_admin).await);
    let id_of = |email: &str| {
        let h = &w.h;
        let email = email.to_owned();
        async move { h.store.entities.account_by_email(&email).await.expect("read").expect("account").id.0 }
    };
    let (own, ea_admin) = (id_of("channel-a@example.com").await, id_of("enterprise-a@example.com").await);
    assert_eq!(accounts, [own, ea_admin], "channel A lists its own channel's and its enterprises' accounts");
    let all = ids(w.h.get("/api/v1/accounts", &w.platform).await);
    assert!(all.contains(&w.eb_admin) && all.contains(&own) && all.contains(&w.eb_sub) && all.len() == 7, "{all:?}");
    w.h.get("/api/v1/accounts", &w.enterprise_admin).await.assert_error(StatusCode::FORBIDDEN, "forbidden");

    // Inside its scope a channel works normally: sub-channel enterprise, new enterprise in A.
    assert_eq!(w.h.get(&format!("/api/v1/enterprises/{}", w.ea1), &w.channel_admin).await.status, StatusCode::OK);
    w.h.get(&format!("/api/v1/enterprises/{}", w.ea1), &w.enterprise_admin)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let created =
        w.h.call(Method::POST, "/api/v1/enterprises", Some(&w.channel_admin), Some(json!({"name": "EA2"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert_eq!(created.json()["channel_id"], w.a.0);
    // Alarms across the whole subtree without naming an enterprise: none of B's.
    let alarms = w.h.get("/api/v1/alarms", &w.channel_admin).await;
    assert_eq!(alarms.status, StatusCode::OK, "{}", alarms.text());
    assert!(alarms.json()["items"].as_array().expect("items").is_empty(), "{}", alarms.text());
    let b_alarms = w.h.get("/api/v1/alarms/latest", &w.platform).await;
    assert_eq!(b_alarms.json()["items"].as_array().expect("items").len(), 1, "the platform sees B's alarm");
    let sibling = w.h.get("/api/v1/alarms/latest", &w.sibling).await;
    assert!(sibling.json()["items"].as_array().expect("items").is_empty(), "{}", sibling.text());
    let devices = w.h.get(&format!("/api/v1/devices?enterprise_id={}", w.ea), &w.enterprise_admin).await;
    assert_eq!(devices.status, StatusCode::OK);
    let own = w.h.get("/api/v1/devices", &w.enterprise_admin).await;
    assert_eq!(own.status, StatusCode::OK, "an enterprise admin's listing defaults to its enterprise");
    // A sub-channel of a channel that forbids them is refused (400), an enterprise admin cannot
    // create accounts (403).
    let forbid = w.h.call(Method::POST, "/api/v1/channels", Some(&w.channel_admin), Some(json!({"name": "A2"}))).await;
    assert_eq!(forbid.status, StatusCode::CREATED, "A allows sub-channels: {}", forbid.text());
    let a2 = forbid.json()["id"].as_u64().expect("id");
    let below = json!({"name": "A2x", "parent_id": a2});
    let refused = w.h.call(Method::POST, "/api/v1/channels", Some(&w.channel_admin), Some(below)).await;
    refused.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn freezing_ends_sessions_and_refuses_logins_until_unfrozen() {
    let w = world().await;
    let ea_admin = w.h.store.entities.account_by_email("enterprise-a@example.com").await.unwrap().expect("EA admin");
    let uri = |action: &str| format!("/api/v1/accounts/{}{action}", ea_admin.id);
    assert_eq!(w.h.get("/api/v1/devices", &w.enterprise_admin).await.status, StatusCode::OK);

    // The channel admin sees and freezes an enterprise admin of its subtree; no secrets shown.
    let shown = w.h.get(&uri(""), &w.channel_admin).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.text());
    assert_eq!(shown.json()["frozen"], false);
    let frozen = w.h.call(Method::POST, &uri("/freeze"), Some(&w.channel_admin), None).await;
    assert_eq!(frozen.status, StatusCode::OK, "{}", frozen.text());
    assert_eq!(frozen.json()["frozen"], true);
    assert_eq!(frozen.json()["email"], "enterprise-a@example.com");
    for reply in [&shown, &frozen] {
        let text = reply.text();
        assert!(!text.contains("password") && !text.contains("totp") && !text.contains("argon2"), "{text}");
    }
    assert!(w.h.store.entities.account(ea_admin.id).await.unwrap().expect("account").frozen);

    // Its session ended, and its login gets the answer of a wrong password.
    w.h.get("/api/v1/devices", &w.enterprise_admin).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let wrong = w.h.login("enterprise-a@example.com", "not-the-password").await;
    let refused = w.h.login("enterprise-a@example.com", "tenant-password").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!((refused.status, refused.json()), (wrong.status, wrong.json()), "frozen looks like a wrong password");

    // Another channel's account is not found; an account cannot freeze itself; an enterprise
    // admin has no access.
    let foreign = format!("/api/v1/accounts/{}/freeze", w.eb_admin);
    w.h.call(Method::POST, &foreign, Some(&w.channel_admin), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let own = w.h.store.entities.account_by_email("channel-a@example.com").await.unwrap().expect("own").id;
    let itself = format!("/api/v1/accounts/{own}/freeze");
    w.h.call(Method::POST, &itself, Some(&w.channel_admin), None).await.assert_error(StatusCode::CONFLICT, "conflict");
    let platform = w.h.store.entities.account_by_email(ADMIN_EMAIL).await.unwrap().expect("platform").id;
    let platform_uri = format!("/api/v1/accounts/{platform}/freeze");
    w.h.call(Method::POST, &platform_uri, Some(&w.channel_admin), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    w.h.call(Method::POST, &platform_uri, Some(&w.platform), None).await.assert_error(StatusCode::CONFLICT, "conflict");
    let other = w.h.login("enterprise-b@example.com", "tenant-password").await;
    let other = other.json()["token"].as_str().expect("token").to_owned();
    w.h.call(Method::POST, &uri("/unfreeze"), Some(&other), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let missing = format!("/api/v1/accounts/{}", w.eb_admin + 1_000);
    w.h.get(&missing, &w.platform).await.assert_error(StatusCode::NOT_FOUND, "not_found");

    // Unfrozen, it logs in again.
    let unfrozen = w.h.call(Method::POST, &uri("/unfreeze"), Some(&w.channel_admin), None).await;
    assert_eq!(unfrozen.status, StatusCode::OK, "{}", unfrozen.text());
    assert_eq!(unfrozen.json()["frozen"], false);
    let again = w.h.login("enterprise-a@example.com", "tenant-password").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    let token = again.json()["token"].as_str().expect("token").to_owned();
    assert_eq!(w.h.get("/api/v1/devices", &token).await.status, StatusCode::OK);
}

/// ALM-3: a strategy notifies only its owner's accounts (an enterprise's own, a channel's own);
/// any other account answers 404 `not_found` exactly like one that does not exist, and the
/// receiver picker lists exactly the owner's accounts.
#[tokio::test]
async fn a_receiver_account_of_another_tenant_is_not_found() {
    let w = world().await;
    let id_of = |email: &str| {
        let h = &w.h;
        let email = email.to_owned();
        async move { h.store.entities.account_by_email(&email).await.expect("read").expect("account").id.0 }
    };
    let (ea_admin, a_admin) = (id_of("enterprise-a@example.com").await, id_of("channel-a@example.com").await);
    let b_admin = id_of("channel-b@example.com").await;
    let body = |account: u64| json!({"name": "x", "receivers": [{"account": account}, "ops@a.example"]});
    let post = |path: String, token: &str, account: u64| {
        let (h, token) = (&w.h, token.to_owned());
        async move { h.call(Method::POST, &path, Some(&token), Some(body(account))).await }
    };
    let ea_path = format!("/api/v1/enterprises/{}/alarm-strategies", w.ea);
    let created = post(ea_path.clone(), &w.enterprise_admin, ea_admin).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert_eq!(created.json()["settings"]["receivers"], json!([{"account": ea_admin}, {"email": "ops@a.example"}]));
    for foreign in [w.eb_admin, w.eb_sub, a_admin, 999_999] {
        post(ea_path.clone(), &w.enterprise_admin, foreign).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    let a_path = format!("/api/v1/channels/{}/alarm-strategies", w.a);
    let created = post(a_path.clone(), &w.channel_admin, a_admin).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    for foreign in [ea_admin, b_admin, w.eb_admin] {
        post(a_path.clone(), &w.channel_admin, foreign).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    let picked = |r: Reply| -> Vec<u64> {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()["items"].as_array().expect("items").iter().map(|a| a["id"].as_u64().expect("id")).collect()
    };
    let ea_accounts = format!("/api/v1/enterprises/{}/alarm-receiver-accounts", w.ea);
    assert_eq!(picked(w.h.get(&ea_accounts, &w.enterprise_admin).await), [ea_admin]);
    assert_eq!(
        picked(w.h.get(&format!("/api/v1/channels/{}/alarm-receiver-accounts", w.a), &w.channel_admin).await),
        [a_admin]
    );
    // The effective view names the account receivers: EA's own and channel A's handed down.
    let effective =
        w.h.get(&format!("/api/v1/enterprises/{}/effective-alarm-strategies", w.ea), &w.enterprise_admin).await;
    let shown = effective.json()["items"].to_string();
    assert!(shown.contains("enterprise-a@example.com") && shown.contains("channel-a@example.com"), "{shown}");
}
