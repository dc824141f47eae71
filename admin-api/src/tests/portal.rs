//! The portal core (TEN-1, TEN-2, TEN-3, TEN-5): profiles, search and edits of enterprises and
//! channels, the enterprise's authorization of its channel and acting inside it, sub-accounts.

use axum::http::{Method, StatusCode};
use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId, UnixMillis};
use fleetpulse_store::{NewAccount, NewChannel, NewEnterprise, Role};
use serde_json::{Value, json};

use super::*;
use crate::hash_password;

const PASSWORD: &str = "portal-password";

struct Tree {
    h: Harness,
    platform: String,
    channel: ChannelId,
    sub_channel: ChannelId,
    enterprise: EnterpriseId,
    channel_admin: String,
    enterprise_admin: String,
}

async fn new_account(h: &Harness, email: &str, role: Role, c: Option<ChannelId>, e: Option<EnterpriseId>) -> String {
    let new = NewAccount {
        email: email.into(),
        password_hash: hash_password(PASSWORD).expect("hash"),
        role,
        channel_id: c,
        enterprise_id: e,
        must_change_password: false,
        parent_id: None,
        permissions: None,
    };
    h.store.entities.create_account(new).await.expect("account");
    token(h, email, PASSWORD).await
}

async fn token(h: &Harness, email: &str, password: &str) -> String {
    let reply = h.login(email, password).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()["token"].as_str().expect("token").to_owned()
}

async fn tree() -> Tree {
    let h = harness();
    let platform = h.admin_token().await;
    let channel = stored_channel(&h, "North", None).await;
    let sub_channel = stored_channel(&h, "North-1", Some(channel)).await;
    let enterprise = stored_enterprise(&h, "Acme", channel).await;
    let channel_admin = new_account(&h, "north@example.com", Role::ChannelAdmin, Some(channel), None).await;
    let enterprise_admin = new_account(&h, "acme@example.com", Role::EnterpriseAdmin, None, Some(enterprise)).await;
    Tree { h, platform, channel, sub_channel, enterprise, channel_admin, enterprise_admin }
}

fn ids(reply: &Reply) -> Vec<u64> {
    item_ids(reply)
}

