//! Channels and enterprises on SQLite ([`TenantStore`]): the channel tree is walked with
//! recursive queries, searches look in a lower-cased `search_text` column.

use async_trait::async_trait;
use fleetpulse_proto::ids::ChannelId;
use fleetpulse_proto::{EnterpriseId, UnixMillis};
use rusqlite::{OptionalExtension, Row, params};

use super::{
    EmbeddedStore, SqlValue, backend, db_after, is_unique_violation, json_column, push_tenant_term, row_exists,
};
use crate::*;

/// The columns `enterprise_from_row` reads, in its order.
const ENTERPRISE_COLUMNS: &str = "id, name, credential, created_at, channel_id, profile, channel_authorization";

fn enterprise_from_row(r: &Row<'_>) -> rusqlite::Result<Enterprise> {
    Ok(Enterprise {
        id: EnterpriseId(r.get(0)?),
        name: r.get(1)?,
        credential: r.get(2)?,
        created_at: UnixMillis(r.get(3)?),
        channel_id: r.get::<_, Option<u64>>(4)?.map(ChannelId),
        profile: json_column(5, &r.get::<_, String>(5)?, |t| serde_json::from_str(t))?,
        channel_authorization: {
            let a: String = r.get(6)?;
            ChannelAuthorization::parse(&a).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    6,
                    rusqlite::types::Type::Text,
                    format!("unknown channel authorization {a:?}").into(),
                )
            })?
        },
    })
}

/// The columns `channel_from_row` reads, in its order.
const CHANNEL_COLUMNS: &str =
    "id, name, parent_id, allow_sub_channels, device_management, rps, contact, email, created_at, phone, country";

fn channel_from_row(r: &Row<'_>) -> rusqlite::Result<Channel> {
    Ok(Channel {
        id: ChannelId(r.get(0)?),
        name: r.get(1)?,
        parent_id: r.get::<_, Option<u64>>(2)?.map(ChannelId),
        allow_sub_channels: r.get(3)?,
        device_management: r.get(4)?,
        rps: r.get(5)?,
        contact: r.get(6)?,
        email: r.get(7)?,
        created_at: UnixMillis(r.get(8)?),
        phone: r.get(9)?,
        country: r.get(10)?,
    })
}

