//! Provisioning end to end (PRV-3, PRV-4): the real binary and simulated phones on real QUIC
//! sessions (the load tester's device side applies `apply_config`). Profiles deployed globally
//! and then to a site (the guides' `call.autoAnswer.SIP` site-over-global example) are pushed
//! in the background; a push on demand and a bulk `provision` task send only the keys that
//! changed; the device answers, and the device detail shows `last_provision`; a push with
//! nothing changed sends nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Api, TestServer, until};
use serde_json::{Value, json};

/// How long a wait may take: a task waits for the scheduler's next pass, at most 30 s away.
const LIMIT: Duration = Duration::from_secs(90);

/// What these flows read beyond the harness's client.
impl Api {
    async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// The device's `apply_config` commands, oldest first.
    async fn pushes(&self, device: u64) -> Vec<Value> {
        let page = self.get_ok(&format!("/api/v1/devices/{device}/commands?limit=100")).await;
        let mut items: Vec<Value> =
            page["items"].as_array().unwrap().iter().filter(|c| c["kind"] == "apply_config").cloned().collect();
        items.sort_by_key(|c| c["id"].as_u64());
        items
    }
}

/// Waits until the device has `n` `apply_config` commands, all finished; answers them.
async fn settled_pushes(api: &Api, device: u64, n: usize) -> Vec<Value> {
    until(
        &format!("device {device} has {n} finished pushes"),
        LIMIT,
        || api.pushes(device),
        |p: &Vec<Value>| p.len() == n && p.iter().all(|c| matches!(c["state"].as_str(), Some("succeeded" | "failed"))),
    )
    .await
}

