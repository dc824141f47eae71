//! The device inventory through the API (DEV-4): add, edit, move, delete, bulk edit; CSV
//! import with every kind of bad input answered per row (never a 500); the import log and its
//! error download; the streamed export with formulas defused; the operation log; an import the
//! store fails in the middle ends aborted; the import list.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use super::*;

struct Fixture {
    h: Harness,
    admin: String,
    e: u64,
    other: u64,
}

async fn fixture() -> Fixture {
    let h = harness();
    let admin = h.admin_token().await;
    let channel = stored_channel(&h, "C", None).await;
    let e = stored_enterprise(&h, "E", channel).await.0;
    let other = stored_enterprise(&h, "O", channel).await.0;
    Fixture { h, admin, e, other }
}

async fn send(h: &Harness, method: Method, uri: &str, token: &str, body: Option<Value>) -> Reply {
    h.call(method, uri, Some(token), body).await
}

/// Posts a CSV body as an import.
async fn import(h: &Harness, token: &str, query: &str, csv: &[u8]) -> Reply {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/device-imports?{query}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "text/csv")
        .body(Body::from(csv.to_vec()))
        .expect("request");
    h.send(req).await
}

#[tokio::test]
async fn devices_are_added_edited_moved_bulk_edited_and_deleted() {
    let f = fixture().await;
    let body = json!({"enterprise_id": f.e, "mac": "00:15:65:AA:BB:01", "model": "T54W", "name": "desk",
                      "attributes": {"room": "12"}});
    let added = send(&f.h, Method::POST, "/api/v1/devices", &f.admin, Some(body.clone())).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text());
    let id = added.json()["id"].as_u64().expect("id");
    assert_eq!(
        (added.json()["mac"].clone(), added.json()["attributes"]["room"].clone()),
        (json!("001565aabb01"), json!("12"))
    );
    let again = send(&f.h, Method::POST, "/api/v1/devices", &f.admin, Some(body)).await;
    again.assert_error(StatusCode::CONFLICT, "conflict");
    let bad = json!({"enterprise_id": f.e, "attributes": {"Bad Key": "x"}, "mac": "001565aabb02"});
    send(&f.h, Method::POST, "/api/v1/devices", &f.admin, Some(bad))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let none = json!({"enterprise_id": f.e, "name": "x"});
    send(&f.h, Method::POST, "/api/v1/devices", &f.admin, Some(none))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    let patch = json!({"name": "lobby", "attributes": {"merge": {"floor": "2", "room": null}}});
    let edited = send(&f.h, Method::PATCH, &format!("/api/v1/devices/{id}"), &f.admin, Some(patch)).await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.text());
    assert_eq!(edited.json()["name"], "lobby");
    assert_eq!(edited.json()["attributes"], json!({"floor": "2"}));
    let detail = f.h.get(&format!("/api/v1/devices/{id}"), &f.admin).await;
    assert_eq!(detail.json()["attributes"], json!({"floor": "2"}), "{}", detail.text());

    let moved = send(
        &f.h,
        Method::POST,
        &format!("/api/v1/devices/{id}/move"),
        &f.admin,
        Some(json!({"enterprise_id": f.other})),
    )
    .await;
    assert_eq!(moved.json()["enterprise_id"], f.other, "{}", moved.text());
    let nowhere = json!({"enterprise_id": 999_999});
    send(&f.h, Method::POST, &format!("/api/v1/devices/{id}/move"), &f.admin, Some(nowhere))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");

    let bulk = json!({"filter": {"enterprise_id": f.other}, "changes": {"model": "T46U"}});
    let edited = send(&f.h, Method::POST, "/api/v1/devices/bulk-edit", &f.admin, Some(bulk)).await;
    assert_eq!(edited.json()["changed"], 1, "{}", edited.text());
    let named = json!({"filter": {}, "changes": {}});
    send(&f.h, Method::POST, "/api/v1/devices/bulk-edit", &f.admin, Some(named))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    let deleted = send(&f.h, Method::DELETE, &format!("/api/v1/devices/{id}"), &f.admin, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text());
    f.h.get(&format!("/api/v1/devices/{id}"), &f.admin).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    let ops = f.h.get("/api/v1/operation-logs", &f.admin).await.json();
    let paths: Vec<&str> = ops["items"].as_array().expect("items").iter().filter_map(|r| r["path"].as_str()).collect();
    for want in [
        "/api/v1/devices",
        &format!("/api/v1/devices/{id}"),
        &format!("/api/v1/devices/{id}/move"),
        "/api/v1/devices/bulk-edit",
    ] {
        assert!(paths.contains(&want), "{want} in the operation log: {paths:?}");
    }
}

