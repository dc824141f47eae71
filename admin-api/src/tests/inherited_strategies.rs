//! Strategies down the tenant tree through the API (issue 18): channel strategies, the effective
//! list of an enterprise and of a device with where each strategy came from, and an enterprise's
//! choices as far as its channel permits.

use axum::http::{Method, StatusCode};
use fleetpulse_proto::domain::DeviceKey;
use fleetpulse_proto::{Mac, UnixMillis};
use fleetpulse_store::{NewDevice, Role};
use serde_json::json;

use super::*;

fn channel_body(name: &str, levels: Option<u8>, may: &str) -> Value {
    json!({
        "name": name,
        "receivers": ["noc@reseller.example"],
        "inheritance": {"sub_channel_levels": levels, "enterprises_may": may},
    })
}

/// `(name, origin kind, distance, status)` of an effective listing.
fn rows(reply: &Reply) -> Vec<(String, String, Option<u64>, String)> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap_or_default().to_owned(),
                i["origin"]["kind"].as_str().unwrap_or_default().to_owned(),
                i["origin"]["distance"].as_u64(),
                i["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn row(name: &str, kind: &str, distance: Option<u64>, status: &str) -> (String, String, Option<u64>, String) {
    (name.into(), kind.into(), distance, status.into())
}

#[tokio::test]
async fn channel_strategies_reach_enterprises_which_choose_as_far_as_permitted() {
    let h = harness();
    let top = stored_channel(&h, "Reseller", None).await;
    let sub = stored_channel(&h, "Dealer", Some(top)).await;
    let e = stored_enterprise(&h, "Shop", sub).await;
    let channel = super::devices::token_of(&h, "noc@reseller.example", Role::ChannelAdmin, Some(top), None).await;
    let shop = super::devices::token_of(&h, "admin@shop.example", Role::EnterpriseAdmin, None, Some(e)).await;

    let create = |body: Value| {
        let (h, channel) = (&h, &channel);
        async move {
            h.call(Method::POST, &format!("/api/v1/channels/{top}/alarm-strategies"), Some(channel), Some(body)).await
        }
    };
    let locked = create(channel_body("NOC all", None, "locked")).await;
    assert_eq!(locked.status, StatusCode::CREATED, "{}", locked.text());
    let locked = locked.json()["id"].as_u64().expect("id");
    let optional = create(channel_body("NOC optional", Some(1), "opt_out")).await.json()["id"].as_u64().expect("id");
    let replaceable =
        create(channel_body("NOC replaceable", Some(1), "override")).await.json()["id"].as_u64().expect("id");
    create(channel_body("NOC own enterprises only", Some(0), "locked")).await;
    // The enterprise's own strategy.
    let own = h
        .call(
            Method::POST,
            &format!("/api/v1/enterprises/{e}/alarm-strategies"),
            Some(&shop),
            Some(json!({"name": "Shop ops", "receivers": ["ops@shop.example"]})),
        )
        .await;
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.text());
    let own = own.json()["id"].as_u64().expect("id");
    // An enterprise strategy carries no inheritance.
    let refused = h
        .call(
            Method::POST,
            &format!("/api/v1/enterprises/{e}/alarm-strategies"),
            Some(&shop),
            Some(channel_body("x", None, "locked")),
        )
        .await;
    refused.assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    let uri = format!("/api/v1/enterprises/{e}/effective-alarm-strategies");
    assert_eq!(
        rows(&h.get(&uri, &shop).await),
        [
            row("Shop ops", "enterprise", None, "applies"),
            row("NOC all", "channel", Some(1), "applies"),
            row("NOC optional", "channel", Some(1), "applies"),
            row("NOC replaceable", "channel", Some(1), "applies"),
        ],
        "the strategy for the reseller's own enterprises does not reach a dealer's"
    );
    let listed = h.get(&uri, &channel).await.json();
    assert_eq!(listed["items"][1]["origin"]["channel_name"], "Reseller");
    assert_eq!(listed["items"][1]["receivers"], json!(["noc@reseller.example"]));

    let choose = |strategy: u64, choice: &str, with: Option<u64>| {
        let (h, shop) = (&h, &shop);
        let body = json!({"strategy_id": strategy, "choice": choice, "override_with": with});
        async move {
            h.call(Method::PUT, &format!("/api/v1/enterprises/{e}/alarm-strategy-choices"), Some(shop), Some(body))
                .await
        }
    };
    choose(locked, "opt_out", None).await.assert_error(StatusCode::CONFLICT, "conflict");
    choose(optional, "override", Some(own)).await.assert_error(StatusCode::CONFLICT, "conflict");
    choose(replaceable, "override", Some(locked)).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    choose(own, "opt_out", None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(choose(optional, "opt_out", None).await.status, StatusCode::OK);
    let after = choose(replaceable, "override", Some(own)).await;
    assert_eq!(
        rows(&after),
        [
            row("Shop ops", "enterprise", None, "applies"),
            row("NOC all", "channel", Some(1), "applies"),
            row("NOC optional", "channel", Some(1), "opted_out"),
            row("NOC replaceable", "channel", Some(1), "overridden"),
        ]
    );
    assert_eq!(after.json()["items"][3]["overridden_by"], own);

    // Narrowed by the channel: a choice it no longer permits is ignored, and shown as such.
    let narrowed = h
        .call(
            Method::PUT,
            &format!("/api/v1/channel-alarm-strategies/{optional}"),
            Some(&channel),
            Some(channel_body("NOC optional", Some(1), "locked")),
        )
        .await;
    assert_eq!(narrowed.status, StatusCode::OK, "{}", narrowed.text());
    assert_eq!(rows(&h.get(&uri, &shop).await)[2], row("NOC optional", "channel", Some(1), "choice_not_permitted"));
    // Inherit again.
    assert_eq!(choose(replaceable, "inherit", None).await.status, StatusCode::OK);
    assert_eq!(rows(&h.get(&uri, &shop).await)[3], row("NOC replaceable", "channel", Some(1), "applies"));

    // The device's view is its enterprise's.
    let new = NewDevice {
        enterprise_id: e,
        key: DeviceKey::Mac(Mac::parse("001565aa0001").expect("mac")),
        serial: None,
        model: "T54W".into(),
        firmware: "1.0".into(),
        at: UnixMillis(1),
    };
    let device = h.store.entities.register_device(new).await.expect("device").device.id;
    let of_device = h.get(&format!("/api/v1/devices/{device}/effective-alarm-strategies"), &shop).await;
    assert_eq!(of_device.json()["device_id"], device.0);
    assert_eq!(rows(&of_device).len(), 4);

    // Channel strategies are the channel's business: the enterprise gets 403, and deleting one
    // takes the enterprise's choices with it.
    h.get(&format!("/api/v1/channels/{top}/alarm-strategies"), &shop)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let listed = h.get(&format!("/api/v1/channels/{top}/alarm-strategies"), &channel).await;
    assert_eq!(item_ids(&listed).len(), 4);
    let deleted =
        h.call(Method::DELETE, &format!("/api/v1/channel-alarm-strategies/{optional}"), Some(&channel), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(rows(&h.get(&uri, &shop).await).len(), 3);
    assert!(h.store.entities.strategy_choices(e).await.expect("choices").is_empty());

    // Every change is in the operation log.
    let log = h.get("/api/v1/operation-logs", &h.admin_token().await).await.json();
    let operations: Vec<&str> =
        log["items"].as_array().expect("items").iter().filter_map(|r| r["operation"].as_str()).collect();
    for op in [
        "POST /api/v1/channels/{id}/alarm-strategies",
        "PUT /api/v1/enterprises/{id}/alarm-strategy-choices",
        "PUT /api/v1/channel-alarm-strategies/{id}",
        "DELETE /api/v1/channel-alarm-strategies/{id}",
    ] {
        assert!(operations.contains(&op), "{op} not in {operations:?}");
    }
}