#[tokio::test]
async fn enterprises_carry_the_guides_fields_and_are_searched_and_edited() {
    let t = tree().await;
    let body = json!({
        "name": "Zeta Widgets", "device_management": true, "rps": true,
        "master_admin_email": "boss@zeta.example", "register_email": "register@zeta.example",
        "country": "FR", "time_zone": "Europe/Paris", "temperature_unit": "fahrenheit",
        "contact": "Zoé Durand", "phone": "+33 1 23 45"
    });
    let created = t.h.call(Method::POST, "/api/v1/enterprises", Some(&t.channel_admin), Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let zeta = created.json();
    for (field, value) in [
        ("channel_id", json!(t.channel.0)),
        ("master_admin_email", json!("boss@zeta.example")),
        ("time_zone", json!("Europe/Paris")),
        ("temperature_unit", json!("fahrenheit")),
        ("contact", json!("Zoé Durand")),
        ("channel_authorization", json!("none")),
    ] {
        assert_eq!(zeta[field], value, "{field}: {zeta}");
    }
    let id = zeta["id"].as_u64().expect("id");

    // Bad fields are refused by name, unknown fields too; nothing is created.
    for (bad, word) in [
        (json!({"name": "X", "country": "France"}), "country"),
        (json!({"name": "X", "time_zone": "Paris time"}), "time_zone"),
        (json!({"name": "X", "master_admin_email": "nope"}), "master_admin_email"),
        (json!({"name": "X", "temperature_unit": "kelvin"}), "kelvin"),
        (json!({"name": "X", "colour": "red"}), "colour"),
    ] {
        let reply = t.h.call(Method::POST, "/api/v1/enterprises", Some(&t.platform), Some(bad)).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(reply.text().contains(word), "{word}: {}", reply.text());
    }
    assert_eq!(ids(&t.h.get("/api/v1/enterprises", &t.platform).await).len(), 2);

    // Case-insensitive substring search over name, emails and contact, within the scope.
    for q in ["zoé", "ZETA", "BOSS%40zeta", "register"] {
        assert_eq!(ids(&t.h.get(&format!("/api/v1/enterprises?q={q}"), &t.channel_admin).await), [id], "{q}");
    }
    assert!(ids(&t.h.get("/api/v1/enterprises?q=zeta", &t.enterprise_admin).await).is_empty());
    assert_eq!(ids(&t.h.get("/api/v1/enterprises?q=acme", &t.enterprise_admin).await), [t.enterprise.0]);

    // Edit: the given fields change, the others stay.
    let uri = format!("/api/v1/enterprises/{id}");
    let edited =
        t.h.call(Method::PUT, &uri, Some(&t.channel_admin), Some(json!({"contact": "Yann", "rps": false}))).await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.text());
    let edited = edited.json();
    assert_eq!((edited["contact"].as_str(), edited["rps"].as_bool()), (Some("Yann"), Some(false)));
    assert_eq!((edited["name"].as_str(), edited["country"].as_str()), (Some("Zeta Widgets"), Some("FR")));
    assert_eq!(ids(&t.h.get("/api/v1/enterprises?q=yann", &t.platform).await), [id]);
    // The enterprise edits its own profile but not the permissions its channel grants.
    let own = format!("/api/v1/enterprises/{}", t.enterprise);
    let renamed = t.h.call(Method::PUT, &own, Some(&t.enterprise_admin), Some(json!({"name": "Acme SA"}))).await;
    assert_eq!(renamed.json()["name"], "Acme SA", "{}", renamed.text());
    // (Device management is on by default: turning it off is the change refused.)
    t.h.call(Method::PUT, &own, Some(&t.enterprise_admin), Some(json!({"device_management": false})))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    t.h.call(Method::PUT, &uri, Some(&t.enterprise_admin), Some(json!({"name": "mine"})))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn channels_are_searched_and_edited_and_a_channel_keeps_its_granted_permissions() {
    let t = tree().await;
    let uri = format!("/api/v1/channels/{}", t.sub_channel);
    let body = json!({"contact": "Jürgen Müller", "phone": "+49 30 1", "country": "DE", "rps": true});
    let edited = t.h.call(Method::PUT, &uri, Some(&t.channel_admin), Some(body)).await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.text());
    assert_eq!((edited.json()["rps"].as_bool(), edited.json()["country"].as_str()), (Some(true), Some("DE")));
    assert_eq!(ids(&t.h.get("/api/v1/channels?q=MÜLLER", &t.channel_admin).await), [t.sub_channel.0]);
    assert_eq!(ids(&t.h.get("/api/v1/channels?q=north", &t.platform).await), [t.channel.0, t.sub_channel.0]);
    t.h.call(Method::PUT, &uri, Some(&t.channel_admin), Some(json!({"country": "Deutschland"})))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // Its own channel: contact details yes, permissions no (they are granted from above).
    let own = format!("/api/v1/channels/{}", t.channel);
    let contact = t.h.call(Method::PUT, &own, Some(&t.channel_admin), Some(json!({"contact": "Erika"}))).await;
    assert_eq!(contact.status, StatusCode::OK, "{}", contact.text());
    t.h.call(Method::PUT, &own, Some(&t.channel_admin), Some(json!({"rps": true})))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let granted = t.h.call(Method::PUT, &own, Some(&t.platform), Some(json!({"rps": true}))).await;
    assert_eq!(granted.json()["rps"], true);
    let accounts = t.h.get("/api/v1/accounts?q=ACME", &t.channel_admin).await;
    assert_eq!(accounts.json()["items"][0]["email"], "acme@example.com");
    assert_eq!(ids(&accounts).len(), 1);
}

/// The operation log's rows (newest first).
async fn log_rows(t: &Tree) -> Vec<Value> {
    let reply = t.h.get("/api/v1/operation-logs?limit=100", &t.platform).await;
    reply.json()["items"].as_array().expect("items").clone()
}

