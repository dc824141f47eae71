//! Configuration profiles on SQLite ([`ProfileStore`]): settings as JSON, deployments one row per
//! (target, position), provisioning records as JSON.

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, ProfileId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{EmbeddedStore, is_unique_violation};
use crate::*;

const PROFILE_COLUMNS: &str = "id, enterprise_id, settings, created_at, updated_at";

fn profile_from_row(r: &Row<'_>) -> rusqlite::Result<StoredProfile> {
    let settings: String = r.get(2)?;
    Ok(StoredProfile {
        id: ProfileId(r.get(0)?),
        enterprise_id: EnterpriseId(r.get(1)?),
        settings: super::json_column(2, &settings, |t| serde_json::from_str(t))?,
        created_at: UnixMillis(r.get(3)?),
        updated_at: UnixMillis(r.get(4)?),
    })
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encoding {what}: {e}")))
}

fn read_profile(c: &Connection, id: ProfileId) -> Result<Option<StoredProfile>> {
    let Ok(raw) = i64::try_from(id.0) else { return Ok(None) };
    Ok(c.prepare_cached(&format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE id = ?1"))?
        .query_row([raw], profile_from_row)
        .optional()?)
}

/// The deployments listing a profile, as "global", "site 3", … (at most 10).
fn deployed_to(c: &Connection, id: i64) -> Result<Vec<String>> {
    let mut st = c.prepare_cached(
        "SELECT DISTINCT container, member FROM profile_deployments WHERE profile_id = ?1 ORDER BY container, member LIMIT 10",
    )?;
    let rows = st.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (container, member) = row?;
        if let Some(t) = DeploymentTarget::from_stored(&container, &member) {
            out.push(t.to_string());
        }
    }
    Ok(out)
}

