//! Configuration profiles on PostgreSQL ([`ProfileStore`]): settings as JSON, deployments one row
//! per (target, position), provisioning records as JSON. Writes of one enterprise's profiles and
//! deployments are serialised by a transaction-scoped advisory lock, which keeps the count limits
//! and the replace-a-deployment step true under concurrent requests.

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, ProfileId, UnixMillis};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{PgEntityStore, backend, db_id, row_id, unique_as};
use crate::*;

/// Serialises profile and deployment writes of enterprise `$1` until the transaction ends.
const LOCK_ENTERPRISE_PROFILES: &str = "SELECT pg_advisory_xact_lock(hashtextextended('fleetpulse.profiles', $1))";

fn profile_from_row(r: &PgRow) -> Result<StoredProfile> {
    let settings: String = r.try_get("settings").map_err(backend)?;
    Ok(StoredProfile {
        id: ProfileId(row_id(r.try_get("id").map_err(backend)?)),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        settings: serde_json::from_str(&settings)
            .map_err(|e| StoreError::Backend(format!("decoding profile settings: {e}")))?,
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        updated_at: UnixMillis(r.try_get("updated_at").map_err(backend)?),
    })
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encoding {what}: {e}")))
}

async fn lock(c: &mut PgConnection, enterprise: i64) -> Result<()> {
    sqlx::query(LOCK_ENTERPRISE_PROFILES).bind(enterprise).execute(c).await.map_err(backend)?;
    Ok(())
}

async fn owner_of(c: &mut PgConnection, table: &'static str, id: u64) -> Result<Option<i64>> {
    let Some(id) = db_id(id) else { return Ok(None) };
    let sql = if table == "devices" {
        "SELECT enterprise_id FROM devices WHERE id = $1"
    } else {
        "SELECT enterprise_id FROM profiles WHERE id = $1"
    };
    sqlx::query_scalar(sql).bind(id).fetch_optional(c).await.map_err(backend)
}

