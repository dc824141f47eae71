//! Dead letters through the API (issue 18 item 5): the platform lists them by stage, reads one,
//! replays a snapshot letter into the device store (deleted once it succeeded, so a second
//! replay is 404); a letter of the alarm stages without a running alarm service answers 503 and
//! stays; a copy that cannot be taken back answers 409.

use axum::http::{Method, StatusCode};
use fleetpulse_proto::domain::DeviceKey;
use fleetpulse_proto::{DeviceId, Mac, UnixMillis};
use fleetpulse_store::{
    DeadLetterReason, DeadLetterStage, DeviceSnapshotUpdate, NewDeadLetter, NewDevice, NewEnterprise,
};
use serde_json::json;

use super::*;

fn letter(stage: DeadLetterStage, device: DeviceId, payload: Value) -> NewDeadLetter {
    NewDeadLetter {
        stage,
        reason: DeadLetterReason { code: "shutdown", detail: "the writer stopped".into() },
        enterprise_id: None,
        device_id: Some(device),
        payload,
        attempts: 3,
        at: UnixMillis(5),
    }
}

#[tokio::test]
async fn dead_letters_are_listed_by_stage_and_replayed_once() {
    let h = harness();
    let token = h.admin_token().await;
    let new =
        NewEnterprise { name: "Dl".into(), credential: "dl".into(), channel_id: None, profile: Default::default() };
    let enterprise = h.store.entities.create_enterprise(new).await.expect("enterprise").id;
    let device = NewDevice {
        enterprise_id: enterprise,
        key: DeviceKey::Mac(Mac::parse("001565000dd1").expect("mac")),
        serial: None,
        model: "T54W".into(),
        firmware: "1.0".into(),
        at: UnixMillis(1),
    };
    let device = h.store.entities.register_device(device).await.expect("device").device.id;
    let update = DeviceSnapshotUpdate { device_id: device, online: Some(true), report: None };
    let snapshot = json!({"kind": "snapshot", "update": update});
    let entities = &h.store.entities;
    let (snap, _) =
        entities.record_dead_letter(letter(DeadLetterStage::Snapshots, device, snapshot), 10).await.unwrap();
    let record = json!({"kind": "alarm_record", "change": {
        "device_id": device.0, "enterprise_id": enterprise.0, "code": 401, "at": 9, "kind": "clear"
    }});
    let (alarm, _) =
        entities.record_dead_letter(letter(DeadLetterStage::AlarmEffects, device, record), 10).await.unwrap();
    let broken = json!({"kind": "snapshot", "update": "not an update"});
    let (bad, _) = entities.record_dead_letter(letter(DeadLetterStage::Snapshots, device, broken), 10).await.unwrap();

    let all = h.get("/api/v1/dead-letters", &token).await;
    assert_eq!(item_ids(&all), [snap.0, alarm.0, bad.0]);
    let snapshots = h.get("/api/v1/dead-letters?stage=snapshots", &token).await;
    assert_eq!(item_ids(&snapshots), [snap.0, bad.0]);
    let page = h.get(&format!("/api/v1/dead-letters?limit=1&after={}", snap.0), &token).await.json();
    assert_eq!(page["items"][0]["id"], alarm.0, "{page}");
    h.get("/api/v1/dead-letters?stage=nowhere", &token).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let one = h.get(&format!("/api/v1/dead-letters/{}", snap.0), &token).await.json();
    assert_eq!(
        (one["stage"].as_str(), one["reason"].as_str(), one["attempts"].as_u64()),
        (Some("snapshots"), Some("shutdown"), Some(3))
    );
    assert_eq!(one["payload"]["update"]["online"], true, "{one}");

    // The snapshot is written, the letter deleted; a second replay finds nothing.
    assert!(!entities.device_summary(device).await.unwrap().expect("device").snapshot.online);
    let uri = format!("/api/v1/dead-letters/{}/replay", snap.0);
    let replayed = h.call(Method::POST, &uri, Some(&token), None).await;
    assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.text());
    assert!(entities.device_summary(device).await.unwrap().expect("device").snapshot.online, "replayed");
    h.call(Method::POST, &uri, Some(&token), None).await.assert_error(StatusCode::NOT_FOUND, "not_found");

    // No alarm service here: 503, kept. A copy that does not parse: 409, kept.
    let uri = format!("/api/v1/dead-letters/{}/replay", alarm.0);
    h.call(Method::POST, &uri, Some(&token), None).await.assert_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    let uri = format!("/api/v1/dead-letters/{}/replay", bad.0);
    h.call(Method::POST, &uri, Some(&token), None).await.assert_error(StatusCode::CONFLICT, "conflict");
    let all = h.call(Method::POST, "/api/v1/dead-letters/replay?stage=snapshots", Some(&token), None).await.json();
    assert_eq!((all["replayed"].as_u64(), all["failed"][0]["id"].as_u64()), (Some(0), Some(bad.0)), "{all}");
    assert_eq!(item_ids(&h.get("/api/v1/dead-letters", &token).await), [alarm.0, bad.0]);

    // The replays are in the operation log.
    let log =
        h.get("/api/v1/operation-logs?operation=POST%20/api/v1/dead-letters/%7Bid%7D/replay", &token).await.json();
    assert_eq!(log["items"].as_array().map(Vec::len), Some(4), "{log}");
}
