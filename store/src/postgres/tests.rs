//! Behaviour of the PostgreSQL entity store against a real server: one server per test binary
//! (the testkit's shared instance), one fresh database per test.

use super::*;
use fleetpulse_proto::domain::DeviceKey;
use fleetpulse_proto::{AccountId, DeviceId, EnterpriseId, Mac, UnixMillis};
use fleetpulse_testkit::postgres::PostgresServer;

/// A store over a fresh database named after the test.
async fn store(test: &str) -> (PgEntityStore, String) {
    let url = PostgresServer::shared().create_database(test);
    let store = PgEntityStore::connect(&url, 4).await.expect("connect and migrate");
    (store, url)
}

fn account(email: &str) -> NewAccount {
    NewAccount {
        parent_id: None,
        permissions: None,
        email: email.into(),
        password_hash: "phc".into(),
        role: Role::PlatformAdmin,
        channel_id: None,
        enterprise_id: None,
        must_change_password: false,
    }
}

async fn enterprise(store: &PgEntityStore, name: &str) -> Enterprise {
    store
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: name.into(),
            credential: format!("cred-{name}"),
            channel_id: None,
        })
        .await
        .expect("create enterprise")
}

fn mac(n: u32) -> Mac {
    Mac::parse(&format!("0015650{n:05x}")).expect("mac")
}

fn new_device(e: EnterpriseId, key: DeviceKey) -> NewDevice {
    NewDevice { enterprise_id: e, key, serial: None, model: "T54W".into(), firmware: "1.0".into(), at: UnixMillis(1) }
}

/// The transaction id that last wrote the device row: changes exactly when the row is updated.
async fn row_version(store: &PgEntityStore, id: DeviceId) -> String {
    sqlx::query_scalar("SELECT xmin::text FROM devices WHERE id = $1")
        .bind(db_id(id.0).expect("a stored id"))
        .fetch_one(&store.pool)
        .await
        .expect("xmin")
}

#[tokio::test]
async fn accounts_have_unique_case_insensitive_emails() {
    let (store, _) = store("accounts").await;
    let before = UnixMillis::now();
    let created = store.create_account(account("Admin@Example.com")).await.expect("create");
    assert_eq!((created.email.as_str(), created.password_hash.as_str()), ("Admin@Example.com", "phc"));
    assert!(created.created_at >= before);
    for dup in ["Admin@Example.com", "admin@example.com", "ADMIN@EXAMPLE.COM"] {
        assert!(
            matches!(store.create_account(account(dup)).await, Err(StoreError::AlreadyExists("email"))),
            "{dup} is taken"
        );
    }
    assert_eq!(store.account_by_email("aDmIn@example.COM").await.expect("by email"), Some(created.clone()));
    assert_eq!(store.account_by_email("other@example.com").await.expect("by email"), None);
    assert_eq!(store.account(created.id).await.expect("by id"), Some(created.clone()));
    assert_eq!(store.account(AccountId(created.id.0 + 1_000)).await.expect("by id"), None);
    assert_eq!(store.account(AccountId(u64::MAX)).await.expect("id beyond BIGINT"), None);
    let second = store.create_account(account("b@example.com")).await.expect("second");
    assert!(second.id.0 > created.id.0);
    assert_eq!(store.count_accounts(Role::PlatformAdmin).await.expect("count"), 2);
}

#[tokio::test]
async fn sessions_expire_by_time_and_expired_ones_are_purged() {
    let (store, _) = store("sessions").await;
    let owner = store.create_account(account("a@example.com")).await.expect("account");
    let session = |hash: u8, created, expires| Session {
        acting: None,
        token_hash: TokenHash([hash; 32]),
        account_id: owner.id,
        created_at: UnixMillis(created),
        expires_at: UnixMillis(expires),
        last_seen_at: UnixMillis(created),
    };
    store.create_session(session(1, 1_000, 5_000)).await.expect("create");
    assert_eq!(
        store.session(TokenHash([1; 32]), UnixMillis(4_999)).await.expect("read"),
        Some(session(1, 1_000, 5_000))
    );
    assert_eq!(store.session(TokenHash([1; 32]), UnixMillis(5_000)).await.expect("read"), None);
    assert_eq!(store.session(TokenHash([2; 32]), UnixMillis(1)).await.expect("read"), None);

    // Creating a session removes the ones expired before its creation time, not the others.
    store.create_session(session(2, 4_000, 9_000)).await.expect("create");
    store.create_session(session(3, 6_000, 9_000)).await.expect("create");
    let left: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM sessions ORDER BY token_hash")
        .fetch_all(&store.pool)
        .await
        .expect("sessions");
    assert_eq!(left, vec![vec![2; 32], vec![3; 32]]);

    // A reused token and an unknown account are backend errors, as in the embedded store.
    assert!(matches!(store.create_session(session(3, 6_000, 9_000)).await, Err(StoreError::Backend(_))));
    let orphan = Session { account_id: AccountId(owner.id.0 + 1_000), ..session(4, 6_000, 9_000) };
    assert!(matches!(store.create_session(orphan).await, Err(StoreError::Backend(_))));
}

