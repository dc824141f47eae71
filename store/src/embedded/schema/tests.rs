//! Migration tests: databases of older schema versions upgraded to the current one.

use super::*;

#[test]
fn migrations_apply_once_and_refuse_newer_databases() {
    let mut conn = Connection::open_in_memory().expect("open");
    assert_eq!(migrate(&mut conn).expect("first"), CURRENT_VERSION);
    assert_eq!(migrate(&mut conn).expect("idempotent"), CURRENT_VERSION);
    conn.pragma_update(None, "user_version", CURRENT_VERSION + 1).expect("bump");
    assert!(matches!(migrate(&mut conn), Err(StoreError::Migration { .. })));
}

#[test]
fn login_protection_columns_default_for_existing_accounts() {
    let mut conn = Connection::open_in_memory().expect("open");
    for sql in &MIGRATIONS[..5] {
        conn.execute_batch(sql).expect("migration");
    }
    conn.pragma_update(None, "user_version", 5).expect("version 5");
    conn.execute(
        "INSERT INTO accounts (email, password_hash, role, created_at) VALUES ('a@b', 'h', 'platform_admin', 1)",
        [],
    )
    .expect("an account of version 5");
    assert_eq!(migrate(&mut conn).expect("migrate"), CURRENT_VERSION);
    let (failed, locked): (u32, Option<i64>) = conn
        .query_row("SELECT failed_logins, locked_until FROM accounts", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("the account");
    assert_eq!((failed, locked), (0, None));
}

#[test]
fn session_and_totp_columns_default_for_existing_rows() {
    let mut conn = Connection::open_in_memory().expect("open");
    for sql in &MIGRATIONS[..7] {
        conn.execute_batch(sql).expect("migration");
    }
    conn.pragma_update(None, "user_version", 7).expect("version 7");
    conn.execute_batch(
        "INSERT INTO accounts (id, email, password_hash, role, created_at) VALUES (1, 'a@b', 'h', 'platform_admin', 1);
         INSERT INTO sessions (token_hash, account_id, created_at, expires_at) VALUES (x'01', 1, 1234, 9999);",
    )
    .expect("rows of version 7");
    assert_eq!(migrate(&mut conn).expect("migrate"), CURRENT_VERSION);
    let seen: i64 = conn.query_row("SELECT last_seen_at FROM sessions", [], |r| r.get(0)).expect("session");
    assert_eq!(seen, 1234);
    let (secret, step): (Option<Vec<u8>>, Option<i64>) = conn
        .query_row("SELECT totp_secret, totp_last_step FROM accounts", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("the account");
    assert_eq!((secret, step), (None, None));
    // A secret of another length is refused by the database itself.
    assert!(conn.execute("UPDATE accounts SET totp_secret = x'0102'", []).is_err());
}

#[test]
fn tenant_columns_are_null_for_existing_rows() {
    let mut conn = Connection::open_in_memory().expect("open");
    conn.pragma_update(None, "foreign_keys", "ON").expect("foreign keys");
    for sql in &MIGRATIONS[..8] {
        conn.execute_batch(sql).expect("migration");
    }
    conn.pragma_update(None, "user_version", 8).expect("version 8");
    conn.execute_batch(
        "INSERT INTO accounts (id, email, password_hash, role, created_at) VALUES (1, 'a@b', 'h', 'platform_admin', 1);
         INSERT INTO enterprises (id, name, credential, created_at) VALUES (1, 'e', 'c', 1);",
    )
    .expect("rows of version 8");
    assert_eq!(migrate(&mut conn).expect("migrate"), CURRENT_VERSION);
    let (channel, enterprise): (Option<i64>, Option<i64>) = conn
        .query_row("SELECT channel_id, enterprise_id FROM accounts", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("the account");
    assert_eq!((channel, enterprise), (None, None));
    let channel: Option<i64> =
        conn.query_row("SELECT channel_id FROM enterprises", [], |r| r.get(0)).expect("the enterprise");
    assert_eq!(channel, None);
    // The database itself refuses a channel that does not exist.
    assert!(conn.execute("UPDATE enterprises SET channel_id = 42", []).is_err());
}

#[test]
fn existing_accounts_are_not_frozen() {
    let mut conn = Connection::open_in_memory().expect("open");
    for sql in &MIGRATIONS[..9] {
        conn.execute_batch(sql).expect("migration");
    }
    conn.pragma_update(None, "user_version", 9).expect("version 9");
    conn.execute(
        "INSERT INTO accounts (email, password_hash, role, created_at) VALUES ('a@b', 'h', 'platform_admin', 1)",
        [],
    )
    .expect("an account of version 9");
    assert_eq!(migrate(&mut conn).expect("migrate"), CURRENT_VERSION);
    let frozen: bool = conn.query_row("SELECT frozen FROM accounts", [], |r| r.get(0)).expect("the account");
    assert!(!frozen);
}

#[test]
fn existing_devices_get_an_empty_snapshot_and_their_type_on_open() {
    let mut conn = Connection::open_in_memory().expect("open");
    for sql in &MIGRATIONS[..11] {
        conn.execute_batch(sql).expect("migration");
    }
    conn.pragma_update(None, "user_version", 11).expect("version 11");
    conn.execute_batch(
        "INSERT INTO enterprises (id, name, credential, created_at) VALUES (1, 'e', 'c', 1);
         INSERT INTO devices (enterprise_id, mac, serial, model, firmware, created_at)
             VALUES (1, '001565aabbcc', 'SN-X', 'SIP-T48S', '1.0', 1), (1, NULL, 'SN-Y', 'UVC86', '1.0', 2);",
    )
    .expect("devices of version 11");
    assert_eq!(migrate(&mut conn).expect("migrate"), CURRENT_VERSION);
    let row: (String, bool, String, String, i64, String) = conn
        .query_row(
            "SELECT device_type, online, sip_status, public_ip, last_report_at, search FROM devices WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .expect("the device");
    assert_eq!(
        row,
        (
            "other".into(),
            false,
            "unknown".into(),
            String::new(),
            0,
            "001565aabbcc\u{1f}\u{1f}sn-x\u{1f}sip-t48s".into()
        )
    );
    super::super::refresh_device_types(&conn).expect("refresh");
    let types: Vec<String> = conn
        .prepare("SELECT device_type FROM devices ORDER BY id")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .expect("types");
    assert_eq!(types, ["phone", "usb"]);
}

#[test]
fn existing_accounts_need_not_change_their_password() {
    let mut conn = Connection::open_in_memory().expect("open");
    for sql in &MIGRATIONS[..10] {
        conn.execute_batch(sql).expect("migration");
    }
    conn.pragma_update(None, "user_version", 10).expect("version 10");
    conn.execute(
        "INSERT INTO accounts (email, password_hash, role, created_at) VALUES ('a@b', 'h', 'platform_admin', 1)",
        [],
    )
    .expect("an account of version 10");
    assert_eq!(migrate(&mut conn).expect("migrate"), CURRENT_VERSION);
    let must: bool =
        conn.query_row("SELECT must_change_password FROM accounts", [], |r| r.get(0)).expect("the account");
    assert!(!must);
}

#[test]
fn the_saved_engine_state_stays_the_single_engines_once_keyed_by_owner() {
    let mut conn = Connection::open_in_memory().expect("open");
    let before = MIGRATIONS
        .iter()
        .position(|m| m.contains("alarm_engine_state_by_owner"))
        .expect("the migration keying by owner");
    for sql in &MIGRATIONS[..before] {
        conn.execute_batch(sql).expect("migration");
    }
    conn.pragma_update(None, "user_version", u32::try_from(before).expect("few migrations")).expect("version");
    conn.execute("INSERT INTO alarm_engine_state (id, state, saved_at) VALUES (1, '{}', 5)", [])
        .expect("a state saved before");
    assert_eq!(migrate(&mut conn).expect("migrate"), CURRENT_VERSION);
    let (owner, saved_at): (String, i64) = conn
        .query_row("SELECT owner, saved_at FROM alarm_engine_state", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("the state kept");
    assert_eq!((owner.as_str(), saved_at), ("", 5), "the single engine's");
}

#[test]
fn events_stored_before_one_index_keep_their_rows_and_get_their_entries() {
    let mut conn = Connection::open_in_memory().expect("open");
    let before = MIGRATIONS.iter().position(|m| m.contains("CREATE TABLE device_events")).expect("the migration");
    for sql in &MIGRATIONS[..before] {
        conn.execute_batch(sql).expect("migration");
    }
    conn.pragma_update(None, "user_version", u32::try_from(before).expect("few migrations")).expect("version");
    // Rowids with gaps, as deletes leave them: the migration keeps each row's rowid as its id.
    conn.execute_batch(
        "INSERT INTO status_events (rowid, device_id, enterprise_id, seq, at, sip_summary, call_status, firmware, \
             uptime_s, lines) VALUES (7, 1, 1, 1, 10, 'registered', 'idle', '1.0', 5, '[]');
         INSERT INTO resource_reports (rowid, device_id, enterprise_id, seq, at, cpu_centi_pct, mem_used, mem_total) \
             VALUES (3, 1, 1, 2, 20, 1, 1, 2), (9, 2, 1, 1, 20, 1, 1, 2);
         INSERT INTO alarm_events (rowid, device_id, enterprise_id, seq, at, code, clear, description, log) \
             VALUES (4, 1, 1, 0, 25, 9001, 0, 'offline', NULL), (5, 1, 1, 3, 30, 101, 0, 'crash', x'01');",
    )
    .expect("events stored before");
    assert_eq!(migrate(&mut conn).expect("migrate"), CURRENT_VERSION);
    let entries: Vec<(i64, i64, i64, i64)> = conn
        .prepare("SELECT device_id, seq, kind, row FROM device_events")
        .expect("entries")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("entries")
        .collect::<rusqlite::Result<_>>()
        .expect("entries");
    assert_eq!(entries, [(1, 0, 2, 4), (1, 1, 0, 7), (1, 2, 1, 3), (1, 3, 2, 5), (2, 1, 1, 9)]);
    let resources: Vec<(i64, i64)> = conn
        .prepare("SELECT id, device_id FROM resource_reports ORDER BY id")
        .expect("rows")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    assert_eq!(resources, [(3, 1), (9, 2)]);
    // Deleting a migrated event takes its entry with it.
    conn.execute("DELETE FROM resource_reports WHERE id = 3", []).expect("a delete");
    let left: i64 = conn.query_row("SELECT count(*) FROM device_events", [], |r| r.get(0)).expect("entries");
    assert_eq!(left, 4);
}
