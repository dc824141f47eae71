//! Sites through the API (PRV-1): the tree, create, edit, delete with their refusals named, a
//! device landing in its site (detail, list filter, dashboard by site), the CSV import with
//! per-row errors, and the operation log.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fleetpulse_proto::domain::{CallStatus, DeviceKey, DeviceStatus};
use fleetpulse_proto::{Mac, UnixMillis};
use fleetpulse_store::{DeviceReport, DeviceSnapshotUpdate, NewDevice};
use serde_json::{Value, json};

use super::*;

async fn send(h: &Harness, method: Method, uri: &str, token: &str, body: Option<Value>) -> Reply {
    h.call(method, uri, Some(token), body).await
}

async fn import(h: &Harness, token: &str, query: &str, csv: &str) -> Reply {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/sites/import?{query}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "text/csv")
        .body(Body::from(csv.to_owned()))
        .expect("request");
    h.send(req).await
}

/// A device of the enterprise that reported these addresses.
pub(super) async fn reporting_device(
    h: &Harness,
    e: fleetpulse_proto::EnterpriseId,
    mac: &str,
    public: &str,
    private: &str,
) -> u64 {
    let new = NewDevice {
        enterprise_id: e,
        key: DeviceKey::Mac(Mac::parse(mac).expect("mac")),
        serial: None,
        model: "T54W".into(),
        firmware: "1.0".into(),
        at: UnixMillis(1),
    };
    let id = h.store.entities.register_device(new).await.expect("device").device.id;
    let status = DeviceStatus {
        lines: vec![],
        call_status: CallStatus::Idle,
        firmware: "1.0".into(),
        public_ip: Some(public.parse().expect("public")),
        private_ip: Some(private.parse().expect("private")),
        uptime_s: 1,
        last_reboot: None,
    };
    let update = DeviceSnapshotUpdate {
        device_id: id,
        online: Some(true),
        report: Some(DeviceReport { at: UnixMillis(5), status }),
    };
    h.store.entities.update_device_snapshots(vec![update]).await.expect("report");
    id.0
}

fn names(nodes: &Value) -> Vec<String> {
    nodes.as_array().expect("nodes").iter().map(|n| n["name"].as_str().expect("name").to_owned()).collect()
}