#[tokio::test]
async fn enterprises_have_unique_credentials_and_keyset_pages() {
    let (store, _) = store("enterprises").await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(enterprise(&store, &format!("e{i}")).await);
    }
    let dup = store
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: "other".into(),
            credential: "cred-e0".into(),
            channel_id: None,
        })
        .await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists("credential"))));
    assert_eq!(store.enterprise(created[1].id).await.expect("by id"), Some(created[1].clone()));
    assert_eq!(store.enterprise(EnterpriseId(u64::MAX)).await.expect("by id"), None);
    assert_eq!(store.enterprise_by_credential("cred-e3").await.expect("by credential"), Some(created[3].clone()));
    assert_eq!(store.enterprise_by_credential("CRED-E3").await.expect("credentials are exact"), None);

    let mut paged = Vec::new();
    let mut page = Page::first(2);
    loop {
        let rows = store.list_enterprises(page).await.expect("page");
        assert!(rows.len() <= 2);
        let Some(last) = rows.last() else { break };
        page.after = last.id.0;
        paged.extend(rows);
    }
    assert_eq!(paged, created);
    assert!(store.list_enterprises(Page::first(0)).await.expect("empty page").is_empty());
    assert!(store.list_enterprises(Page { after: u64::MAX, limit: 10 }).await.expect("past the end").is_empty());
}

#[tokio::test]
async fn devices_are_auto_added_once_and_never_cross_enterprises() {
    let (store, _) = store("devices_auto_add").await;
    let a = enterprise(&store, "a").await;
    let b = enterprise(&store, "b").await;
    let mut with_serial = new_device(a.id, DeviceKey::Mac(mac(1)));
    with_serial.serial = Some("SN-MAC-1".into());
    let first = store.register_device(with_serial).await.expect("register");
    assert!(first.created);
    let expected = Device {
        id: first.device.id,
        enterprise_id: a.id,
        mac: Some(mac(1)),
        serial: Some("SN-MAC-1".into()),
        model: "T54W".into(),
        firmware: "1.0".into(),
        name: String::new(),
        created_at: UnixMillis(1),
    };
    assert_eq!(first.device, expected);
    assert_eq!(store.device(first.device.id).await.expect("by id"), Some(expected.clone()));

    // The fast path: an unchanged known device is answered without a write.
    let version = row_version(&store, first.device.id).await;
    let again = store.register_device(new_device(a.id, DeviceKey::Mac(mac(1)))).await.expect("again");
    assert_eq!(again, RegisteredDevice { device: expected.clone(), created: false });
    assert_eq!(row_version(&store, first.device.id).await, version);

    // A new firmware is written.
    let mut upgraded = new_device(a.id, DeviceKey::Mac(mac(1)));
    upgraded.firmware = "2.0".into();
    let upgraded = store.register_device(upgraded).await.expect("firmware change");
    assert_eq!((upgraded.created, upgraded.device.firmware.as_str()), (false, "2.0"));
    assert_ne!(row_version(&store, first.device.id).await, version);
    assert_eq!(store.device(first.device.id).await.expect("by id").map(|d| d.firmware), Some("2.0".into()));

    assert!(matches!(
        store.register_device(new_device(b.id, DeviceKey::Mac(mac(1)))).await,
        Err(StoreError::DeviceConflict)
    ));
    assert!(store.list_devices(Some(b.id), Page::first(10)).await.expect("list").is_empty());
    assert_eq!(store.device(DeviceId(first.device.id.0 + 1_000)).await.expect("by id"), None);
    assert_eq!(store.device(DeviceId(u64::MAX)).await.expect("by id"), None);
    // An unknown enterprise is refused by the foreign key.
    assert!(matches!(
        store.register_device(new_device(EnterpriseId(999_999), DeviceKey::Mac(mac(2)))).await,
        Err(StoreError::Backend(_))
    ));
}

