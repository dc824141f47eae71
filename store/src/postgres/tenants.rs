//! Channels and enterprises on PostgreSQL ([`TenantStore`]): recursive queries walk the channel
//! tree, searches look in a lower-cased `search_text` column.

use async_trait::async_trait;
use fleetpulse_proto::ids::ChannelId;
use fleetpulse_proto::{EnterpriseId, UnixMillis};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgEntityStore, backend, db_id, row_id, tenant_arrays, unique_as};
use crate::*;

fn enterprise_from_row(r: &PgRow) -> Result<Enterprise> {
    Ok(Enterprise {
        id: EnterpriseId(row_id(r.try_get("id").map_err(backend)?)),
        name: r.try_get("name").map_err(backend)?,
        credential: r.try_get("credential").map_err(backend)?,
        channel_id: r.try_get::<Option<i64>, _>("channel_id").map_err(backend)?.map(|c| ChannelId(row_id(c))),
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        profile: serde_json::from_str(&r.try_get::<String, _>("profile").map_err(backend)?)
            .map_err(|e| StoreError::Backend(format!("decoding an enterprise profile: {e}")))?,
        channel_authorization: {
            let a: String = r.try_get("channel_authorization").map_err(backend)?;
            ChannelAuthorization::parse(&a)
                .ok_or_else(|| StoreError::Backend(format!("unknown channel authorization {a:?}")))?
        },
    })
}

fn channel_from_row(r: &PgRow) -> Result<Channel> {
    Ok(Channel {
        id: ChannelId(row_id(r.try_get("id").map_err(backend)?)),
        name: r.try_get("name").map_err(backend)?,
        parent_id: r.try_get::<Option<i64>, _>("parent_id").map_err(backend)?.map(|p| ChannelId(row_id(p))),
        allow_sub_channels: r.try_get("allow_sub_channels").map_err(backend)?,
        device_management: r.try_get("device_management").map_err(backend)?,
        rps: r.try_get("rps").map_err(backend)?,
        contact: r.try_get("contact").map_err(backend)?,
        email: r.try_get("email").map_err(backend)?,
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        phone: r.try_get("phone").map_err(backend)?,
        country: r.try_get("country").map_err(backend)?,
    })
}

/// The columns `enterprise_from_row` reads.
macro_rules! enterprise_columns {
    () => {
        "id, name, credential, created_at, channel_id, profile, channel_authorization"
    };
}
/// The columns `channel_from_row` reads.
macro_rules! channel_columns {
    () => {
        "id, name, parent_id, allow_sub_channels, device_management, rps, contact, email, created_at, phone, country"
    };
}
const ENTERPRISE_BY_ID: &str = concat!("SELECT ", enterprise_columns!(), " FROM enterprises WHERE id = $1");
const ENTERPRISE_BY_CREDENTIAL: &str =
    concat!("SELECT ", enterprise_columns!(), " FROM enterprises WHERE credential = $1");
/// Every filter of [`TenantStore::search_enterprises`] is a parameter (NULL: not filtering).
const ENTERPRISE_SEARCH_PAGE: &str = concat!(
    "SELECT ",
    enterprise_columns!(),
    " FROM enterprises WHERE ($1::bigint[] IS NULL OR channel_id = ANY($1) OR id = ANY($2::bigint[])) \
     AND ($3::text IS NULL OR strpos(search_text, $3) > 0) AND id > $4 ORDER BY id LIMIT $5"
);
const UPDATE_ENTERPRISE: &str = concat!(
    "UPDATE enterprises SET name = $2, profile = $3, search_text = $4 WHERE id = $1 RETURNING ",
    enterprise_columns!()
);
const SET_CHANNEL_AUTHORIZATION: &str = concat!(
    "UPDATE enterprises SET channel_authorization = $2 WHERE id = $1 AND channel_authorization = ANY($3::text[]) \
     RETURNING ",
    enterprise_columns!()
);
const CHANNEL_BY_ID: &str = concat!("SELECT ", channel_columns!(), " FROM channels WHERE id = $1");
const CHANNEL_PAGE: &str = concat!(
    "SELECT ",
    channel_columns!(),
    " FROM channels WHERE id > $1 AND strpos(search_text, $3) > 0 ORDER BY id LIMIT $2"
);
const UPDATE_CHANNEL: &str = concat!(
    "UPDATE channels SET name = $2, allow_sub_channels = $3, device_management = $4, rps = $5, contact = $6, \
     email = $7, phone = $8, country = $9, search_text = $10 WHERE id = $1 RETURNING ",
    channel_columns!()
);
/// The strict descendants of channel `$1`, after the cursor.
const CHANNEL_DESCENDANTS_PAGE: &str = "WITH RECURSIVE sub(id) AS (\
     SELECT id FROM channels WHERE parent_id = $1 \
     UNION ALL SELECT c.id FROM channels c JOIN sub ON c.parent_id = sub.id) \
     SELECT id, name, parent_id, allow_sub_channels, device_management, rps, contact, email, created_at, phone, \
     country FROM channels WHERE id IN (SELECT id FROM sub) AND id > $2 AND strpos(search_text, $4) > 0 \
     ORDER BY id LIMIT $3";