#[async_trait]
impl TenantStore for EmbeddedStore {
    async fn create_enterprise(&self, new: NewEnterprise) -> Result<Enterprise> {
        new.profile.validate()?;
        let now = UnixMillis::now();
        let profile = encode_profile(&new.profile)?;
        let search = enterprise_search_text(&new.name, &new.profile);
        self.write(1, move |c| {
            if let Some(channel) = new.channel_id {
                check_exists("channel", channel.0, row_exists(c, "channels", channel.0)?)?;
            }
            c.prepare_cached(
                "INSERT INTO enterprises (name, credential, created_at, channel_id, profile, search_text) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![new.name, new.credential, now.0, new.channel_id.map(|ch| ch.0), profile, search])
            .map_err(|e| if is_unique_violation(&e) { StoreError::AlreadyExists("credential") } else { backend(e) })?;
            Ok(Enterprise {
                id: EnterpriseId(c.last_insert_rowid() as u64),
                name: new.name.clone(),
                credential: new.credential.clone(),
                channel_id: new.channel_id,
                created_at: now,
                profile: new.profile.clone(),
                channel_authorization: ChannelAuthorization::None,
            })
        })
        .await
    }

    async fn update_enterprise(
        &self,
        id: EnterpriseId,
        name: String,
        profile: EnterpriseProfile,
    ) -> Result<Option<Enterprise>> {
        profile.validate()?;
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        let search = enterprise_search_text(&name, &profile);
        let encoded = encode_profile(&profile)?;
        self.write(1, move |c| {
            c.prepare_cached("UPDATE enterprises SET name = ?2, profile = ?3, search_text = ?4 WHERE id = ?1")?
                .execute(params![id, name, encoded, search])?;
            Ok(c.prepare_cached(&format!("SELECT {ENTERPRISE_COLUMNS} FROM enterprises WHERE id = ?1"))?
                .query_row([id], enterprise_from_row)
                .optional()?)
        })
        .await
    }

    async fn set_channel_authorization(
        &self,
        id: EnterpriseId,
        from: &[ChannelAuthorization],
        to: ChannelAuthorization,
    ) -> Result<Option<Enterprise>> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        let from: Vec<&'static str> = from.iter().map(|a| a.as_str()).collect();
        let from = serde_json::to_string(&from).map_err(|e| StoreError::Backend(format!("encoding states: {e}")))?;
        self.write(1, move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE enterprises SET channel_authorization = ?2 \
                     WHERE id = ?1 AND channel_authorization IN (SELECT value FROM json_each(?3))",
                )?
                .execute(params![id, to.as_str(), from])?
                > 0;
            if !changed {
                return Ok(None);
            }
            if to != ChannelAuthorization::Accepted {
                c.prepare_cached("DELETE FROM sessions WHERE acting_enterprise_id = ?1")?.execute([id])?;
            }
            Ok(c.prepare_cached(&format!("SELECT {ENTERPRISE_COLUMNS} FROM enterprises WHERE id = ?1"))?
                .query_row([id], enterprise_from_row)
                .optional()?)
        })
        .await
    }

    async fn enterprise(&self, id: EnterpriseId) -> Result<Option<Enterprise>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {ENTERPRISE_COLUMNS} FROM enterprises WHERE id = ?1"))?
                .query_row([id.0], enterprise_from_row)
                .optional()?)
        })
        .await
    }

    async fn enterprise_by_credential(&self, credential: &str) -> Result<Option<Enterprise>> {
        let credential = credential.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {ENTERPRISE_COLUMNS} FROM enterprises WHERE credential = ?1"))?
                .query_row([credential], enterprise_from_row)
                .optional()?)
        })
        .await
    }

    async fn search_enterprises(&self, filter: EnterpriseFilter, page: Page) -> Result<Vec<Enterprise>> {
        let mut terms: Vec<String> = Vec::new();
        let mut values: Vec<SqlValue> = Vec::new();
        let tenants = (filter.channels.as_deref(), filter.ids.as_deref());
        push_tenant_term(&mut terms, &mut values, "id", tenants, MAX_ENTERPRISE_CHANNEL_FILTER)?;
        if let Some(q) = search_needle(filter.q.as_deref())? {
            terms.push("instr(search_text, ?) > 0".into());
            values.push(Box::new(q));
        }
        terms.push("id > ?".into());
        values.push(Box::new(db_after(page.after)));
        values.push(Box::new(page.limit));
        let sql =
            format!("SELECT {ENTERPRISE_COLUMNS} FROM enterprises WHERE {} ORDER BY id LIMIT ?", terms.join(" AND "));
        self.read(move |c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(values.iter()), enterprise_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn create_channel(&self, new: NewChannel, now: UnixMillis) -> Result<Channel> {
        new.validate()?;
        self.write(1, move |c| {
            if let Some(parent) = new.parent_id {
                let allows: Option<bool> = match i64::try_from(parent.0) {
                    Ok(id) => c
                        .prepare_cached("SELECT allow_sub_channels FROM channels WHERE id = ?1")?
                        .query_row([id], |r| r.get(0))
                        .optional()?,
                    Err(_) => None,
                };
                check_parent_channel(parent, allows)?;
            }
            c.prepare_cached(
                "INSERT INTO channels \
                 (name, parent_id, allow_sub_channels, device_management, rps, contact, email, created_at, \
                 phone, country, search_text) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                new.name,
                new.parent_id.map(|p| p.0),
                new.allow_sub_channels,
                new.device_management,
                new.rps,
                new.contact,
                new.email,
                now.0,
                new.phone,
                new.country,
                channel_search_text(&new.name, &new.contact, &new.email),
            ])?;
            Ok(Channel {
                id: ChannelId(c.last_insert_rowid() as u64),
                name: new.name.clone(),
                parent_id: new.parent_id,
                allow_sub_channels: new.allow_sub_channels,
                device_management: new.device_management,
                rps: new.rps,
                contact: new.contact.clone(),
                email: new.email.clone(),
                phone: new.phone.clone(),
                country: new.country.clone(),
                created_at: now,
            })
        })
        .await
    }

    async fn channel(&self, id: ChannelId) -> Result<Option<Channel>> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = ?1"))?
                .query_row([id], channel_from_row)
                .optional()?)
        })
        .await
    }

    async fn search_channels(&self, within: Option<ChannelId>, q: Option<&str>, page: Page) -> Result<Vec<Channel>> {
        let after = db_after(page.after);
        let within = match within.map(|w| i64::try_from(w.0)) {
            None => None,
            Some(Ok(w)) => Some(w),
            Some(Err(_)) => return Ok(Vec::new()),
        };
        // An empty needle is in every text.
        let q = search_needle(q)?.unwrap_or_default();
        self.read(move |c| {
            let rows = match within {
                None => c
                    .prepare_cached(&format!(
                        "SELECT {CHANNEL_COLUMNS} FROM channels WHERE id > ?1 AND instr(search_text, ?3) > 0 \
                         ORDER BY id LIMIT ?2"
                    ))?
                    .query_map(params![after, page.limit, q], channel_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
                Some(root) => c
                    .prepare_cached(&format!(
                        "WITH RECURSIVE sub(id) AS (\
                         SELECT id FROM channels WHERE parent_id = ?1 \
                         UNION ALL SELECT c.id FROM channels c JOIN sub ON c.parent_id = sub.id) \
                         SELECT {CHANNEL_COLUMNS} FROM channels \
                         WHERE id IN (SELECT id FROM sub) AND id > ?2 AND instr(search_text, ?4) > 0 \
                         ORDER BY id LIMIT ?3"
                    ))?
                    .query_map(params![root, after, page.limit, q], channel_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            };
            Ok(rows)
        })
        .await
    }

    async fn update_channel(&self, id: ChannelId, u: ChannelUpdate) -> Result<Option<Channel>> {
        u.validate()?;
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        self.write(1, move |c| {
            c.prepare_cached(
                "UPDATE channels SET name = ?2, allow_sub_channels = ?3, device_management = ?4, rps = ?5, \
                 contact = ?6, email = ?7, phone = ?8, country = ?9, search_text = ?10 WHERE id = ?1",
            )?
            .execute(params![
                id,
                u.name,
                u.allow_sub_channels,
                u.device_management,
                u.rps,
                u.contact,
                u.email,
                u.phone,
                u.country,
                channel_search_text(&u.name, &u.contact, &u.email),
            ])?;
            Ok(c.prepare_cached(&format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = ?1"))?
                .query_row([id], channel_from_row)
                .optional()?)
        })
        .await
    }

    async fn channel_subtree(&self, root: ChannelId) -> Result<Vec<ChannelId>> {
        let Ok(id) = i64::try_from(root.0) else { return Ok(Vec::new()) };
        let ids = self
            .read(move |c| {
                // No ORDER BY: the walk stops after the bound instead of visiting the whole tree.
                let mut st = c.prepare_cached(
                    "WITH RECURSIVE sub(id) AS (\
                     SELECT id FROM channels WHERE id = ?1 \
                     UNION ALL SELECT c.id FROM channels c JOIN sub ON c.parent_id = sub.id) \
                     SELECT id FROM sub LIMIT ?2",
                )?;
                let rows =
                    st.query_map(params![id, MAX_CHANNEL_SUBTREE as i64 + 1], |r| r.get::<_, u64>(0).map(ChannelId))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        bounded_subtree(root, ids)
    }
}