#[tokio::test]
async fn a_bad_csv_gives_row_errors_never_a_500() {
    let f = fixture().await;
    for name in ["G1", "G2"] {
        let new = fleetpulse_store::NewGroup {
            enterprise_id: fleetpulse_proto::EnterpriseId(f.e),
            name: name.into(),
            description: String::new(),
            at: fleetpulse_proto::UnixMillis(1),
        };
        f.h.store.entities.create_group(new).await.expect("group");
    }
    let mut csv = b"mac_address;endpoint_name;endpoint_group;note\n".to_vec();
    csv.extend(b"0015650A0001;desk;G1|G2;=HYPERLINK(\"x\")\n"); // 2: valid, formula kept as text
    csv.extend(b"zz;bad mac;;\n"); // 3: bad MAC
    csv.extend(b"0015650A0001;dup;;\n"); // 4: duplicate within the file
    csv.extend(b"0015650A0003,comma,,\n"); // 5: wrong separator
    csv.extend(b"0015650A0004;\xff\xfe;;\n"); // 6: not UTF-8
    csv.extend(b"0015650A0005;x;;"); // 7: a 10 MB line
    csv.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
    csv.extend(b"\n0015650A0006;last;;\n"); // 8: valid
    csv.extend(b"0015650A0007;nogroup;g2|Nope;\n"); // 9: a group that does not exist
    let reply = import(&f.h, &f.admin, &format!("enterprise_id={}&mode=merge", f.e), &csv).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let log = reply.json();
    assert_eq!(
        (log["state"].clone(), log["rows"].clone(), log["created"].clone(), log["failed"].clone()),
        (json!("done"), json!(8), json!(2), json!(6)),
        "{log}"
    );
    let errors: Vec<(u64, String)> = log["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| (e["line"].as_u64().expect("line"), e["column"].as_str().expect("column").to_owned()))
        .collect();
    assert_eq!(
        errors,
        [
            (3, "mac_address".into()),
            (4, "mac_address".into()),
            (5, String::new()),
            (6, "endpoint_name".into()),
            (7, String::new()),
            (9, "endpoint_group".into())
        ]
    );
    let id = log["id"].as_u64().expect("id");
    let shown = f.h.get(&format!("/api/v1/device-imports/{id}"), &f.admin).await;
    assert_eq!(shown.json()["failed"], 6);
    let download = f.h.get(&format!("/api/v1/device-imports/{id}/errors.csv"), &f.admin).await;
    let text = download.text();
    assert!(text.starts_with("line,column,reason\r\n3,mac_address,"), "{text}");
    assert_eq!(text.lines().count(), 7, "{text}");
    assert!(text.contains("9,endpoint_group,\"no group named \"\"Nope\"\""), "{text}");

    // Bad headers: 400, nothing imported.
    for (bad, needle) in [
        (&b""[..], "empty"),
        (b"endpoint_name\nx\n", "mac_address or serial_number"),
        (b"mac_address,Bad Col\n", "attribute"),
    ] {
        let r = import(&f.h, &f.admin, &format!("enterprise_id={}", f.e), bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
        assert!(r.text().contains(needle), "{}", r.text());
    }

    // Export: the imported devices, formula cells defused.
    let export =
        f.h.get(
            &format!(
                "/api/v1/devices/export?enterprise_id={}&sort=mac&columns=mac_address,endpoint_name,endpoint_group,attributes",
                f.e
            ),
            &f.admin,
        )
        .await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(export.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    let text = export.text();
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines[0], "mac_address,endpoint_name,endpoint_group,attributes");
    assert!(lines[1].starts_with("0015650a0001,desk,G1|G2,"), "the groups, in order: {text}");
    assert!(!lines[1].contains("endpoint_group") && lines[1].contains("=HYPERLINK"), "{text}");
    assert!(lines[2].starts_with("0015650a0006,last,"), "{text}");
    let defused =
        f.h.get(&format!("/api/v1/devices/export?enterprise_id={}&columns=endpoint_name", f.e), &f.admin).await;
    assert!(!defused.text().lines().any(|l| l.starts_with('=')), "{}", defused.text());
    f.h.get("/api/v1/devices/export?columns=colour", &f.admin)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn imports_update_in_each_mode_and_another_enterprises_devices_are_refused() {
    let f = fixture().await;
    let q = |mode: &str| format!("enterprise_id={}&mode={mode}", f.e);
    let first =
        import(&f.h, &f.admin, &q("create"), b"mac_address,endpoint_name,floor,desk\n0015650b0001,a,1,x\n").await;
    assert_eq!(first.json()["created"], 1, "{}", first.text());
    let skip = import(&f.h, &f.admin, &q("create"), b"mac_address,endpoint_name\n0015650b0001,b\n").await;
    assert_eq!(skip.json()["skipped"], 1);
    let merged = import(&f.h, &f.admin, &q("merge"), b"mac_address,floor\n0015650b0001,2\n").await;
    assert_eq!(merged.json()["updated"], 1);
    let list = f.h.get(&format!("/api/v1/devices?enterprise_id={}", f.e), &f.admin).await.json();
    let id = list["items"][0]["id"].as_u64().expect("id");
    let attrs = f.h.get(&format!("/api/v1/devices/{id}"), &f.admin).await.json()["attributes"].clone();
    assert_eq!(attrs, json!({"desk": "x", "floor": "2"}));
    import(&f.h, &f.admin, &q("overwrite"), b"mac_address,room\n0015650b0001,7\n").await;
    let detail = f.h.get(&format!("/api/v1/devices/{id}"), &f.admin).await.json();
    assert_eq!((detail["attributes"].clone(), detail["name"].clone()), (json!({"room": "7"}), json!("")));
    let theirs =
        import(&f.h, &f.admin, &format!("enterprise_id={}&mode=overwrite", f.other), b"mac_address\n0015650b0001\n")
            .await;
    assert_eq!(theirs.json()["failed"], 1, "{}", theirs.text());
    assert!(theirs.json()["errors"][0]["reason"].as_str().expect("reason").contains("another enterprise"));
    let bad_mode = import(&f.h, &f.admin, &q("replace"), b"mac_address\n").await;
    assert_eq!(bad_mode.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_import_the_store_fails_midway_ends_aborted_and_imports_are_listed_newest_first() {
    let f = fixture().await;
    let first = import(&f.h, &f.admin, &format!("enterprise_id={}", f.e), b"mac_address\n0015650c0001\n").await;
    assert_eq!(first.json()["state"], "done", "{}", first.text());
    // The store fails for real in the middle: a trigger (written through a second connection to
    // the database file) refuses to count a log past 500 rows, i.e. the second batch.
    let db = rusqlite::Connection::open(f.h._dir.path().join(fleetpulse_store::embedded::DB_FILE)).expect("open");
    db.execute_batch(
        "CREATE TRIGGER injected_failure BEFORE UPDATE OF rows ON device_imports WHEN NEW.rows > 500 \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .expect("trigger");
    let mut csv = b"mac_address,endpoint_name\n".to_vec();
    for i in 0..700u64 {
        csv.extend(format!("{:012x},d{i}\n", 0x0015_650d_0000u64 + i).as_bytes());
    }
    let reply = import(&f.h, &f.admin, &format!("enterprise_id={}", f.e), &csv).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let log = reply.json();
    assert_eq!(
        (log["state"].clone(), log["rows"].clone(), log["created"].clone()),
        (json!("aborted"), json!(500), json!(500)),
        "{log}"
    );
    let note = log["note"].as_str().expect("a note");
    assert!(note.contains("line 502") && note.contains("store failed"), "{note}");
    assert!(!note.contains("injected"), "the store's own message stays in the server log: {note}");
    assert!(log["finished_at"].as_i64().is_some(), "{log}");
    db.execute_batch("DROP TRIGGER injected_failure;").expect("drop");

    // A log a stopped process left running is aborted at the next start.
    let e = fleetpulse_proto::EnterpriseId(f.e);
    let admin = f.h.store.entities.account_by_email(ADMIN_EMAIL).await.expect("read").expect("admin").id;
    let stale =
        f.h.store
            .entities
            .create_device_import(e, admin, fleetpulse_store::ImportMode::Merge, fleetpulse_proto::UnixMillis(1))
            .await
            .expect("log");
    let n =
        f.h.store
            .entities
            .abort_running_device_imports("the server stopped".into(), fleetpulse_proto::UnixMillis(2))
            .await;
    assert_eq!(n.expect("abort"), 1);
    let stale_log = f.h.get(&format!("/api/v1/device-imports/{}", stale.id), &f.admin).await.json();
    assert_eq!(
        (stale_log["state"].clone(), stale_log["note"].clone()),
        (json!("aborted"), json!("the server stopped"))
    );

    // The list: newest first, keyset paged, by enterprise.
    let other = import(&f.h, &f.admin, &format!("enterprise_id={}", f.other), b"mac_address\n0015650c0002\n").await;
    let ids = |r: Reply| item_ids(&r);
    let all = ids(f.h.get("/api/v1/device-imports", &f.admin).await);
    let (a, b, c, d) = (
        first.json()["id"].as_u64().unwrap_or(0),
        log["id"].as_u64().unwrap_or(0),
        stale.id,
        other.json()["id"].as_u64().unwrap_or(0),
    );
    assert_eq!(all, [d, c, b, a]);
    let page = f.h.get("/api/v1/device-imports?limit=2", &f.admin).await;
    assert_eq!(page.json()["next_after"], c);
    assert_eq!(ids(f.h.get(&format!("/api/v1/device-imports?limit=2&after={c}"), &f.admin).await), [b, a]);
    assert_eq!(ids(f.h.get(&format!("/api/v1/device-imports?enterprise_id={}", f.other), &f.admin).await), [d]);
    f.h.get("/api/v1/device-imports?limit=201", &f.admin)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}
