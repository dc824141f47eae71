//! Configuration profiles through the API (PRV-3, PRV-4): create with validation, copy, export,
//! deployments per container (only the enterprise's own profiles and devices), the effective
//! configuration with origins, provisioning now (only changed keys), `last_provision` on the
//! device detail, and the operation log.

use axum::http::{Method, StatusCode, header};
use fleetpulse_proto::domain::DeviceKey;
use fleetpulse_proto::{CommandId, DeviceId, EnterpriseId, Mac, UnixMillis};
use fleetpulse_store::{CommandUpdate, NewDevice};
use serde_json::{Value, json};

use super::*;

async fn device(h: &Harness, e: EnterpriseId, mac: &str, model: &str) -> DeviceId {
    let new = NewDevice {
        enterprise_id: e,
        key: DeviceKey::Mac(Mac::parse(mac).expect("mac")),
        serial: Some(format!("SN-{mac}")),
        model: model.into(),
        firmware: "1.0".into(),
        at: UnixMillis(1),
    };
    h.store.entities.register_device(new).await.expect("device").device.id
}

/// The device's queued commands' arguments, oldest first.
async fn pushed(h: &Harness, d: DeviceId) -> Vec<Value> {
    let mut commands =
        h.store.entities.list_device_commands(d, fleetpulse_store::Page::first(100)).await.expect("list");
    commands.reverse();
    commands
        .into_iter()
        .map(|c| {
            assert_eq!(c.kind, "apply_config");
            serde_json::from_str::<Value>(&c.args).expect("json")["changes"].clone()
        })
        .collect()
}

/// The device answers every command of the outcome as succeeded.
async fn answer_all(h: &Harness, d: DeviceId, outcome: &Value) {
    for id in outcome["commands"].as_array().expect("commands") {
        let id = CommandId(id.as_u64().expect("id"));
        let update = CommandUpdate::Succeeded { output: "applied".into() };
        h.store.entities.record_command_update(id, d, update, UnixMillis::now()).await.expect("answer").expect("known");
    }
}

