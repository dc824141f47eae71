//! Accounts, sessions, TOTP and login lockout on SQLite ([`AccountStore`]).

use async_trait::async_trait;
use fleetpulse_proto::ids::ChannelId;
use fleetpulse_proto::{AccountId, EnterpriseId, UnixMillis};
use rusqlite::{OptionalExtension, Row, params};

use super::{
    EmbeddedStore, SqlValue, backend, db_after, is_unique_violation, json_column, push_tenant_term, row_exists,
};
use crate::*;

/// The columns `account_from_row` reads, in its order.
const ACCOUNT_COLUMNS: &str = "id, email, password_hash, role, created_at, failed_logins, locked_until, totp_secret, \
     totp_last_step, channel_id, enterprise_id, frozen, must_change_password, parent_id, permissions";

fn account_from_row(r: &Row<'_>) -> rusqlite::Result<Account> {
    let role: String = r.get(3)?;
    // An unknown role is an error, never some default role: that could grant too much.
    let role = Role::parse(&role).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Text,
            format!("unknown role {role:?}").into(),
        )
    })?;
    Ok(Account {
        id: AccountId(r.get(0)?),
        email: r.get(1)?,
        password_hash: r.get(2)?,
        role,
        channel_id: r.get::<_, Option<u64>>(9)?.map(ChannelId),
        enterprise_id: r.get::<_, Option<u64>>(10)?.map(EnterpriseId),
        created_at: UnixMillis(r.get(4)?),
        failed_logins: r.get(5)?,
        locked_until: r.get::<_, Option<i64>>(6)?.map(UnixMillis),
        totp_secret: r.get(7)?,
        totp_last_step: r.get::<_, Option<i64>>(8)?.map(|s| u64::try_from(s).unwrap_or_default()),
        frozen: r.get(11)?,
        must_change_password: r.get(12)?,
        parent_id: r.get::<_, Option<u64>>(13)?.map(AccountId),
        permissions: r.get::<_, Option<String>>(14)?.map(|p| json_column(14, &p, Permissions::decode)).transpose()?,
    })
}

