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