#[tokio::test]
async fn sites_are_created_matched_filtered_counted_and_deleted() {
    let h = harness();
    let platform = h.admin_token().await;
    let channel = stored_channel(&h, "C", None).await;
    let e = stored_enterprise(&h, "E", channel).await;
    let device = reporting_device(&h, e, "001565000a01", "20.1.9.9", "10.33.24.7").await;

    // Every enterprise starts with Internet and Intranet; the device is in Internet.
    let tree = h.get(&format!("/api/v1/sites?enterprise_id={e}"), &platform).await;
    assert_eq!(tree.status, StatusCode::OK, "{}", tree.text());
    assert_eq!(names(&tree.json()["roots"]), ["Internet", "Intranet"]);
    assert_eq!(tree.json()["roots"][0]["devices"], 1);
    h.get("/api/v1/sites", &platform).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    // A site with a subnet: the device lands in it, its detail and the list say so.
    let hq = json!({"enterprise_id": e, "name": "HQ", "location": "Berlin",
                    "subnets": [{"public": "20.1.0.0/16", "private": ["10.0.0.0/8"]}]});
    let created = send(&h, Method::POST, "/api/v1/sites", &platform, Some(hq)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let hq_id = created.json()["id"].as_u64().expect("id");
    let detail = h.get(&format!("/api/v1/devices/{device}"), &platform).await.json();
    assert_eq!(detail["site"], json!({"id": hq_id, "name": "HQ"}));

    // A child site takes the more specific private subnet.
    let floor = json!({"enterprise_id": e, "name": "Floor 2", "parent_id": hq_id,
                       "subnets": [{"public": "20.1.0.0/16", "private": ["10.33.24.0/24"]}]});
    let floor = send(&h, Method::POST, "/api/v1/sites", &platform, Some(floor)).await;
    assert_eq!(floor.status, StatusCode::CREATED, "{}", floor.text());
    let floor_id = floor.json()["id"].as_u64().expect("id");
    let listed = h.get(&format!("/api/v1/devices?enterprise_id={e}&site_id={hq_id}"), &platform).await;
    assert_eq!(item_ids(&listed), [device], "the filter takes the site's descendants");
    assert_eq!(listed.json()["items"][0]["site"]["name"], "Floor 2");
    let none = h.get(&format!("/api/v1/devices?enterprise_id={e}&site_id=999999"), &platform).await;
    assert_eq!(item_ids(&none), Vec::<u64>::new());
    let tree = h.get(&format!("/api/v1/sites?enterprise_id={e}"), &platform).await.json();
    assert_eq!(names(&tree["roots"]), ["HQ", "Internet", "Intranet"]);
    assert_eq!(names(&tree["roots"][0]["children"]), ["Floor 2"]);
    assert_eq!(tree["roots"][0]["children"][0]["devices"], 1);

    // The dashboard of the enterprise counts by site.
    let dash = h.get(&format!("/api/v1/dashboard?enterprise_id={e}"), &platform).await.json();
    let by_site = dash["by_site"].as_array().expect("by_site");
    assert_eq!((by_site[0]["name"].clone(), by_site[0]["total"].clone()), (json!("Floor 2"), json!(1)));
    assert_eq!(h.get("/api/v1/dashboard", &platform).await.json()["by_site"], Value::Null);

    // Refusals say why and name the other site.
    let copy = json!({"enterprise_id": e, "name": "Copy",
                      "subnets": [{"public": "20.1.0.0/16", "private": ["10.33.24.0/24"]}]});
    let refused = send(&h, Method::POST, "/api/v1/sites", &platform, Some(copy)).await;
    refused.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(refused.text().contains("Floor 2"), "{}", refused.text());
    let host_bits = json!({"enterprise_id": e, "name": "Bad", "subnets": [{"public": "20.56.31.0/8"}]});
    let refused = send(&h, Method::POST, "/api/v1/sites", &platform, Some(host_bits)).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.text().contains("20.0.0.0/8"), "{}", refused.text());
    let refused = send(&h, Method::DELETE, &format!("/api/v1/sites/{hq_id}"), &platform, None).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.text().contains("child sites: \\\"Floor 2\\\""), "{}", refused.text());
    let internet = tree["roots"][1]["id"].as_u64().expect("internet");
    let refused =
        send(&h, Method::PATCH, &format!("/api/v1/sites/{internet}"), &platform, Some(json!({"name": "Web"}))).await;
    assert!(refused.text().contains("Internet site cannot be changed"), "{}", refused.text());

    // Edit: the floor gives up the subnet, the device goes back to HQ; then delete both.
    let edited = send(
        &h,
        Method::PATCH,
        &format!("/api/v1/sites/{floor_id}"),
        &platform,
        Some(json!({"subnets": [], "description": "empty now"})),
    )
    .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.text());
    assert_eq!(h.get(&format!("/api/v1/devices/{device}"), &platform).await.json()["site"]["name"], "HQ");
    let moved =
        send(&h, Method::PATCH, &format!("/api/v1/sites/{floor_id}"), &platform, Some(json!({"parent_id": null})))
            .await;
    assert_eq!(moved.json()["parent_id"], Value::Null, "{}", moved.text());
    for id in [floor_id, hq_id] {
        let gone = send(&h, Method::DELETE, &format!("/api/v1/sites/{id}"), &platform, None).await;
        assert_eq!(gone.status, StatusCode::NO_CONTENT, "{}", gone.text());
    }
    assert_eq!(h.get(&format!("/api/v1/devices/{device}"), &platform).await.json()["site"]["name"], "Internet");
    h.get(&format!("/api/v1/sites/{hq_id}"), &platform).await.assert_error(StatusCode::NOT_FOUND, "not_found");

    // Every change is in the operation log.
    let ops = h.get("/api/v1/operation-logs", &platform).await.json();
    let paths: Vec<&str> = ops["items"].as_array().expect("items").iter().filter_map(|r| r["path"].as_str()).collect();
    assert!(paths.iter().filter(|p| p.starts_with("/api/v1/sites")).count() >= 6, "{paths:?}");
}