#[tokio::test]
async fn serial_only_devices_are_unique_by_serial_without_mac() {
    let (store, _) = store("devices_serial").await;
    let a = enterprise(&store, "a").await;
    let b = enterprise(&store, "b").await;
    let sn = store.register_device(new_device(a.id, DeviceKey::Serial("SN-1".into()))).await.expect("register");
    assert!(sn.created);
    assert_eq!((sn.device.mac, sn.device.serial.as_deref()), (None, Some("SN-1")));
    let again = store.register_device(new_device(a.id, DeviceKey::Serial("SN-1".into()))).await.expect("again");
    assert_eq!((again.created, again.device.id), (false, sn.device.id));
    assert!(matches!(
        store.register_device(new_device(b.id, DeviceKey::Serial("SN-1".into()))).await,
        Err(StoreError::DeviceConflict)
    ));
    // A device with a MAC may carry the same serial: it is keyed by its MAC.
    let mut with_mac = new_device(b.id, DeviceKey::Mac(mac(7)));
    with_mac.serial = Some("SN-1".into());
    let with_mac = store.register_device(with_mac).await.expect("mac device with the serial");
    assert!(with_mac.created);
    assert_ne!(with_mac.device.id, sn.device.id);
    // The serial-only key still finds the serial-only device.
    let found = store.register_device(new_device(a.id, DeviceKey::Serial("SN-1".into()))).await.expect("found");
    assert_eq!(found.device.id, sn.device.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_device_add_it_once() {
    let (store, _) = store("devices_concurrent").await;
    let e = enterprise(&store, "a").await;
    for key in [DeviceKey::Mac(mac(3)), DeviceKey::Serial("SN-RACE".into())] {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (store, new) = (store.clone(), new_device(e.id, key.clone()));
            tasks.spawn(async move { store.register_device(new).await });
        }
        let results: Vec<RegisteredDevice> =
            tasks.join_all().await.into_iter().collect::<Result<_>>().expect("every registration succeeds");
        assert_eq!(results.iter().filter(|r| r.created).count(), 1, "{key:?} added once");
        assert!(results.iter().all(|r| r.device.id == results[0].device.id));
    }
    assert_eq!(store.list_devices(Some(e.id), Page::first(10)).await.expect("list").len(), 2);
}

#[tokio::test]
async fn device_pages_follow_ids_per_enterprise() {
    let (store, _) = store("devices_pages").await;
    let a = enterprise(&store, "a").await;
    let b = enterprise(&store, "b").await;
    let mut all = Vec::new();
    for n in 0..7 {
        let owner = if n % 3 == 0 { b.id } else { a.id };
        all.push(store.register_device(new_device(owner, DeviceKey::Mac(mac(n)))).await.expect("register").device);
    }
    let collect = |enterprise: Option<EnterpriseId>| {
        let store = store.clone();
        async move {
            let mut out = Vec::new();
            let mut page = Page::first(2);
            loop {
                let rows = store.list_devices(enterprise, page).await.expect("page");
                assert!(rows.len() <= 2);
                let Some(last) = rows.last() else { return out };
                page.after = last.id.0;
                out.extend(rows);
            }
        }
    };
    assert_eq!(collect(None).await, all);
    let of_a: Vec<Device> = all.iter().filter(|d| d.enterprise_id == a.id).cloned().collect();
    assert_eq!(collect(Some(a.id)).await, of_a);
    assert_eq!(collect(Some(b.id)).await.len(), 3);
    assert!(collect(Some(EnterpriseId(u64::MAX))).await.is_empty());
    let after_first = store.list_devices(None, Page { after: all[0].id.0, limit: 1 }).await.expect("page");
    assert_eq!(after_first, vec![all[1].clone()]);
}

#[tokio::test]
async fn migrations_are_idempotent_on_reconnect_and_refuse_newer_databases() {
    let (store, url) = store("migrations").await;
    let e = enterprise(&store, "kept").await;
    store.close().await;

    let store = PgEntityStore::connect(&url, 2).await.expect("reconnect");
    assert_eq!(store.enterprise(e.id).await.expect("read"), Some(e));
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&store.pool)
        .await
        .expect("migrations table");
    assert_eq!(applied, (1..=i64::from(SCHEMA_VERSION)).collect::<Vec<_>>());

    // A database migrated by a newer build is refused, not silently used.
    let newer = i64::from(SCHEMA_VERSION) + 1;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from the future', true, '\\x00', 0)",
    )
    .bind(newer)
    .execute(&store.pool)
    .await
    .expect("pretend a newer build migrated");
    store.close().await;
    match PgEntityStore::connect(&url, 2).await {
        Err(StoreError::Migration { version, .. }) => assert_eq!(i64::from(version), newer),
        other => panic!("expected a migration error, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_and_closed_stores_report_errors() {
    let port = fleetpulse_testkit::free_port();
    let unreachable = PgEntityStore::connect(&format!("postgres://postgres@127.0.0.1:{port}/none"), 1).await;
    assert!(matches!(unreachable, Err(StoreError::Backend(_))), "{unreachable:?}");
    let missing = PostgresServer::shared().url().replace("/fleetpulse", "/no_such_database");
    assert!(matches!(PgEntityStore::connect(&missing, 1).await, Err(StoreError::Backend(_))));

    let (store, _) = store("closed").await;
    store.close().await;
    assert!(matches!(store.count_accounts(Role::PlatformAdmin).await, Err(StoreError::Closed)));
    assert!(matches!(store.create_account(account("a@example.com")).await, Err(StoreError::Closed)));
}

fn operation(at: i64) -> NewOperationLog {
    NewOperationLog {
        account_id: Some(AccountId(1)),
        account_email: "a@example.com".into(),
        acting_as: Some(EnterpriseId(2)),
        operation: "POST /api/v1/enterprises".into(),
        method: "POST".into(),
        path: "/api/v1/enterprises".into(),
        ip: "203.0.113.1".into(),
        at: UnixMillis(at),
        status: 201,
        outcome: OperationOutcome::Success,
    }
}

#[tokio::test]
async fn the_operation_log_refuses_updates_deletes_and_truncation() {
    let (store, _) = store("operation_log_append_only").await;
    store.append_operation_logs(vec![operation(1), operation(2)]).await.expect("append");
    let before = store.list_operation_logs(OperationLogFilter::default(), Page::first(10)).await.expect("list");
    assert_eq!(before.len(), 2);
    for sql in [
        "UPDATE operation_log SET status = 500",
        "UPDATE operation_log SET account_email = 'x' WHERE id = 1",
        "UPDATE operation_log SET status = 500 WHERE false",
        "DELETE FROM operation_log WHERE id = 1",
        "DELETE FROM operation_log",
        "TRUNCATE operation_log",
        "INSERT INTO operation_log (account_email, operation, method, path, ip, at, status, outcome) \
         VALUES ('e', 'o', 'm', 'p', 'i', 3, 200, 'success') ON CONFLICT (id) DO UPDATE SET status = 1",
    ] {
        let error = sqlx::query(sql).execute(&store.pool).await.expect_err(sql);
        let Some(db) = error.as_database_error() else { panic!("{sql}: {error}") };
        assert!(db.message().contains("operation log is append-only"), "{sql}: {error}");
        assert_eq!(db.code().as_deref(), Some("42501"), "{sql}: insufficient_privilege");
    }
    let after = store.list_operation_logs(OperationLogFilter::default(), Page::first(10)).await.expect("list");
    assert_eq!(after, before);
    store.append_operation_logs(vec![operation(3)]).await.expect("append after refusals");
    assert_eq!(store.list_operation_logs(OperationLogFilter::default(), Page::first(10)).await.expect("list").len(), 3);
}

#[tokio::test]
async fn concurrent_login_failures_each_count_once() {
    let (store, _) = store("login_failures_concurrent").await;
    let account = store.create_account(account("a@example.com")).await.expect("account");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let store = store.clone();
        tasks.spawn(async move { store.record_login_failure(account.id, UnixMillis(1_000), 10, 5).await });
    }
    let results: Vec<Option<Account>> = tasks.join_all().await.into_iter().collect::<Result<_>>().expect("counted");
    let locks = results.iter().flatten().filter(|a| a.failed_logins == 0).count();
    assert_eq!(locks, 6, "64 failures, a lock every 10");
    let after = store.account(account.id).await.expect("read").expect("the account");
    assert_eq!((after.failed_logins, after.locked_until), (4, Some(UnixMillis(1_005))));
}