/// Waits until the device detail's `last_provision` has this result; answers it.
async fn last_provision(api: &Api, device: u64, result: &str) -> Value {
    let path = format!("/api/v1/devices/{device}");
    let detail = until(
        &format!("device {device} last_provision {result}"),
        LIMIT,
        || api.get_ok(&path),
        |d: &Value| d["status"]["last_provision"]["result"] == result,
    )
    .await;
    detail["status"]["last_provision"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn profiles_reach_phones_and_only_changes_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (status, enterprise) =
        api.call(reqwest::Method::POST, "/api/v1/enterprises", Some(json!({"name": "prov-e2e"}))).await;
    assert_eq!(status, 201, "{enterprise}");
    let e = enterprise["id"].as_u64().unwrap();
    let credential = enterprise["credential"].as_str().unwrap().to_owned();

    // Two simulated phones on real QUIC sessions; they report public addresses in 203.0.113/24.
    let mut config = server.load_config(2, Duration::from_secs(900));
    config.credential = Some((e, credential));
    config.rate_per_device = 1.0;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let fleet = tokio::spawn(fleetpulse_loadtest::run_until(config, async move {
        let _ = stopped.await;
    }));

    // A site for their public network; they are matched into it once they report.
    let (status, site) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/sites",
            Some(json!({"enterprise_id": e, "name": "HQ", "subnets": [{"public": "203.0.113.0/24"}]})),
        )
        .await;
    assert_eq!(status, 201, "{site}");
    let site_id = site["id"].as_u64().unwrap();
    let devices_path = format!("/api/v1/devices?enterprise_id={e}&site_id={site_id}");
    let list = until(
        "both phones report from HQ",
        LIMIT,
        || api.get_ok(&devices_path),
        |v: &Value| v["items"].as_array().is_some_and(|a| a.len() == 2),
    )
    .await;
    let devices: Vec<(u64, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_u64().unwrap(), d["mac"].as_str().unwrap().to_owned()))
        .collect();
    let (d1, d2) = (devices[0].0, devices[1].0);
    for (i, (id, _)) in devices.iter().enumerate() {
        assert_eq!(api.get_ok(&format!("/api/v1/devices/{id}")).await["status"]["last_provision"], Value::Null);
        let name = json!({"name": format!("Phone {i}")});
        let (status, _) = api.call(reqwest::Method::PATCH, &format!("/api/v1/devices/{id}"), Some(name)).await;
        assert_eq!(status, 200);
    }

    // A global profile: deploying it pushes every key to the online phones in the background.
    let base = json!({
        "enterprise_id": e,
        "name": "Base",
        "parameters": {
            "call.autoAnswer.SIP": "0",
            "phone.label": "${name}",
            "provisioning.url": "https://p.example/${mac_address}.cfg",
        },
    });
    let (status, base_profile) = api.call(reqwest::Method::POST, "/api/v1/profiles", Some(base)).await;
    assert_eq!(status, 201, "{base_profile}");
    let base_id = base_profile["id"].as_u64().unwrap();
    let (status, deployed) = api
        .call(
            reqwest::Method::PUT,
            "/api/v1/profile-deployments",
            Some(json!({"enterprise_id": e, "target": {"container": "global"}, "profiles": [base_id]})),
        )
        .await;
    assert_eq!(status, 200, "{deployed}");
    for (i, (id, mac)) in devices.iter().enumerate() {
        let pushes = settled_pushes(&api, *id, 1).await;
        let name = format!("Phone {i}");
        assert_eq!(
            pushes[0]["args"]["changes"],
            json!({
                "call.autoAnswer.SIP": "0",
                "phone.label": name,
                "provisioning.url": format!("https://p.example/{}.cfg", mac.replace([':', '-'], "").to_lowercase()),
            }),
            "{pushes:?}"
        );
        assert_eq!(pushes[0]["state"], "succeeded", "{pushes:?}");
        assert_eq!(pushes[0]["output"], "configuration applied: 3 set, 0 removed, 3 parameters\n");
        let last = last_provision(&api, *id, "succeeded").await;
        assert!(last["at"].as_i64().unwrap() > 0, "{last}");
    }

    // The site overrides one key (site over global): only that key is sent.
    let (status, hq) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/profiles",
            Some(json!({"enterprise_id": e, "name": "HQ answers", "parameters": {"call.autoAnswer.SIP": "1"}})),
        )
        .await;
    assert_eq!(status, 201, "{hq}");
    let hq_id = hq["id"].as_u64().unwrap();
    let target = json!({"container": "site", "site_id": site_id});
    let (status, deployed) = api
        .call(
            reqwest::Method::PUT,
            "/api/v1/profile-deployments",
            Some(json!({"enterprise_id": e, "target": target, "profiles": [hq_id]})),
        )
        .await;
    assert_eq!(status, 200, "{deployed}");
    for (id, _) in &devices {
        let pushes = settled_pushes(&api, *id, 2).await;
        assert_eq!(pushes[1]["args"]["changes"], json!({"call.autoAnswer.SIP": "1"}), "{pushes:?}");
        assert_eq!(pushes[1]["output"], "configuration applied: 1 set, 0 removed, 3 parameters\n");
        last_provision(&api, *id, "succeeded").await;
    }
    let effective = api.get_ok(&format!("/api/v1/devices/{d1}/configuration")).await;
    let origins: Vec<(String, String, String)> = effective["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap().to_owned(),
                p["value"].as_str().unwrap().to_owned(),
                p["origin"]["container"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(origins[0], ("call.autoAnswer.SIP".into(), "1".into(), "site".into()), "{effective}");
    assert_eq!(origins[1].2, "global");
    assert_eq!(effective["placement"]["sites"][0], site_id);
    assert_eq!(effective["last_provision"]["result"], "succeeded");

    // On demand with nothing changed: nothing is sent, and the detail says so.
    let (status, outcome) = api.call(reqwest::Method::POST, &format!("/api/v1/devices/{d1}/provision"), None).await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(
        (outcome["result"].as_str(), outcome["commands"].as_array().map(Vec::len)),
        (Some("up_to_date"), Some(0))
    );
    assert_eq!(api.pushes(d1).await.len(), 2);
    last_provision(&api, d1, "up_to_date").await;

    // On demand after a rename: only the key that depends on the name.
    let (status, _) =
        api.call(reqwest::Method::PATCH, &format!("/api/v1/devices/{d1}"), Some(json!({"name": "Reception"}))).await;
    assert_eq!(status, 200);
    let (status, outcome) = api.call(reqwest::Method::POST, &format!("/api/v1/devices/{d1}/provision"), None).await;
    assert_eq!(status, 202, "{outcome}");
    assert_eq!((outcome["set"].as_u64(), outcome["removed"].as_u64()), (Some(1), Some(0)), "{outcome}");
    assert_eq!(outcome["commands"].as_array().unwrap().len(), 1);
    let pushes = settled_pushes(&api, d1, 3).await;
    assert_eq!(pushes[2]["args"]["changes"], json!({"phone.label": "Reception"}));
    assert_eq!(pushes[2]["state"], "succeeded");
    last_provision(&api, d1, "succeeded").await;
    assert_eq!(api.pushes(d2).await.len(), 2, "the other phone got nothing");

    // A key removed from the profile is removed on the phones (sent as null), in the background.
    let (status, _) = api
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/profiles/{base_id}"),
            Some(json!({"name": "Base", "parameters": {"call.autoAnswer.SIP": "0", "phone.label": "${name}"}})),
        )
        .await;
    assert_eq!(status, 200);
    let pushes = settled_pushes(&api, d2, 3).await;
    assert_eq!(pushes[2]["args"]["changes"], json!({"provisioning.url": null}));
    assert_eq!(pushes[2]["output"], "configuration applied: 0 set, 1 removed, 2 parameters\n");
    settled_pushes(&api, d1, 4).await;

    // In bulk: a `provision` task renamed phones are pushed by; a phone with nothing changed
    // gets no command.
    let (status, _) =
        api.call(reqwest::Method::PATCH, &format!("/api/v1/devices/{d2}"), Some(json!({"name": "Back office"}))).await;
    assert_eq!(status, 200);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let (status, task) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/tasks",
            Some(json!({
                "enterprise_id": e,
                "kind": "provision",
                "targets": {"device_ids": [d1, d2]},
                "schedule": {"kind": "once", "at": now},
            })),
        )
        .await;
    assert_eq!(status, 201, "{task}");
    let task_id = task["id"].as_u64().unwrap();
    let runs_path = format!("/api/v1/tasks/{task_id}/runs");
    // A run is listed from the moment it is claimed; its counts are there once it finished.
    let runs = until(
        "the provision task runs",
        LIMIT,
        || api.get_ok(&runs_path),
        |r: &Value| r["items"].as_array().and_then(|a| a.first()).is_some_and(|run| !run["finished_at"].is_null()),
    )
    .await;
    let run_id = runs["items"][0]["id"].as_u64().unwrap();
    assert_eq!(runs["items"][0]["queued"], 1, "{runs}");
    assert!(runs["items"][0]["note"].as_str().unwrap_or_default().contains("1 devices were up to date"), "{runs}");
    let run_path = format!("/api/v1/tasks/{task_id}/runs/{run_id}");
    let run = until(
        "the task's command finishes",
        LIMIT,
        || api.get_ok(&run_path),
        |r: &Value| r["devices"].as_array().is_some_and(|d| d.iter().any(|x| x["command_state"] == "succeeded")),
    )
    .await;
    let results: Vec<(u64, &str)> = run["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["device_id"].as_u64().unwrap(), d["command_state"].as_str().unwrap_or("none")))
        .collect();
    assert_eq!(results, [(d2, "succeeded")], "{run}");
    let pushes = settled_pushes(&api, d2, 4).await;
    assert_eq!(pushes[3]["args"]["changes"], json!({"phone.label": "Back office"}));
    last_provision(&api, d2, "succeeded").await;
    last_provision(&api, d1, "up_to_date").await;
    assert_eq!(api.pushes(d1).await.len(), 4);

    let _ = stop.send(());
    let report = fleet.await.unwrap().unwrap();
    assert_eq!(report.device_commands.failed, 0);
    assert_eq!(report.device_commands.succeeded, 8, "{:?}", report.device_commands);
}