/// The query of [`EntityStore::list_accounts`] and its values.
fn account_filter_sql(filter: &AccountFilter, page: Page) -> Result<(String, Vec<SqlValue>)> {
    let mut terms: Vec<String> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    let tenants = (filter.channels.as_deref(), filter.enterprises.as_deref());
    push_tenant_term(&mut terms, &mut values, "enterprise_id", tenants, MAX_ACCOUNT_FILTER)?;
    if let Some(parent) = filter.parent {
        terms.push("parent_id = ?".into());
        values.push(Box::new(db_after(parent.0)));
    }
    if let Some(q) = search_needle(filter.q.as_deref())? {
        terms.push(
            "(instr(lower(email), ?) > 0 \
             OR id IN (SELECT account_id FROM account_settings WHERE instr(contact_search, ?) > 0))"
                .into(),
        );
        values.push(Box::new(q.clone()));
        values.push(Box::new(q));
    }
    // Deleted sub-accounts are tombstones (`TenantAdminStore::delete_sub_account`).
    terms.push("deleted_at IS NULL".into());
    terms.push("id > ?".into());
    values.push(Box::new(db_after(page.after)));
    values.push(Box::new(page.limit));
    Ok((format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE {} ORDER BY id LIMIT ?", terms.join(" AND ")), values))
}

#[async_trait]
impl AccountStore for EmbeddedStore {
    async fn create_account(&self, new: NewAccount) -> Result<Account> {
        new.validate_tenant()?;
        let now = UnixMillis::now();
        self.write(1, move |c| {
            if let Some(channel) = new.channel_id {
                check_exists("channel", channel.0, row_exists(c, "channels", channel.0)?)?;
            }
            if let Some(enterprise) = new.enterprise_id {
                check_exists("enterprise", enterprise.0, row_exists(c, "enterprises", enterprise.0)?)?;
            }
            if let Some(parent) = new.parent_id {
                let found = c
                    .prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"))?
                    .query_row([db_after(parent.0)], account_from_row)
                    .optional()?;
                check_sub_account_parent(&new, found.as_ref())?;
            }
            let permissions = new.permissions.as_ref().map(Permissions::encode).transpose()?;
            c.prepare_cached(
                "INSERT INTO accounts (email, password_hash, role, created_at, channel_id, enterprise_id, \
                 must_change_password, parent_id, permissions) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                new.email,
                new.password_hash,
                new.role.as_str(),
                now.0,
                new.channel_id.map(|ch| ch.0),
                new.enterprise_id.map(|e| e.0),
                new.must_change_password,
                new.parent_id.map(|p| p.0),
                permissions
            ])
            .map_err(|e| if is_unique_violation(&e) { StoreError::AlreadyExists("email") } else { backend(e) })?;
            Ok(Account {
                id: AccountId(c.last_insert_rowid() as u64),
                email: new.email.clone(),
                password_hash: new.password_hash.clone(),
                role: new.role,
                channel_id: new.channel_id,
                enterprise_id: new.enterprise_id,
                created_at: now,
                failed_logins: 0,
                locked_until: None,
                totp_secret: None,
                totp_last_step: None,
                frozen: false,
                must_change_password: new.must_change_password,
                parent_id: new.parent_id,
                permissions: new.permissions.clone(),
            })
        })
        .await
    }

    async fn account_by_email(&self, email: &str) -> Result<Option<Account>> {
        let email = email.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = ?1 AND deleted_at IS NULL"
            ))?
            .query_row([email], account_from_row)
            .optional()?)
        })
        .await
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1 AND deleted_at IS NULL"
            ))?
            .query_row([id.0], account_from_row)
            .optional()?)
        })
        .await
    }

    async fn list_accounts(&self, filter: AccountFilter, page: Page) -> Result<Vec<Account>> {
        let (sql, values) = account_filter_sql(&filter, page)?;
        self.read(move |c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(values.iter()), account_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_account_permissions(&self, account: AccountId, permissions: Permissions) -> Result<bool> {
        let Ok(account) = i64::try_from(account.0) else { return Ok(false) };
        let permissions = permissions.normalized()?.encode()?;
        self.write(1, move |c| {
            Ok(c.prepare_cached("UPDATE accounts SET permissions = ?2 WHERE id = ?1 AND permissions IS NOT NULL")?
                .execute(params![account, permissions])?
                > 0)
        })
        .await
    }

    async fn set_account_frozen(&self, account: AccountId, frozen: bool) -> Result<bool> {
        let Ok(account) = i64::try_from(account.0) else { return Ok(false) };
        // One write job: the flag and the deletion of the sessions commit together.
        self.write(1, move |c| {
            let found = c
                .prepare_cached(
                    "UPDATE accounts SET frozen = ?2, frozen_by = NULL WHERE id = ?1 AND deleted_at IS NULL",
                )?
                .execute(params![account, frozen])?
                > 0;
            if found && frozen {
                c.prepare_cached("DELETE FROM sessions WHERE account_id = ?1")?.execute([account])?;
            }
            Ok(found)
        })
        .await
    }

    async fn set_password(&self, account: AccountId, password_hash: String, must_change: bool) -> Result<bool> {
        let Ok(account) = i64::try_from(account.0) else { return Ok(false) };
        self.write(1, move |c| {
            Ok(c.prepare_cached("UPDATE accounts SET password_hash = ?2, must_change_password = ?3 WHERE id = ?1")?
                .execute(params![account, password_hash, must_change])?
                > 0)
        })
        .await
    }

    async fn count_accounts(&self, role: Role) -> Result<u64> {
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT count(*) FROM accounts WHERE role = ?1")?
                .query_row([role.as_str()], |r| r.get(0))?)
        })
        .await
    }

    async fn create_session(&self, s: Session) -> Result<()> {
        self.write(1, move |c| {
            c.prepare_cached("DELETE FROM sessions WHERE expires_at < ?1")?.execute([s.created_at.0])?;
            c.prepare_cached(
                "INSERT INTO sessions (token_hash, account_id, created_at, expires_at, last_seen_at, \
                 acting_enterprise_id, acting_channel_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                &s.token_hash.0[..],
                s.account_id.0,
                s.created_at.0,
                s.expires_at.0,
                s.last_seen_at.0,
                match s.acting {
                    Some(Acting::Enterprise(e)) => Some(e.0),
                    _ => None,
                },
                match s.acting {
                    Some(Acting::Channel(ch)) => Some(ch.0),
                    _ => None,
                },
            ])?;
            Ok(())
        })
        .await
    }

    async fn session(&self, token_hash: TokenHash, now: UnixMillis) -> Result<Option<Session>> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT account_id, created_at, expires_at, last_seen_at, acting_enterprise_id, acting_channel_id \
                 FROM sessions WHERE token_hash = ?1 AND expires_at > ?2",
            )?
            .query_row(params![&token_hash.0[..], now.0], |r| {
                Ok(Session {
                    token_hash,
                    account_id: AccountId(r.get(0)?),
                    created_at: UnixMillis(r.get(1)?),
                    expires_at: UnixMillis(r.get(2)?),
                    last_seen_at: UnixMillis(r.get(3)?),
                    acting: match (r.get::<_, Option<u64>>(4)?, r.get::<_, Option<u64>>(5)?) {
                        (Some(e), _) => Some(Acting::Enterprise(EnterpriseId(e))),
                        (None, Some(ch)) => Some(Acting::Channel(ChannelId(ch))),
                        (None, None) => None,
                    },
                })
            })
            .optional()?)
        })
        .await
    }

    async fn touch_session(&self, token_hash: TokenHash, now: UnixMillis) -> Result<()> {
        self.write(1, move |c| {
            c.prepare_cached("UPDATE sessions SET last_seen_at = ?2 WHERE token_hash = ?1 AND last_seen_at < ?2")?
                .execute(params![&token_hash.0[..], now.0])?;
            Ok(())
        })
        .await
    }

    async fn delete_session(&self, token_hash: TokenHash) -> Result<bool> {
        self.write(1, move |c| {
            Ok(c.prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?.execute([&token_hash.0[..]])? > 0)
        })
        .await
    }

    async fn delete_account_sessions(&self, account: AccountId) -> Result<u64> {
        let Ok(account) = i64::try_from(account.0) else { return Ok(0) };
        self.write(1, move |c| {
            let deleted = c.prepare_cached("DELETE FROM sessions WHERE account_id = ?1")?.execute([account])?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn set_totp(&self, account: AccountId, secret: Option<[u8; 20]>) -> Result<bool> {
        let Ok(account) = i64::try_from(account.0) else { return Ok(false) };
        self.write(1, move |c| {
            let secret: Option<&[u8]> = secret.as_ref().map(|s| &s[..]);
            Ok(c.prepare_cached("UPDATE accounts SET totp_secret = ?2, totp_last_step = NULL WHERE id = ?1")?
                .execute(params![account, secret])?
                > 0)
        })
        .await
    }

    async fn record_totp_step(&self, account: AccountId, step: u64) -> Result<bool> {
        let step = totp_step(step)?;
        let Ok(account) = i64::try_from(account.0) else { return Ok(false) };
        // One conditional statement: of concurrent attempts at the same step, one updates.
        self.write(1, move |c| {
            Ok(c.prepare_cached(
                "UPDATE accounts SET totp_last_step = ?2 \
                 WHERE id = ?1 AND (totp_last_step IS NULL OR totp_last_step < ?2)",
            )?
            .execute([account, step])?
                > 0)
        })
        .await
    }

    async fn record_login_failure(
        &self,
        account: AccountId,
        now: UnixMillis,
        max_failures: u32,
        lock_for_ms: u64,
    ) -> Result<Option<Account>> {
        let until = login_lock_until(now, max_failures, lock_for_ms)?;
        let Ok(account) = i64::try_from(account.0) else { return Ok(None) };
        // One statement in one write job: the single writer serialises concurrent failures, and
        // the `SET` expressions all read the row as it was before this update.
        self.write(1, move |c| {
            Ok(c.prepare_cached(&format!(
                "UPDATE accounts SET \
                 failed_logins = CASE WHEN failed_logins + 1 >= ?2 THEN 0 ELSE failed_logins + 1 END, \
                 locked_until = CASE WHEN failed_logins + 1 >= ?2 THEN ?3 ELSE locked_until END \
                 WHERE id = ?1 RETURNING {ACCOUNT_COLUMNS}"
            ))?
            .query_row(params![account, max_failures, until.0], account_from_row)
            .optional()?)
        })
        .await
    }

    async fn record_login_success(&self, account: AccountId) -> Result<()> {
        let Ok(account) = i64::try_from(account.0) else { return Ok(()) };
        self.write(1, move |c| {
            c.prepare_cached(
                "UPDATE accounts SET failed_logins = 0, locked_until = NULL \
                 WHERE id = ?1 AND (failed_logins <> 0 OR locked_until IS NOT NULL)",
            )?
            .execute([account])?;
            Ok(())
        })
        .await
    }
}