#[async_trait]
impl ProfileStore for PgEntityStore {
    async fn create_profile(
        &self,
        enterprise: EnterpriseId,
        settings: ProfileSettings,
        at: UnixMillis,
    ) -> Result<StoredProfile> {
        settings.validate()?;
        let e = db_id(enterprise.0).ok_or_else(|| StoreError::InvalidInput("no such enterprise".into()))?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        lock(&mut tx, e).await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM profiles WHERE enterprise_id = $1")
            .bind(e)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if count as usize >= MAX_PROFILES {
            return Err(StoreError::LimitExceeded(format!("an enterprise has at most {MAX_PROFILES} profiles")));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO profiles (enterprise_id, name, settings, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) RETURNING id",
        )
        .bind(e)
        .bind(&settings.name)
        .bind(encode("profile settings", &settings)?)
        .bind(at.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(unique_as("profile name"))?;
        tx.commit().await.map_err(backend)?;
        Ok(StoredProfile {
            id: ProfileId(row_id(id)),
            enterprise_id: enterprise,
            settings,
            created_at: at,
            updated_at: at,
        })
    }

    async fn profile(&self, id: ProfileId) -> Result<Option<StoredProfile>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query("SELECT id, enterprise_id, settings, created_at, updated_at FROM profiles WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(profile_from_row)
            .transpose()
    }

    async fn list_profiles(&self, enterprise: EnterpriseId) -> Result<Vec<StoredProfile>> {
        let Some(e) = db_id(enterprise.0) else { return Ok(Vec::new()) };
        sqlx::query(
            "SELECT id, enterprise_id, settings, created_at, updated_at FROM profiles WHERE enterprise_id = $1 ORDER BY name COLLATE \"C\", id",
        )
        .bind(e)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(profile_from_row)
        .collect()
    }

    async fn update_profile(
        &self,
        id: ProfileId,
        settings: ProfileSettings,
        at: UnixMillis,
    ) -> Result<Option<StoredProfile>> {
        settings.validate()?;
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(
            "UPDATE profiles SET name = $2, settings = $3, updated_at = $4 WHERE id = $1 \
             RETURNING id, enterprise_id, settings, created_at, updated_at",
        )
        .bind(id)
        .bind(&settings.name)
        .bind(encode("profile settings", &settings)?)
        .bind(at.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(unique_as("profile name"))?
        .as_ref()
        .map(profile_from_row)
        .transpose()
    }

    async fn delete_profile(&self, id: ProfileId) -> Result<bool> {
        let Some(id) = db_id(id.0) else { return Ok(false) };
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let Some(enterprise) = owner_of(&mut tx, "profiles", row_id(id)).await? else { return Ok(false) };
        lock(&mut tx, enterprise).await?;
        let users: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT container, member FROM profile_deployments WHERE profile_id = $1 \
             ORDER BY container, member LIMIT 10",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        if !users.is_empty() {
            let names: Vec<String> =
                users.iter().filter_map(|(c, m)| DeploymentTarget::from_stored(c, m)).map(|t| t.to_string()).collect();
            return Err(StoreError::InvalidInput(format!(
                "the profile is deployed to {}: remove it from those deployments first",
                names.join(", ")
            )));
        }
        let done =
            sqlx::query("DELETE FROM profiles WHERE id = $1").bind(id).execute(&mut *tx).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_deployment(
        &self,
        enterprise: EnterpriseId,
        target: DeploymentTarget,
        profiles: Vec<ProfileId>,
        at: UnixMillis,
    ) -> Result<Option<Deployment>> {
        target.validate()?;
        check_deployment_profiles(&profiles)?;
        let e = db_id(enterprise.0).ok_or_else(|| StoreError::InvalidInput("no such enterprise".into()))?;
        let (container, member) = (target.container().as_str(), target.member_key());
        let mut tx = self.pool.begin().await.map_err(backend)?;
        lock(&mut tx, e).await?;
        for p in &profiles {
            if owner_of(&mut tx, "profiles", p.0).await? != Some(e) {
                return Err(StoreError::InvalidInput(format!("no profile {p} in this enterprise")));
            }
        }
        let device_id = match &target {
            DeploymentTarget::Device { device_id } => {
                if owner_of(&mut tx, "devices", device_id.0).await? != Some(e) {
                    return Err(StoreError::InvalidInput(format!("no device {device_id} in this enterprise")));
                }
                db_id(device_id.0)
            }
            _ => None,
        };
        let existed =
            sqlx::query("DELETE FROM profile_deployments WHERE enterprise_id = $1 AND container = $2 AND member = $3")
                .bind(e)
                .bind(container)
                .bind(&member)
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected()
                > 0;
        if profiles.is_empty() {
            tx.commit().await.map_err(backend)?;
            return Ok(None);
        }
        if !existed {
            let targets: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT DISTINCT container, member FROM profile_deployments WHERE enterprise_id = $1) t",
            )
            .bind(e)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
            if targets as usize >= MAX_DEPLOYMENTS {
                return Err(StoreError::LimitExceeded(format!(
                    "an enterprise has at most {MAX_DEPLOYMENTS} deployments"
                )));
            }
        }
        let ids: Vec<i64> = profiles.iter().filter_map(|p| db_id(p.0)).collect();
        sqlx::query(
            "INSERT INTO profile_deployments (enterprise_id, container, member, device_id, position, profile_id, updated_at) \
             SELECT $1, $2, $3, $4, (p.ord - 1)::int, p.id, $6 FROM unnest($5::bigint[]) WITH ORDINALITY AS p(id, ord)",
        )
        .bind(e)
        .bind(container)
        .bind(&member)
        .bind(device_id)
        .bind(&ids)
        .bind(at.0)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(Deployment { enterprise_id: enterprise, target, profiles, updated_at: at }))
    }

    async fn list_deployments(&self, enterprise: EnterpriseId) -> Result<Vec<Deployment>> {
        let Some(e) = db_id(enterprise.0) else { return Ok(Vec::new()) };
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT container, member, profile_id, updated_at FROM profile_deployments \
             WHERE enterprise_id = $1 ORDER BY container, member, position",
        )
        .bind(e)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut out: Vec<Deployment> = Vec::new();
        for (container, member, profile, updated_at) in rows {
            let Some(target) = DeploymentTarget::from_stored(&container, &member) else { continue };
            let profile = ProfileId(row_id(profile));
            match out.last_mut() {
                Some(last) if last.target == target => last.profiles.push(profile),
                _ => out.push(Deployment {
                    enterprise_id: enterprise,
                    target,
                    profiles: vec![profile],
                    updated_at: UnixMillis(updated_at),
                }),
            }
        }
        out.sort_by(|a, b| a.target.cmp(&b.target));
        Ok(out)
    }

    async fn provision_record(&self, device: DeviceId) -> Result<ProvisionRecord> {
        let Some(raw) = db_id(device.0) else { return Ok(ProvisionRecord::empty(device)) };
        let record: Option<String> = sqlx::query_scalar("SELECT record FROM provision_records WHERE device_id = $1")
            .bind(raw)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        match record {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| StoreError::Backend(format!("decoding the provisioning record of device {device}: {e}"))),
            None => Ok(ProvisionRecord::empty(device)),
        }
    }

    async fn save_provision_record(&self, record: ProvisionRecord) -> Result<()> {
        let Some(raw) = db_id(record.device_id.0) else { return Ok(()) };
        sqlx::query(
            "INSERT INTO provision_records (device_id, record) SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM devices WHERE id = $1) \
             ON CONFLICT (device_id) DO UPDATE SET record = excluded.record",
        )
        .bind(raw)
        .bind(encode("provisioning record", &record)?)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }
}