/// Channel `$1` and its descendants, at most `$2` (no ORDER BY: the walk stops at the bound).
const CHANNEL_SUBTREE: &str = "WITH RECURSIVE sub(id) AS (\
     SELECT id FROM channels WHERE id = $1 \
     UNION ALL SELECT c.id FROM channels c JOIN sub ON c.parent_id = sub.id) \
     SELECT id FROM sub LIMIT $2";
const INSERT_CHANNEL: &str = "INSERT INTO channels \
     (name, parent_id, allow_sub_channels, device_management, rps, contact, email, created_at, phone, country, \
     search_text) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id";
#[async_trait]
impl TenantStore for PgEntityStore {
    async fn create_enterprise(&self, new: NewEnterprise) -> Result<Enterprise> {
        let now = UnixMillis::now();
        let channel = match new.channel_id {
            Some(c) => {
                check_exists("channel", c.0, self.channel_row_exists(c).await?)?;
                db_id(c.0)
            }
            None => None,
        };
        let missing = format!("channel {} does not exist", new.channel_id.map(|c| c.0).unwrap_or_default());
        new.profile.validate()?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO enterprises (name, credential, created_at, channel_id, profile, search_text) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&new.name)
        .bind(&new.credential)
        .bind(now.0)
        .bind(channel)
        .bind(encode_profile(&new.profile)?)
        .bind(enterprise_search_text(&new.name, &new.profile))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::InvalidInput(missing),
            _ => unique_as("credential")(e),
        })?;
        Ok(Enterprise {
            id: EnterpriseId(row_id(id)),
            name: new.name,
            credential: new.credential,
            channel_id: new.channel_id,
            created_at: now,
            profile: new.profile,
            channel_authorization: ChannelAuthorization::None,
        })
    }

    async fn update_enterprise(
        &self,
        id: EnterpriseId,
        name: String,
        profile: EnterpriseProfile,
    ) -> Result<Option<Enterprise>> {
        profile.validate()?;
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(UPDATE_ENTERPRISE)
            .bind(id)
            .bind(&name)
            .bind(encode_profile(&profile)?)
            .bind(enterprise_search_text(&name, &profile))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(enterprise_from_row)
            .transpose()
    }

    async fn set_channel_authorization(
        &self,
        id: EnterpriseId,
        from: &[ChannelAuthorization],
        to: ChannelAuthorization,
    ) -> Result<Option<Enterprise>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        let from: Vec<&'static str> = from.iter().map(|a| a.as_str()).collect();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row = sqlx::query(SET_CHANNEL_AUTHORIZATION)
            .bind(id)
            .bind(to.as_str())
            .bind(from)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        if to != ChannelAuthorization::Accepted {
            sqlx::query("DELETE FROM sessions WHERE acting_enterprise_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        enterprise_from_row(&row).map(Some)
    }

    async fn enterprise(&self, id: EnterpriseId) -> Result<Option<Enterprise>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(ENTERPRISE_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(enterprise_from_row)
            .transpose()
    }

    async fn enterprise_by_credential(&self, credential: &str) -> Result<Option<Enterprise>> {
        sqlx::query(ENTERPRISE_BY_CREDENTIAL)
            .bind(credential)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(enterprise_from_row)
            .transpose()
    }

    async fn search_enterprises(&self, filter: EnterpriseFilter, page: Page) -> Result<Vec<Enterprise>> {
        let Some(after) = db_id(page.after) else { return Ok(Vec::new()) };
        let (channels, ids) = tenant_arrays(filter.channels, filter.ids, MAX_ENTERPRISE_CHANNEL_FILTER)?.unzip();
        let q = search_needle(filter.q.as_deref())?;
        sqlx::query(ENTERPRISE_SEARCH_PAGE)
            .bind(channels)
            .bind(ids)
            .bind(q)
            .bind(after)
            .bind(i64::from(page.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(enterprise_from_row)
            .collect()
    }

    async fn create_channel(&self, new: NewChannel, now: UnixMillis) -> Result<Channel> {
        new.validate()?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let parent = match new.parent_id {
            Some(parent) => {
                // FOR SHARE: the parent row stays as read until the new channel commits.
                let allows: Option<bool> = match db_id(parent.0) {
                    Some(id) => sqlx::query_scalar("SELECT allow_sub_channels FROM channels WHERE id = $1 FOR SHARE")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(backend)?,
                    None => None,
                };
                check_parent_channel(parent, allows)?;
                db_id(parent.0)
            }
            None => None,
        };
        let id: i64 = sqlx::query_scalar(INSERT_CHANNEL)
            .bind(&new.name)
            .bind(parent)
            .bind(new.allow_sub_channels)
            .bind(new.device_management)
            .bind(new.rps)
            .bind(&new.contact)
            .bind(&new.email)
            .bind(now.0)
            .bind(&new.phone)
            .bind(&new.country)
            .bind(channel_search_text(&new.name, &new.contact, &new.email))
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Channel {
            id: ChannelId(row_id(id)),
            name: new.name,
            parent_id: new.parent_id,
            allow_sub_channels: new.allow_sub_channels,
            device_management: new.device_management,
            rps: new.rps,
            contact: new.contact,
            email: new.email,
            phone: new.phone,
            country: new.country,
            created_at: now,
        })
    }

    async fn channel(&self, id: ChannelId) -> Result<Option<Channel>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(CHANNEL_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(channel_from_row)
            .transpose()
    }

    async fn search_channels(&self, within: Option<ChannelId>, q: Option<&str>, page: Page) -> Result<Vec<Channel>> {
        let Some(after) = db_id(page.after) else { return Ok(Vec::new()) };
        // An empty needle is in every text.
        let q = search_needle(q)?.unwrap_or_default();
        let query = match within {
            None => sqlx::query(CHANNEL_PAGE).bind(after).bind(i64::from(page.limit)).bind(q),
            Some(root) => {
                let Some(root) = db_id(root.0) else { return Ok(Vec::new()) };
                sqlx::query(CHANNEL_DESCENDANTS_PAGE).bind(root).bind(after).bind(i64::from(page.limit)).bind(q)
            }
        };
        query.fetch_all(&self.pool).await.map_err(backend)?.iter().map(channel_from_row).collect()
    }

    async fn update_channel(&self, id: ChannelId, u: ChannelUpdate) -> Result<Option<Channel>> {
        u.validate()?;
        let Some(id) = db_id(id.0) else { return Ok(None) };
        let search = channel_search_text(&u.name, &u.contact, &u.email);
        sqlx::query(UPDATE_CHANNEL)
            .bind(id)
            .bind(u.name)
            .bind(u.allow_sub_channels)
            .bind(u.device_management)
            .bind(u.rps)
            .bind(u.contact)
            .bind(u.email)
            .bind(u.phone)
            .bind(u.country)
            .bind(search)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(channel_from_row)
            .transpose()
    }

    async fn channel_subtree(&self, root: ChannelId) -> Result<Vec<ChannelId>> {
        let Some(id) = db_id(root.0) else { return Ok(Vec::new()) };
        let ids: Vec<i64> = sqlx::query_scalar(CHANNEL_SUBTREE)
            .bind(id)
            .bind(MAX_CHANNEL_SUBTREE as i64 + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        bounded_subtree(root, ids.into_iter().map(|i| ChannelId(row_id(i))).collect())
    }
}