#[tokio::test]
async fn a_channel_acts_inside_an_enterprise_only_with_its_authorization() {
    let t = tree().await;
    let e = t.enterprise;
    let uri = |action: &str| format!("/api/v1/enterprises/{e}{action}");
    let strategy = json!({"name": "ops", "receivers": ["ops@acme.example"]});
    let strategies = format!("/api/v1/enterprises/{e}/alarm-strategies");

    // Not acting, the channel sees the enterprise's data but changes nothing in it.
    assert_eq!(t.h.get(&strategies, &t.channel_admin).await.status, StatusCode::OK);
    t.h.call(Method::POST, &strategies, Some(&t.channel_admin), Some(strategy.clone()))
        .await
        .assert_error(StatusCode::FORBIDDEN, "acting_required");
    // Without the authorization it cannot act.
    t.h.call(Method::POST, &uri("/act"), Some(&t.channel_admin), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "authorization_required");
    // Only the enterprise answers, and only a pending request.
    t.h.call(Method::POST, &uri("/authorization/accept"), Some(&t.enterprise_admin), None)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    let asked = t.h.call(Method::POST, &uri("/authorization"), Some(&t.channel_admin), None).await;
    assert_eq!(asked.json()["channel_authorization"], "pending", "{}", asked.text());
    t.h.call(Method::POST, &uri("/authorization"), Some(&t.channel_admin), None)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    for who in [&t.channel_admin, &t.platform] {
        t.h.call(Method::POST, &uri("/authorization/accept"), Some(who), None)
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
    }
    let rejected = t.h.call(Method::POST, &uri("/authorization/reject"), Some(&t.enterprise_admin), None).await;
    assert_eq!(rejected.json()["channel_authorization"], "rejected");
    t.h.call(Method::POST, &uri("/act"), Some(&t.channel_admin), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "authorization_required");
    t.h.call(Method::POST, &uri("/authorization"), Some(&t.channel_admin), None).await;
    let accepted = t.h.call(Method::POST, &uri("/authorization/accept"), Some(&t.enterprise_admin), None).await;
    assert_eq!(accepted.json()["channel_authorization"], "accepted", "{}", accepted.text());

    // Acting: a new session scoped to the enterprise, its changes logged as acting for it.
    let acted = t.h.call(Method::POST, &uri("/act"), Some(&t.channel_admin), None).await;
    assert_eq!(acted.status, StatusCode::OK, "{}", acted.text());
    assert_eq!(acted.json()["acting"], json!({"enterprise": e.0}));
    let acting = acted.json()["token"].as_str().expect("token").to_owned();
    assert_ne!(acting, t.channel_admin, "a new session id");
    let created = t.h.call(Method::POST, &strategies, Some(&acting), Some(strategy.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert_eq!(ids(&t.h.get("/api/v1/enterprises", &acting).await), [e.0], "the acting scope is the enterprise");
    t.h.get("/api/v1/channels", &acting).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    // The acting session cannot answer the authorization on the enterprise's behalf.
    t.h.call(Method::POST, &uri("/authorization/revoke"), Some(&acting), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let rows = log_rows(&t).await;
    let row = rows
        .iter()
        .find(|r| r["operation"] == "POST /api/v1/enterprises/{id}/alarm-strategies" && r["status"] == 201)
        .expect("the strategy creation is logged");
    assert_eq!((row["acting_as"].as_u64(), row["account_email"].as_str()), (Some(e.0), Some("north@example.com")));
    let plain = rows.iter().find(|r| r["operation"] == "POST /api/v1/enterprises/{id}/authorization").expect("row");
    assert!(plain["acting_as"].is_null(), "{plain}");
    // A refused change is logged with its caller too (the auth extractor names it to the log).
    let refused = rows
        .iter()
        .find(|r| r["operation"] == "POST /api/v1/enterprises/{id}/alarm-strategies" && r["status"] == 403)
        .expect("the refused creation is logged");
    assert_eq!(
        (refused["account_email"].as_str(), refused["outcome"].as_str()),
        (Some("north@example.com"), Some("failure"))
    );

    // The enterprise reads its own log: its accounts' rows and what its channel did inside it,
    // nothing of the platform's or of other tenants'; another enterprise's filter is not found.
    let own_log = t.h.get("/api/v1/operation-logs?limit=100", &t.enterprise_admin).await;
    assert_eq!(own_log.status, StatusCode::OK, "{}", own_log.text());
    let own_rows = own_log.json()["items"].as_array().expect("items").clone();
    assert!(own_rows.iter().any(|r| r["acting_as"] == e.0 && r["status"] == 201), "{own_rows:?}");
    assert!(own_rows.iter().any(|r| r["operation"] == "POST /api/v1/enterprises/{id}/authorization/accept"));
    assert!(own_rows.iter().all(|r| r["account_email"] == "acme@example.com" || r["acting_as"] == e.0), "{own_rows:?}");
    t.h.get(&format!("/api/v1/operation-logs?enterprise_id={}", e.0 + 1_000), &t.enterprise_admin)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let csv = t.h.get("/api/v1/operation-logs/export", &t.enterprise_admin).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(!csv.text().contains(ADMIN_EMAIL), "the platform's rows stay out of the export");
    // The channel sees its subtree's rows, those it made acting inside the enterprise included.
    let channel_log = t.h.get("/api/v1/operation-logs?limit=100", &t.channel_admin).await;
    let channel_rows = channel_log.json()["items"].as_array().expect("items").clone();
    assert!(channel_rows.iter().any(|r| r["acting_as"] == e.0), "{channel_rows:?}");

    // Revoked: the acting session ends at once; the channel's own session stays.
    let revoked = t.h.call(Method::POST, &uri("/authorization/revoke"), Some(&t.enterprise_admin), None).await;
    assert_eq!(revoked.json()["channel_authorization"], "none", "{}", revoked.text());
    t.h.get("/api/v1/enterprises", &acting).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(t.h.get("/api/v1/enterprises", &t.channel_admin).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_channel_acts_inside_its_sub_channels_freely() {
    let t = tree().await;
    let acted =
        t.h.call(Method::POST, &format!("/api/v1/channels/{}/act", t.sub_channel), Some(&t.channel_admin), None).await;
    assert_eq!(acted.status, StatusCode::OK, "{}", acted.text());
    let acting = acted.json()["token"].as_str().expect("token").to_owned();
    // Inside North-1: its (empty) subtree, not North's enterprise.
    assert!(ids(&t.h.get("/api/v1/enterprises", &acting).await).is_empty());
    let created = t.h.call(Method::POST, "/api/v1/enterprises", Some(&acting), Some(json!({"name": "Sub Co"}))).await;
    assert_eq!(created.json()["channel_id"], t.sub_channel.0, "{}", created.text());
    t.h.call(Method::POST, &format!("/api/v1/channels/{}/act", t.channel), Some(&t.channel_admin), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    t.h.call(Method::POST, &format!("/api/v1/channels/{}/act", t.sub_channel), Some(&t.enterprise_admin), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn sub_accounts_get_only_their_features_and_data() {
    let t = tree().await;
    let other = NewEnterprise {
        name: "Other".into(),
        credential: "cred-other".into(),
        channel_id: Some(t.sub_channel),
        profile: Default::default(),
    };
    let other = t.h.store.entities.create_enterprise(other).await.expect("enterprise").id;
    let body = |email: &str, features: Value, data: Value| json!({"email": email, "password": PASSWORD, "features": features, "data": data});
    let create = |b: Value| t.h.call(Method::POST, "/api/v1/sub-accounts", Some(&t.channel_admin), Some(b));
    let created =
        create(body("viewer@example.com", json!(["devices"]), json!({"only": {"enterprises": [other.0]}}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert_eq!(created.json()["role"], "channel_admin");
    assert_eq!(created.json()["permissions"]["features"], json!(["devices"]));
    let viewer_id = created.json()["id"].as_u64().expect("id");
    // Data outside the creator's scope is not found; unknown features are refused.
    let platform_channel = NewChannel {
        name: "Elsewhere".into(),
        parent_id: None,
        allow_sub_channels: false,
        device_management: false,
        rps: false,
        contact: String::new(),
        email: String::new(),
        phone: String::new(),
        country: String::new(),
    };
    let elsewhere = t.h.store.entities.create_channel(platform_channel, UnixMillis(3)).await.expect("channel").id;
    create(body("x@example.com", json!(["devices"]), json!({"only": {"channels": [elsewhere.0]}})))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    create(body("x@example.com", json!(["teleport"]), json!("all")))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let unknown = json!({"email": "y@example.com", "features": [], "data": "all", "colour": "red"});
    let refused = create(unknown).await;
    refused.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(refused.text().contains("colour"), "{}", refused.text());
    // Like any new account, a sub-account is emailed its details (TEN-1): here with the
    // password generated for it.
    let generated = create(json!({"email": "auditor@example.com", "features": ["operation_log"], "data": "all"})).await;
    assert_eq!(generated.status, StatusCode::CREATED, "{}", generated.text());
    let emails = super::account::account_emails(&t.h, "auditor@example.com").await;
    let temporary = match emails.as_slice() {
        [fleetpulse_mailer::AccountEmail::AccountCreated { temporary_password: Some(p), role, .. }] => {
            assert_eq!(role, "channel_admin");
            p.clone()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(t.h.login("auditor@example.com", &temporary).await.json()["must_change_password"], true);
    let auditor_id = generated.json()["id"].as_u64().expect("id");
    assert_eq!(ids(&t.h.get("/api/v1/sub-accounts", &t.channel_admin).await), [viewer_id, auditor_id]);

    // First login changes the password; then the sub-account sees only its data and features.
    let first = token(&t.h, "viewer@example.com", PASSWORD).await;
    let changed =
        t.h.call(
            Method::POST,
            "/api/v1/account/password",
            Some(&first),
            Some(json!({"current_password": PASSWORD, "new_password": "viewer-password-2"})),
        )
        .await;
    let viewer = changed.json()["token"].as_str().expect("token").to_owned();
    assert_eq!(ids(&t.h.get("/api/v1/enterprises", &viewer).await), [other.0]);
    let devices = t.h.get(&format!("/api/v1/devices?enterprise_id={other}"), &viewer).await;
    assert_eq!(devices.status, StatusCode::OK, "{}", devices.text());
    t.h.get(&format!("/api/v1/devices?enterprise_id={}", t.enterprise), &viewer)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    t.h.get(&format!("/api/v1/alarms?enterprise_id={other}"), &viewer)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    t.h.get("/api/v1/accounts", &viewer).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    for action in ["authorization", "act"] {
        t.h.call(Method::POST, &format!("/api/v1/enterprises/{other}/{action}"), Some(&viewer), None)
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
    }
    t.h.get("/api/v1/sub-accounts", &viewer).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    t.h.call(
        Method::POST,
        "/api/v1/enterprises",
        Some(&viewer),
        Some(json!({"name": "nope", "channel_id": t.sub_channel})),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");

    // Widened by its parent, it sees more from its next request; another account cannot touch it.
    let uri = format!("/api/v1/sub-accounts/{viewer_id}/permissions");
    let wider = json!({"features": ["devices", "alarms"], "data": "all"});
    t.h.call(Method::PUT, &uri, Some(&t.enterprise_admin), Some(wider.clone()))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let widened = t.h.call(Method::PUT, &uri, Some(&t.channel_admin), Some(wider)).await;
    assert_eq!(widened.status, StatusCode::OK, "{}", widened.text());
    assert_eq!(ids(&t.h.get("/api/v1/enterprises", &viewer).await), [t.enterprise.0, other.0]);
    assert_eq!(
        t.h.get(&format!("/api/v1/alarms?enterprise_id={}", t.enterprise), &viewer).await.status,
        StatusCode::OK
    );
    let account = t.h.store.entities.account(AccountId(viewer_id)).await.expect("read").expect("viewer");
    assert_eq!(
        account.parent_id.map(|p| p.0),
        t.h.store.entities.account_by_email("north@example.com").await.expect("r").map(|a| a.id.0)
    );

    // Its parent freezes it (its session ends) and unfreezes it; nobody else can, nor can it.
    let freeze = format!("/api/v1/sub-accounts/{viewer_id}/freeze");
    t.h.call(Method::POST, &freeze, Some(&t.enterprise_admin), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    t.h.call(Method::POST, &freeze, Some(&viewer), None).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let frozen = t.h.call(Method::POST, &freeze, Some(&t.channel_admin), None).await;
    assert_eq!((frozen.status, frozen.json()["frozen"].clone()), (StatusCode::OK, json!(true)), "{}", frozen.text());
    t.h.get("/api/v1/enterprises", &viewer).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(t.h.login("viewer@example.com", "viewer-password-2").await.status, StatusCode::UNAUTHORIZED);
    let unfreeze = format!("/api/v1/sub-accounts/{viewer_id}/unfreeze");
    let thawed = t.h.call(Method::POST, &unfreeze, Some(&t.channel_admin), None).await;
    assert_eq!(thawed.json()["frozen"], false, "{}", thawed.text());
    assert_eq!(t.h.login("viewer@example.com", "viewer-password-2").await.status, StatusCode::OK);
    // An enterprise account manages its own sub-accounts the same way.
    let own = json!({"email": "helper@example.com", "password": PASSWORD, "features": ["devices"], "data": "all"});
    let helper = t.h.call(Method::POST, "/api/v1/sub-accounts", Some(&t.enterprise_admin), Some(own)).await;
    assert_eq!(helper.status, StatusCode::CREATED, "{}", helper.text());
    let helper = helper.json()["id"].as_u64().expect("id");
    let r =
        t.h.call(Method::POST, &format!("/api/v1/sub-accounts/{helper}/freeze"), Some(&t.enterprise_admin), None).await;
    assert_eq!(r.json()["frozen"], true, "{}", r.text());
}