#[tokio::test]
async fn a_site_import_applies_good_rows_and_reports_bad_ones() {
    let h = harness();
    let platform = h.admin_token().await;
    let channel = stored_channel(&h, "C", None).await;
    let e = stored_enterprise(&h, "E", channel).await;
    let device = reporting_device(&h, e, "001565000b01", "198.51.100.7", "10.1.2.3").await;
    let csv = "site_name;description;location_name;subnets;parent_name\n\
               Branch;Branch office;Paris;198.51.100.0/24;\n\
               Branch lab;;Paris;198.51.100.0/24>10.1.0.0/16;Branch\n\
               Copy;;;198.51.100.0/24;\n\
               Bad;;;198.51.100.1/24;\n\
               Orphan;;;203.0.113.0/24;Nobody\n\
               Internet;;;1.0.0.0/8;\n\
               Branch;Branch office, renamed;Lyon;198.51.100.0/24;\n";
    let reply = import(&h, &platform, &format!("enterprise_id={e}"), csv).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let r = reply.json();
    assert_eq!(
        (r["rows"].clone(), r["created"].clone(), r["updated"].clone(), r["failed"].clone()),
        (json!(7), json!(2), json!(1), json!(4))
    );
    let errors: Vec<(u64, String)> = r["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|x| (x["line"].as_u64().expect("line"), x["column"].as_str().expect("column").to_owned()))
        .collect();
    assert_eq!(
        errors,
        [(4, "subnets".into()), (5, "subnets".into()), (6, "parent_name".into()), (7, "site_name".into())]
    );
    assert!(r["errors"][0]["reason"].as_str().expect("reason").contains("\"Branch\""), "{r}");
    let detail = h.get(&format!("/api/v1/devices/{device}"), &platform).await.json();
    assert_eq!(detail["site"]["name"], "Branch lab");
    let tree = h.get(&format!("/api/v1/sites?enterprise_id={e}"), &platform).await.json();
    assert_eq!(tree["roots"][0]["location"], "Lyon", "{tree}");
    // A file without the required columns is refused as a whole.
    import(&h, &platform, &format!("enterprise_id={e}"), "name,subnets\nx,\n")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn a_site_import_over_several_chunks_keeps_parents_and_line_order() {
    let h = harness();
    let platform = h.admin_token().await;
    let channel = stored_channel(&h, "C", None).await;
    let e = stored_enterprise(&h, "E", channel).await;
    let device = reporting_device(&h, e, "001565000b02", "20.2.88.7", "10.1.2.3").await;
    // 1,200 rows (three chunks of the store's 500): the last chunk's rows name parents from the
    // first; one bad row per chunk; the device matches a site of the last chunk.
    let mut csv = String::from("site_name,subnets,parent_name\n");
    for i in 0..1_200u32 {
        let parent = if i >= 1_000 { format!("s{}", i - 1_000) } else { String::new() };
        let subnets = if i % 500 == 7 { "not a subnet".to_owned() } else { format!("20.{}.{}.0/24", i / 256, i % 256) };
        csv.push_str(&format!("s{i},{subnets},{parent}\n"));
    }
    let reply = import(&h, &platform, &format!("enterprise_id={e}"), &csv).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let r = reply.json();
    assert_eq!((r["rows"].clone(), r["created"].clone(), r["failed"].clone()), (json!(1_200), json!(1_197), json!(3)));
    let lines: Vec<u64> =
        r["errors"].as_array().expect("errors").iter().map(|x| x["line"].as_u64().expect("line")).collect();
    assert_eq!(lines, [9, 509, 1009]);
    // 20.2.88.0/24 is row 600 (s600), whose parent is none; s1100's parent is s100.
    let detail = h.get(&format!("/api/v1/devices/{device}"), &platform).await.json();
    assert_eq!(detail["site"]["name"], "s600", "{detail}");
    let tree = h.get(&format!("/api/v1/sites?enterprise_id={e}"), &platform).await.json();
    let s100 = tree["roots"].as_array().expect("roots").iter().find(|s| s["name"] == "s100").expect("s100");
    assert_eq!(s100["children"][0]["name"], "s1100", "{s100}");
}