#[tokio::test]
async fn device_search_uses_the_trigram_index_where_pg_trgm_exists() {
    let (store, _) = store("device_search_trgm").await;
    // Debian's server ships pg_trgm: the migration created the index, and a search plans on it.
    let index: Option<String> =
        sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE indexname = 'devices_search_trgm'")
            .fetch_optional(&store.pool)
            .await
            .expect("read the catalog");
    assert_eq!(index.as_deref(), Some("devices_search_trgm"));
    // One connection: the planner setting holds for the session only.
    let mut conn = store.pool.acquire().await.expect("connection");
    sqlx::query("SET enable_seqscan = off").execute(&mut *conn).await.expect("planner setting");
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN SELECT id FROM devices d WHERE d.search LIKE '%0015650%'")
        .fetch_all(&mut *conn)
        .await
        .expect("explain");
    assert!(plan.iter().any(|line| line.contains("devices_search_trgm")), "{plan:?}");
}

fn announce(id: &str) -> NodeAnnounce {
    NodeAnnounce {
        id: NodeId::parse(id).expect("valid id"),
        quic_addr: "127.0.0.1:4433".into(),
        http_addr: "127.0.0.1:8080".into(),
        sessions: 0,
    }
}

#[tokio::test]
async fn sessions_move_between_nodes_and_a_lapsed_node_loses_the_rest() {
    let (store, _) = store("cluster_sessions").await;
    let e = enterprise(&store, "Cluster").await;
    let mut devices = Vec::new();
    for i in 1..=4 {
        devices
            .push(store.register_device(new_device(e.id, DeviceKey::Mac(mac(i)))).await.expect("register").device.id);
    }
    let (a, b) = (announce("node-a"), announce("node-b"));
    let ttl = std::time::Duration::from_secs(60);
    assert!(store.join_node(&a, ttl).await.expect("join a").is_empty());
    assert!(store.join_node(&b, ttl).await.expect("join b").is_empty());
    let now = UnixMillis(1);
    assert!(store.claim_sessions(&a.id, &devices, now).await.expect("a claims").is_empty());
    // B takes two over (and a device that does not exist is skipped): A is told which.
    let moved = [devices[0], devices[1], DeviceId(999_999)];
    let taken = store.claim_sessions(&b.id, &moved, now).await.expect("b claims");
    assert_eq!(taken, vec![TakenOver { from: a.id.clone(), devices: vec![devices[0], devices[1]] }]);
    // A's offline check: of its silent devices, B (alive) holds the first two; seen from B, A
    // holds the third.
    let checked = [devices[0], devices[1], devices[2]];
    assert_eq!(store.sessions_held_elsewhere(&a.id, &checked).await.expect("check"), vec![devices[0], devices[1]]);
    assert_eq!(store.sessions_held_elsewhere(&b.id, &checked).await.expect("check"), vec![devices[2]]);
    // A's third device went offline there.
    store.release_sessions(&a.id, &[devices[2], devices[0]]).await.expect("release");
    let nodes = store.list_nodes().await.expect("list");
    assert_eq!(
        nodes.iter().map(|n| (n.id.as_str(), n.owned_sessions, n.alive)).collect::<Vec<_>>(),
        [("node-a", 1, true), ("node-b", 2, true)]
    );
    // Nobody has lapsed; then A leaves: its one remaining session is lost, once.
    assert!(store.reap_lapsed_node().await.expect("reap").is_none());
    // A session held by a node whose lease ended does not count as held elsewhere.
    store.leave_node(&b.id).await.expect("b leaves");
    assert!(store.sessions_held_elsewhere(&a.id, &[devices[0]]).await.expect("check").is_empty());
    assert!(store.renew_node(&b, ttl).await.expect("b back"));
    store.leave_node(&a.id).await.expect("leave");
    let (node, lost) = store.reap_lapsed_node().await.expect("reap").expect("a lapsed");
    assert_eq!(node, a.id);
    assert_eq!(lost, vec![LostSession { device_id: devices[3], enterprise_id: e.id }]);
    assert!(store.reap_lapsed_node().await.expect("reap").is_none());
    let nodes = store.list_nodes().await.expect("list");
    assert_eq!(nodes[0].state, NodeState::Down);
    // Renewing after being reaped says so; the node is up again.
    assert!(!store.renew_node(&a, ttl).await.expect("renew"));
    assert!(store.renew_node(&a, ttl).await.expect("renew"));
    // A restarted B takes back nothing it is still connected to: its old sessions are returned.
    let old = store.join_node(&b, ttl).await.expect("rejoin b");
    assert_eq!(old.iter().map(|l| l.device_id).collect::<Vec<_>>(), vec![devices[0], devices[1]]);
}

