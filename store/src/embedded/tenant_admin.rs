//! Deleted sub-accounts, tenant freezes and enterprise moves on SQLite ([`TenantAdminStore`]).

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, params};

use super::{EmbeddedStore, row_exists};
use crate::tenant_admin::tombstone_email;
use crate::*;

/// The accounts of a tenant, as a statement prefix: a CTE `tenant_accounts(id)` of every live
/// account of the channel subtree rooted at `?1` and of its enterprises, or of enterprise `?1`.
fn tenant_accounts_cte(tenant: TenantRef) -> &'static str {
    match tenant {
        TenantRef::Channel(_) => {
            "WITH RECURSIVE subtree(id) AS (SELECT id FROM channels WHERE id = ?1 \
             UNION SELECT c.id FROM channels c JOIN subtree s ON c.parent_id = s.id), \
             tenant_accounts(id) AS (SELECT id FROM accounts WHERE deleted_at IS NULL AND \
             (channel_id IN (SELECT id FROM subtree) \
             OR enterprise_id IN (SELECT id FROM enterprises WHERE channel_id IN (SELECT id FROM subtree)))) "
        }
        TenantRef::Enterprise(_) => {
            "WITH tenant_accounts(id) AS (SELECT id FROM accounts WHERE deleted_at IS NULL AND enterprise_id = ?1) "
        }
    }
}

fn freeze_row(c: &Connection, tenant: TenantRef) -> Result<Option<TenantFreeze>> {
    let (kind, id) = tenant.parts();
    Ok(c.prepare_cached(
        "SELECT frozen_at, frozen_by, accounts FROM tenant_freezes WHERE kind = ?1 AND tenant_id = ?2",
    )?
    .query_row(params![kind, id], |r| {
        Ok(TenantFreeze {
            tenant,
            frozen_at: UnixMillis(r.get(0)?),
            frozen_by: AccountId(r.get(1)?),
            accounts: r.get(2)?,
        })
    })
    .optional()?)
}

#[async_trait]
impl TenantAdminStore for EmbeddedStore {
    async fn delete_sub_account(&self, id: AccountId, now: UnixMillis) -> Result<bool> {
        let Ok(account) = i64::try_from(id.0) else { return Ok(false) };
        self.write(1, move |c| {
            let deleted = c
                .prepare_cached(
                    "UPDATE accounts SET deleted_at = ?2, email = ?3, password_hash = '', frozen = 1, \
                     frozen_by = NULL, totp_secret = NULL \
                     WHERE id = ?1 AND parent_id IS NOT NULL AND deleted_at IS NULL",
                )?
                .execute(params![account, now.0, tombstone_email(id)])?
                > 0;
            if deleted {
                for table in ["sessions", "password_resets", "login_challenges", "device_labels", "device_columns"] {
                    c.prepare_cached(&format!("DELETE FROM {table} WHERE account_id = ?1"))?.execute([account])?;
                }
            }
            Ok(deleted)
        })
        .await
    }

    async fn freeze_tenant(&self, tenant: TenantRef, by: AccountId, now: UnixMillis) -> Result<Option<TenantFreeze>> {
        self.write(1, move |c| {
            let (kind, id) = tenant.parts();
            let table = if kind == "channel" { "channels" } else { "enterprises" };
            check_exists(kind, id, row_exists(c, table, id)?)?;
            if freeze_row(c, tenant)?.is_some() {
                return Ok(None);
            }
            let key = tenant.key();
            let cte = tenant_accounts_cte(tenant);
            let frozen = c
                .prepare_cached(&format!(
                    "{cte}UPDATE accounts SET frozen = 1, frozen_by = ?2 \
                     WHERE frozen = 0 AND id IN (SELECT id FROM tenant_accounts)"
                ))?
                .execute(params![id, key])? as u64;
            c.prepare_cached(
                "DELETE FROM sessions WHERE account_id IN (SELECT id FROM accounts WHERE frozen_by = ?1)",
            )?
            .execute([&key])?;
            c.prepare_cached(
                "INSERT INTO tenant_freezes (kind, tenant_id, frozen_at, frozen_by, accounts) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![kind, id, now.0, by.0, frozen])?;
            Ok(Some(TenantFreeze { tenant, frozen_at: now, frozen_by: by, accounts: frozen }))
        })
        .await
    }

    async fn unfreeze_tenant(&self, tenant: TenantRef) -> Result<Option<u64>> {
        self.write(1, move |c| {
            let (kind, id) = tenant.parts();
            let removed = c
                .prepare_cached("DELETE FROM tenant_freezes WHERE kind = ?1 AND tenant_id = ?2")?
                .execute(params![kind, id])?
                > 0;
            if !removed {
                return Ok(None);
            }
            let unfrozen = c
                .prepare_cached("UPDATE accounts SET frozen = 0, frozen_by = NULL WHERE frozen_by = ?1")?
                .execute([tenant.key()])?;
            Ok(Some(unfrozen as u64))
        })
        .await
    }

    async fn tenant_freeze(&self, tenant: TenantRef) -> Result<Option<TenantFreeze>> {
        self.read(move |c| freeze_row(c, tenant)).await
    }

    async fn move_enterprise(&self, id: EnterpriseId, to: Option<ChannelId>) -> Result<Option<Enterprise>> {
        let Ok(enterprise) = i64::try_from(id.0) else { return Ok(None) };
        let moved = self
            .write(1, move |c| {
                if let Some(channel) = to {
                    check_exists("channel", channel.0, row_exists(c, "channels", channel.0)?)?;
                }
                let moved = c
                    .prepare_cached(
                        "UPDATE enterprises SET channel_id = ?2, channel_authorization = 'none' WHERE id = ?1",
                    )?
                    .execute(params![enterprise, to.map(|c| c.0)])?
                    > 0;
                if moved {
                    c.prepare_cached("DELETE FROM sessions WHERE acting_enterprise_id = ?1")?.execute([enterprise])?;
                }
                Ok(moved)
            })
            .await?;
        if moved { self.enterprise(id).await } else { Ok(None) }
    }
}