#[tokio::test]
async fn profiles_resolve_push_and_report_per_device() {
    let h = harness();
    let token = h.admin_token().await;
    let channel = stored_channel(&h, "C", None).await;
    let e = stored_enterprise(&h, "E", channel).await;
    let other = stored_enterprise(&h, "O", channel).await;
    let phone = device(&h, e, "0004f2000001", "VVX500").await;
    let foreign = device(&h, other, "0004f2000002", "VVX500").await;
    let call = |method: Method, uri: String, body: Option<Value>| {
        let (h, token) = (&h, token.clone());
        async move { h.call(method, &uri, Some(&token), body).await }
    };

    // Create, with every refusal the issue names.
    let bad = json!({"enterprise_id": e, "name": "bad", "parameters": {"k": "${mac}"}});
    let reply = call(Method::POST, "/api/v1/profiles".into(), Some(bad)).await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(reply.text().contains("unknown substitution ${mac}"), "{}", reply.text());
    let global = json!({"enterprise_id": e, "name": "Global defaults", "description": "for every phone",
        "parameters": {"call.autoAnswer.SIP": "0", "prov.url": "https://p.example.com/${mac_address}.cfg"}});
    let global = call(Method::POST, "/api/v1/profiles".into(), Some(global)).await;
    assert_eq!(global.status, StatusCode::CREATED, "{}", global.text());
    let global_id = global.json()["id"].as_u64().expect("id");
    let dup = json!({"enterprise_id": e, "name": "Global defaults"});
    call(Method::POST, "/api/v1/profiles".into(), Some(dup)).await.assert_error(StatusCode::CONFLICT, "conflict");
    let copied = call(Method::POST, format!("/api/v1/profiles/{global_id}/copy"), Some(json!({"name": "VVX"}))).await;
    assert_eq!(copied.status, StatusCode::CREATED, "{}", copied.text());
    let model_id = copied.json()["id"].as_u64().expect("id");
    let model_settings = json!({"name": "VVX", "parameters": {"call.autoAnswer.SIP": "1"}, "firmware": {"VVX500": 12}});
    let replaced = call(Method::PUT, format!("/api/v1/profiles/{model_id}"), Some(model_settings)).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text());
    let export = call(Method::GET, format!("/api/v1/profiles/{global_id}/export"), None).await;
    assert_eq!(export.status, StatusCode::OK);
    assert!(export.headers[header::CONTENT_DISPOSITION].to_str().expect("ascii").contains(".cfg"));
    let text = export.text();
    assert!(
        text.contains("\ncall.autoAnswer.SIP=0\n")
            && text.contains("prov.url=https://p.example.com/${mac_address}.cfg"),
        "{text}"
    );
    let listed = call(Method::GET, format!("/api/v1/profiles?enterprise_id={e}"), None).await.json();
    let names: Vec<&str> =
        listed["items"].as_array().expect("items").iter().filter_map(|p| p["settings"]["name"].as_str()).collect();
    assert_eq!(names, ["Global defaults", "VVX"]);

    // Deployments: the enterprise's own profiles and devices only.
    let put = |body: Value| call(Method::PUT, "/api/v1/profile-deployments".into(), Some(body));
    let d = put(json!({"enterprise_id": e, "target": {"container": "global"}, "profiles": [global_id]})).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.text());
    let d =
        put(json!({"enterprise_id": e, "target": {"container": "model", "model": "VVX500"}, "profiles": [model_id]}))
            .await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.text());
    let foreign_profile = h
        .store
        .entities
        .create_profile(
            other,
            fleetpulse_store::ProfileSettings {
                name: "theirs".into(),
                description: String::new(),
                parameters: Default::default(),
                firmware: Default::default(),
            },
            UnixMillis(1),
        )
        .await
        .expect("profile");
    put(json!({"enterprise_id": e, "target": {"container": "global"}, "profiles": [foreign_profile.id]}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    put(json!({"enterprise_id": e, "target": {"container": "device", "device_id": foreign}, "profiles": [global_id]}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let listed = call(Method::GET, format!("/api/v1/profile-deployments?enterprise_id={e}"), None).await.json();
    let containers: Vec<&str> =
        listed["items"].as_array().expect("items").iter().filter_map(|d| d["target"]["container"].as_str()).collect();
    assert_eq!(containers, ["model", "global"], "by container priority: {listed}");

    // The effective configuration: every key with its origin.
    let config = call(Method::GET, format!("/api/v1/devices/{phone}/configuration"), None).await;
    assert_eq!(config.status, StatusCode::OK, "{}", config.text());
    let config = config.json();
    let rows = effective_lines(&config);
    assert_eq!(
        rows,
        [
            "call.autoAnswer.SIP=1 <- VVX model",
            "prov.url=https://p.example.com/0004f2000001.cfg <- Global defaults global",
        ]
    );
    assert_eq!(config["firmware"]["firmware_id"], 12);
    assert_eq!(config["last_provision"], Value::Null);

    // Provision now: everything the first time, then only what changed.
    let first = call(Method::POST, format!("/api/v1/devices/{phone}/provision"), None).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text());
    let first = first.json();
    assert_eq!((first["result"].as_str(), first["set"].as_u64()), (Some("pending"), Some(2)));
    assert_eq!(
        pushed(&h, phone).await,
        [json!({"call.autoAnswer.SIP": "1", "prov.url": "https://p.example.com/0004f2000001.cfg"})]
    );
    let detail = call(Method::GET, format!("/api/v1/devices/{phone}"), None).await.json();
    assert_eq!(detail["status"]["last_provision"]["result"], "pending", "{detail}");
    answer_all(&h, phone, &first).await;
    let detail = call(Method::GET, format!("/api/v1/devices/{phone}"), None).await.json();
    assert_eq!(detail["status"]["last_provision"]["result"], "succeeded", "{detail}");
    assert!(detail["status"]["last_provision"]["at"].as_i64().is_some(), "{detail}");
    let again = call(Method::POST, format!("/api/v1/devices/{phone}/provision"), None).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(again.json()["result"], "up_to_date");
    let changed = json!({"name": "Global defaults", "parameters": {"call.autoAnswer.SIP": "0", "new.key": "x"}});
    let reply = call(Method::PUT, format!("/api/v1/profiles/{global_id}"), Some(changed)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let second = call(Method::POST, format!("/api/v1/devices/{phone}/provision"), None).await;
    assert_eq!(second.status, StatusCode::ACCEPTED, "{}", second.text());
    let all = pushed(&h, phone).await;
    assert_eq!(all.last(), Some(&json!({"new.key": "x", "prov.url": null})), "only the changed keys: {all:?}");
    // A failed push is reported, and the next push sends its keys again.
    let second = second.json();
    let id = CommandId(second["commands"][0].as_u64().expect("id"));
    let failed = CommandUpdate::Failed { output: String::new(), reason: "read-only parameter".into() };
    h.store.entities.record_command_update(id, phone, failed, UnixMillis::now()).await.expect("answer");
    let detail = call(Method::GET, format!("/api/v1/devices/{phone}"), None).await.json();
    assert_eq!(detail["status"]["last_provision"]["result"], "failed", "{detail}");
    assert!(detail["status"]["last_provision"]["reason"].as_str().is_some_and(|r| r.contains("read-only")), "{detail}");
    call(Method::POST, format!("/api/v1/devices/{phone}/provision"), None).await;
    assert_eq!(pushed(&h, phone).await.last(), Some(&json!({"new.key": "x", "prov.url": null})));

    // A deployed profile cannot be deleted; the answer names where it is deployed.
    let refused = call(Method::DELETE, format!("/api/v1/profiles/{global_id}"), None).await;
    refused.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(refused.text().contains("global"), "{}", refused.text());
    let removed = put(json!({"enterprise_id": e, "target": {"container": "global"}, "profiles": []})).await;
    assert_eq!(removed.json()["deployment"], Value::Null);
    let deleted = call(Method::DELETE, format!("/api/v1/profiles/{global_id}"), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text());

    let ops = call(Method::GET, "/api/v1/operation-logs".into(), None).await.json();
    let paths: Vec<&str> = ops["items"].as_array().expect("items").iter().filter_map(|r| r["path"].as_str()).collect();
    for want in ["/api/v1/profiles", "/api/v1/profile-deployments", &format!("/api/v1/devices/{phone}/provision")] {
        assert!(paths.contains(&want), "{want} in the operation log: {paths:?}");
    }
}

#[tokio::test]
async fn a_provision_task_resolves_each_device_at_run_time() {
    use crate::{Scheduler, SchedulerConfig};
    let h = harness();
    let token = h.admin_token().await;
    let channel = stored_channel(&h, "C", None).await;
    let e = stored_enterprise(&h, "E", channel).await;
    let (a, b) = (device(&h, e, "0004f2000011", "VVX500").await, device(&h, e, "0004f2000012", "T54W").await);
    let settings = fleetpulse_store::ProfileSettings {
        name: "all".into(),
        description: String::new(),
        parameters: [("cfg".to_owned(), "https://p/${mac_address}.cfg".to_owned())].into_iter().collect(),
        firmware: Default::default(),
    };
    let profile = h.store.entities.create_profile(e, settings, UnixMillis(1)).await.expect("profile");
    h.store
        .entities
        .set_deployment(e, fleetpulse_store::DeploymentTarget::Global, vec![profile.id], UnixMillis(1))
        .await
        .expect("deploy");
    let bad = json!({"enterprise_id": e, "kind": "provision", "args": {"x": 1}, "targets": {"device_ids": [a]},
        "schedule": {"kind": "daily", "time": "03:00"}});
    h.call(Method::POST, "/api/v1/tasks", Some(&token), Some(bad))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let when = h.clock.now().0 + 60_000;
    let body = json!({"enterprise_id": e, "kind": "provision", "targets": {"filter": ""},
        "schedule": {"kind": "once", "at": when}});
    let task = h.call(Method::POST, "/api/v1/tasks", Some(&token), Some(body)).await;
    assert_eq!(task.status, StatusCode::CREATED, "{}", task.text());
    let task = task.json()["id"].as_u64().expect("id");
    h.clock.advance(std::time::Duration::from_secs(60));
    let s = Scheduler::new(h.store.entities.clone(), Default::default(), h.clock.clock(), SchedulerConfig::default());
    let pass = s.tick().await.expect("tick");
    assert_eq!((pass.runs, pass.commands), (1, 2), "{pass:?}");
    assert_eq!(pushed(&h, a).await, [json!({"cfg": "https://p/0004f2000011.cfg"})], "resolved per device");
    assert_eq!(pushed(&h, b).await, [json!({"cfg": "https://p/0004f2000012.cfg"})]);
    let runs = h.get(&format!("/api/v1/tasks/{task}/runs"), &token).await.json();
    let run = runs["items"][0]["id"].as_u64().expect("run");
    let detail = h.get(&format!("/api/v1/tasks/{task}/runs/{run}"), &token).await.json();
    assert_eq!(detail["devices"].as_array().map(Vec::len), Some(2), "per-device results: {detail}");
    let device_detail = h.get(&format!("/api/v1/devices/{a}"), &token).await.json();
    assert_eq!(device_detail["status"]["last_provision"]["result"], "pending", "{device_detail}");
}

/// A device's effective configuration (its `GET …/configuration` body) as
/// `key=value <- profile container` lines.
pub(super) fn effective_lines(config: &Value) -> Vec<String> {
    config["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| {
            format!(
                "{}={} <- {} {}",
                p["key"].as_str().unwrap_or(""),
                p["value"].as_str().unwrap_or(""),
                p["origin"]["profile_name"].as_str().unwrap_or(""),
                p["origin"]["container"].as_str().unwrap_or("")
            )
        })
        .collect()
}