#[tokio::test]
async fn a_named_lease_has_one_holder_until_it_lapses() {
    let (store, _) = store("cluster_leases").await;
    let (a, b) = (NodeId::parse("a").expect("valid"), NodeId::parse("b").expect("valid"));
    let long = std::time::Duration::from_secs(60);
    assert!(store.hold_lease("outbox", &a, long).await.expect("a takes"));
    assert!(!store.hold_lease("outbox", &b, long).await.expect("b waits"));
    assert!(store.hold_lease("outbox", &a, long).await.expect("a renews"));
    store.release_lease("outbox", &b).await.expect("not b's to release");
    assert!(!store.hold_lease("outbox", &b, long).await.expect("still a's"));
    store.release_lease("outbox", &a).await.expect("a gives up");
    assert!(store.hold_lease("outbox", &b, std::time::Duration::from_millis(1)).await.expect("b takes"));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(store.hold_lease("outbox", &a, long).await.expect("b's lapsed"));
}

#[tokio::test]
async fn engine_events_are_queued_per_bucket_in_order_and_bounded() {
    let (store, _) = store("engine_events").await;
    let batches = vec![(1u16, "a".to_owned()), (2, "b".to_owned()), (1, "c".to_owned())];
    assert_eq!(store.forward_engine_events(&batches).await.expect("forward"), 3);
    assert_eq!(store.take_engine_events(1, 10).await.expect("take"), ["a", "c"]);
    assert_eq!(store.take_engine_events(1, 10).await.expect("take"), Vec::<String>::new());
    assert_eq!(store.take_engine_events(2, 1).await.expect("take"), ["b"]);
    // Full: the queue takes what fits below its bound and refuses the rest.
    let fill: Vec<(u16, String)> = (0..MAX_ENGINE_BATCHES).map(|i| (5, i.to_string())).collect();
    for _ in 0..MAX_ENGINE_QUEUE / MAX_ENGINE_BATCHES - 1 {
        assert_eq!(store.forward_engine_events(&fill).await.expect("fill"), MAX_ENGINE_BATCHES);
    }
    let last: Vec<(u16, String)> = (0..MAX_ENGINE_BATCHES + 1).map(|i| (6, i.to_string())).collect();
    assert!(store.forward_engine_events(&last).await.is_err(), "above the per-call bound");
    assert_eq!(store.forward_engine_events(&last[..MAX_ENGINE_BATCHES]).await.expect("last"), MAX_ENGINE_BATCHES);
    assert_eq!(store.forward_engine_events(&last[..1]).await.expect("refused"), 0);
    let taken = store.take_engine_events(6, MAX_ENGINE_BATCHES).await.expect("take");
    assert_eq!(taken.len(), MAX_ENGINE_BATCHES);
    assert_eq!(taken[0], "0");
    assert_eq!(taken[999], "999");
}

#[tokio::test]
async fn engine_bucket_leases_are_listed_and_shown_per_node() {
    let (store, _) = store("engine_leases").await;
    let a = NodeAnnounce {
        id: NodeId::parse("a").expect("valid"),
        quic_addr: "q".into(),
        http_addr: "h".into(),
        sessions: 0,
    };
    let ttl = std::time::Duration::from_secs(60);
    store.join_node(&a, ttl).await.expect("join");
    for b in [3u16, 1] {
        assert!(store.hold_lease(&engine_lease_name(b), &a.id, ttl).await.expect("take"));
    }
    assert!(store.hold_lease("outbox", &a.id, ttl).await.expect("outbox"));
    let leases = store.list_leases(ENGINE_LEASE_PREFIX).await.expect("list");
    let names: Vec<(&str, bool)> = leases.iter().map(|l| (l.name.as_str(), l.current)).collect();
    assert_eq!(names, [("engine:1", true), ("engine:3", true)]);
    assert_eq!(store.list_nodes().await.expect("nodes")[0].engine_buckets, [1, 3]);
    store.release_lease(&engine_lease_name(1), &a.id).await.expect("release");
    assert_eq!(store.list_nodes().await.expect("nodes")[0].engine_buckets, [3]);
}