#[async_trait]
impl ProfileStore for EmbeddedStore {
    async fn create_profile(
        &self,
        enterprise: EnterpriseId,
        settings: ProfileSettings,
        at: UnixMillis,
    ) -> Result<StoredProfile> {
        settings.validate()?;
        let json = encode("profile settings", &settings)?;
        self.write(1, move |c| {
            let count: i64 =
                c.prepare_cached("SELECT count(*) FROM profiles WHERE enterprise_id = ?1")?.query_row([enterprise.0], |r| r.get(0))?;
            if count as usize >= MAX_PROFILES {
                return Err(StoreError::LimitExceeded(format!("an enterprise has at most {MAX_PROFILES} profiles")));
            }
            let inserted = c
                .prepare_cached(
                    "INSERT INTO profiles (enterprise_id, name, settings, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                )?
                .execute(params![enterprise.0, settings.name, json, at.0]);
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists("profile name")),
                other => other?,
            };
            Ok(StoredProfile {
                id: ProfileId(c.last_insert_rowid() as u64),
                enterprise_id: enterprise,
                settings: settings.clone(),
                created_at: at,
                updated_at: at,
            })
        })
        .await
    }

    async fn profile(&self, id: ProfileId) -> Result<Option<StoredProfile>> {
        self.read(move |c| read_profile(c, id)).await
    }

    async fn list_profiles(&self, enterprise: EnterpriseId) -> Result<Vec<StoredProfile>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {PROFILE_COLUMNS} FROM profiles WHERE enterprise_id = ?1 ORDER BY name, id"
            ))?;
            let rows = st.query_map([enterprise.0], profile_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn update_profile(
        &self,
        id: ProfileId,
        settings: ProfileSettings,
        at: UnixMillis,
    ) -> Result<Option<StoredProfile>> {
        settings.validate()?;
        let Ok(raw) = i64::try_from(id.0) else { return Ok(None) };
        let json = encode("profile settings", &settings)?;
        self.write(1, move |c| {
            let updated = c
                .prepare_cached("UPDATE profiles SET name = ?2, settings = ?3, updated_at = ?4 WHERE id = ?1")?
                .execute(params![raw, settings.name, json, at.0]);
            match updated {
                Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists("profile name")),
                other => other?,
            };
            read_profile(c, id)
        })
        .await
    }

    async fn delete_profile(&self, id: ProfileId) -> Result<bool> {
        let Ok(raw) = i64::try_from(id.0) else { return Ok(false) };
        self.write(1, move |c| {
            let users = deployed_to(c, raw)?;
            if !users.is_empty() {
                return Err(StoreError::InvalidInput(format!(
                    "the profile is deployed to {}: remove it from those deployments first",
                    users.join(", ")
                )));
            }
            Ok(c.prepare_cached("DELETE FROM profiles WHERE id = ?1")?.execute([raw])? > 0)
        })
        .await
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
        let (container, member) = (target.container().as_str(), target.member_key());
        self.write(profiles.len() + 1, move |c| {
            for p in &profiles {
                let owner: Option<u64> = match i64::try_from(p.0) {
                    Ok(raw) => c
                        .prepare_cached("SELECT enterprise_id FROM profiles WHERE id = ?1")?
                        .query_row([raw], |r| r.get(0))
                        .optional()?,
                    Err(_) => None,
                };
                if owner != Some(enterprise.0) {
                    return Err(StoreError::InvalidInput(format!("no profile {p} in this enterprise")));
                }
            }
            let device_id = match &target {
                DeploymentTarget::Device { device_id } => {
                    let owner: Option<u64> = match i64::try_from(device_id.0) {
                        Ok(raw) => c
                            .prepare_cached("SELECT enterprise_id FROM devices WHERE id = ?1")?
                            .query_row([raw], |r| r.get(0))
                            .optional()?,
                        Err(_) => None,
                    };
                    if owner != Some(enterprise.0) {
                        return Err(StoreError::InvalidInput(format!("no device {device_id} in this enterprise")));
                    }
                    Some(device_id.0)
                }
                _ => None,
            };
            let existed = c
                .prepare_cached(
                    "DELETE FROM profile_deployments WHERE enterprise_id = ?1 AND container = ?2 AND member = ?3",
                )?
                .execute(params![enterprise.0, container, member])?
                > 0;
            if profiles.is_empty() {
                return Ok(None);
            }
            if !existed {
                let targets: i64 = c
                    .prepare_cached(
                        "SELECT count(*) FROM (SELECT DISTINCT container, member FROM profile_deployments WHERE enterprise_id = ?1)",
                    )?
                    .query_row([enterprise.0], |r| r.get(0))?;
                if targets as usize >= MAX_DEPLOYMENTS {
                    return Err(StoreError::LimitExceeded(format!(
                        "an enterprise has at most {MAX_DEPLOYMENTS} deployments"
                    )));
                }
            }
            let mut insert = c.prepare_cached(
                "INSERT INTO profile_deployments (enterprise_id, container, member, device_id, position, profile_id, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (i, p) in profiles.iter().enumerate() {
                insert.execute(params![enterprise.0, container, member, device_id, i as i64, p.0, at.0])?;
            }
            Ok(Some(Deployment { enterprise_id: enterprise, target: target.clone(), profiles: profiles.clone(), updated_at: at }))
        })
        .await
    }

    async fn list_deployments(&self, enterprise: EnterpriseId) -> Result<Vec<Deployment>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT container, member, profile_id, updated_at FROM profile_deployments \
                 WHERE enterprise_id = ?1 ORDER BY container, member, position",
            )?;
            let rows = st.query_map([enterprise.0], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, u64>(2)?, r.get::<_, i64>(3)?))
            })?;
            let mut out: Vec<Deployment> = Vec::new();
            for row in rows {
                let (container, member, profile, updated_at) = row?;
                let Some(target) = DeploymentTarget::from_stored(&container, &member) else { continue };
                match out.last_mut() {
                    Some(last) if last.target == target => last.profiles.push(ProfileId(profile)),
                    _ => out.push(Deployment {
                        enterprise_id: enterprise,
                        target,
                        profiles: vec![ProfileId(profile)],
                        updated_at: UnixMillis(updated_at),
                    }),
                }
            }
            out.sort_by(|a, b| a.target.cmp(&b.target));
            Ok(out)
        })
        .await
    }

    async fn provision_record(&self, device: DeviceId) -> Result<ProvisionRecord> {
        let Ok(raw) = i64::try_from(device.0) else { return Ok(ProvisionRecord::empty(device)) };
        self.read(move |c| {
            let record: Option<String> = c
                .prepare_cached("SELECT record FROM provision_records WHERE device_id = ?1")?
                .query_row([raw], |r| r.get(0))
                .optional()?;
            match record {
                Some(text) => serde_json::from_str(&text).map_err(|e| {
                    StoreError::Backend(format!("decoding the provisioning record of device {device}: {e}"))
                }),
                None => Ok(ProvisionRecord::empty(device)),
            }
        })
        .await
    }

    async fn save_provision_record(&self, record: ProvisionRecord) -> Result<()> {
        let Ok(raw) = i64::try_from(record.device_id.0) else { return Ok(()) };
        let json = encode("provisioning record", &record)?;
        self.write(1, move |c| {
            c.prepare_cached(
                "INSERT INTO provision_records (device_id, record) SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?1) \
                 ON CONFLICT (device_id) DO UPDATE SET record = excluded.record",
            )?
            .execute(params![raw, json])?;
            Ok(())
        })
        .await
    }
}
