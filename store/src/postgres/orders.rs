//! Orders on PostgreSQL ([`OrderStore`]): rows in `orders`, read with their enterprise's name;
//! an enterprise's orders are placed one at a time (its row locked), which keeps its order count
//! true until the insert commits; a cancellation is one conditional update.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId, OrderId, UnixMillis};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgEntityStore, backend, db_id, row_id};
use crate::orders::status_code;
use crate::*;

/// The columns `order_from_row` reads (`o`: orders, `e`: enterprises).
const COLUMNS: &str = "o.id, o.enterprise_id, e.name AS enterprise_name, o.seller_channel_id, o.package, \
     o.max_devices, o.duration_months, o.effective_date, o.starts_at, o.ends_at, o.amount, o.created_by, \
     o.created_at, o.cancelled_at, o.cancelled_by";

/// The filter of [`OrderFilter`] over `o` and `e`, parameters $1 to $9: enterprises, order id,
/// search, status code, now, created from/to, expires from/to.
const FILTER: &str = "($1::bigint[] IS NULL OR o.enterprise_id = ANY($1)) \
     AND ($2::bigint IS NULL OR o.id = $2) AND ($3::text IS NULL OR strpos(e.search_text, $3) > 0) \
     AND ($4::int IS NULL \
          OR ($4 = 0 AND o.cancelled_at IS NULL AND o.starts_at > $5) \
          OR ($4 = 1 AND o.cancelled_at IS NULL AND o.starts_at <= $5 AND o.ends_at > $5) \
          OR ($4 = 2 AND o.cancelled_at IS NULL AND o.ends_at <= $5) \
          OR ($4 = 3 AND o.cancelled_at IS NOT NULL)) \
     AND ($6::bigint IS NULL OR o.created_at >= $6) AND ($7::bigint IS NULL OR o.created_at < $7) \
     AND ($8::bigint IS NULL OR o.ends_at >= $8) AND ($9::bigint IS NULL OR o.ends_at < $9)";

fn order_from_row(r: &PgRow) -> Result<Order> {
    let small = |name: &str| -> Result<u32> {
        let v: i64 = r.try_get(name).map_err(backend)?;
        u32::try_from(v).map_err(|_| StoreError::Backend(format!("order {name} {v} out of range")))
    };
    Ok(Order {
        id: OrderId(row_id(r.try_get("id").map_err(backend)?)),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        enterprise_name: r.try_get("enterprise_name").map_err(backend)?,
        seller_channel_id: r
            .try_get::<Option<i64>, _>("seller_channel_id")
            .map_err(backend)?
            .map(|c| ChannelId(row_id(c))),
        package: r.try_get("package").map_err(backend)?,
        max_devices: small("max_devices")?,
        duration_months: small("duration_months")?,
        effective_date: r.try_get("effective_date").map_err(backend)?,
        starts_at: UnixMillis(r.try_get("starts_at").map_err(backend)?),
        ends_at: UnixMillis(r.try_get("ends_at").map_err(backend)?),
        amount: row_id(r.try_get("amount").map_err(backend)?),
        created_by: AccountId(row_id(r.try_get("created_by").map_err(backend)?)),
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        cancelled_at: r.try_get::<Option<i64>, _>("cancelled_at").map_err(backend)?.map(UnixMillis),
        cancelled_by: r.try_get::<Option<i64>, _>("cancelled_by").map_err(backend)?.map(|a| AccountId(row_id(a))),
    })
}

/// Binds the filter's nine parameters.
fn bind_filter<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    f: &OrderFilter,
    needle: Option<String>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let enterprises: Option<Vec<i64>> =
        f.enterprises.as_ref().map(|ids| ids.iter().filter_map(|e| db_id(e.0)).collect());
    q.bind(enterprises)
        .bind(f.order_id.map(|o| db_id(o.0).unwrap_or(-1)))
        .bind(needle)
        .bind(status_code(f.status).and_then(|c| i32::try_from(c).ok()))
        .bind(f.now.0)
        .bind(f.created_from.map(|t| t.0))
        .bind(f.created_to.map(|t| t.0))
        .bind(f.expires_from.map(|t| t.0))
        .bind(f.expires_to.map(|t| t.0))
}

/// The orders of `enterprise` that are not cancelled.
pub(super) async fn live_orders(c: &mut sqlx::PgConnection, enterprise: i64) -> Result<Vec<Order>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders o JOIN enterprises e ON e.id = o.enterprise_id \
         WHERE o.enterprise_id = $1 AND o.cancelled_at IS NULL"
    )))
    .bind(enterprise)
    .fetch_all(&mut *c)
    .await
    .map_err(backend)?
    .iter()
    .map(order_from_row)
    .collect()
}

impl PgEntityStore {
    async fn read_order(&self, id: OrderId) -> Result<Option<Order>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM orders o JOIN enterprises e ON e.id = o.enterprise_id WHERE o.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(order_from_row)
        .transpose()
    }
}

#[async_trait]
impl OrderStore for PgEntityStore {
    async fn create_order(&self, new: NewOrder) -> Result<Order> {
        new.validate()?;
        let unknown = || StoreError::InvalidInput(format!("enterprise {} does not exist", new.enterprise_id));
        let enterprise = db_id(new.enterprise_id.0).ok_or_else(unknown)?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM enterprises WHERE id = $1 FOR NO KEY UPDATE")
            .bind(enterprise)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if found.is_none() {
            return Err(unknown());
        }
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE enterprise_id = $1")
            .bind(enterprise)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if row_id(held) >= MAX_ORDERS_PER_ENTERPRISE {
            return Err(too_many_orders(new.enterprise_id));
        }
        let seller = match new.seller_channel_id {
            Some(seller) => {
                let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM channels WHERE id = $1")
                    .bind(db_id(seller.0).unwrap_or(-1))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
                Some(exists.ok_or_else(|| StoreError::InvalidInput(format!("channel {seller} does not exist")))?)
            }
            None => None,
        };
        let amount = i64::try_from(new.amount).map_err(|_| StoreError::InvalidInput("amount out of range".into()))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO orders (enterprise_id, seller_channel_id, package, max_devices, duration_months, \
             effective_date, starts_at, ends_at, amount, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(enterprise)
        .bind(seller)
        .bind(&new.package)
        .bind(i64::from(new.max_devices))
        .bind(i64::from(new.duration_months))
        .bind(&new.effective_date)
        .bind(new.starts_at.0)
        .bind(new.ends_at.0)
        .bind(amount)
        .bind(db_id(new.created_by.0).unwrap_or(i64::MAX))
        .bind(new.created_at.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        super::licences::rank(&mut tx, enterprise, new.created_at).await?;
        tx.commit().await.map_err(backend)?;
        self.read_order(OrderId(row_id(id)))
            .await?
            .ok_or_else(|| StoreError::Backend("the new order was not read back".into()))
    }

    async fn order(&self, id: OrderId) -> Result<Option<Order>> {
        self.read_order(id).await
    }

    async fn list_orders(&self, filter: &OrderFilter, page: Page) -> Result<Vec<Order>> {
        filter.validate()?;
        let needle = filter.needle()?;
        let limit = page.limit.min(MAX_ORDER_PAGE);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let before = if page.after == 0 { i64::MAX } else { db_id(page.after).unwrap_or(i64::MAX) };
        let sql = format!(
            "SELECT {COLUMNS} FROM orders o JOIN enterprises e ON e.id = o.enterprise_id \
             WHERE {FILTER} AND o.id < $10 ORDER BY o.id DESC LIMIT $11"
        );
        bind_filter(sqlx::query(sqlx::AssertSqlSafe(sql)), filter, needle)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(order_from_row)
            .collect()
    }

    async fn order_totals(&self, filter: &OrderFilter) -> Result<OrderTotals> {
        filter.validate()?;
        let needle = filter.needle()?;
        let sql = format!(
            "SELECT count(*)::bigint AS n, sum(o.max_devices)::bigint AS devices, \
             sum(o.max_devices * o.duration_months)::bigint AS device_months, sum(o.amount)::bigint AS amount \
             FROM orders o JOIN enterprises e ON e.id = o.enterprise_id WHERE {FILTER} GROUP BY o.enterprise_id"
        );
        let rows = bind_filter(sqlx::query(sqlx::AssertSqlSafe(sql)), filter, needle)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        let mut parts = Vec::with_capacity(rows.len());
        for r in &rows {
            let n = |name: &str| -> Result<u64> {
                Ok(row_id(r.try_get::<Option<i64>, _>(name).map_err(backend)?.unwrap_or(0)))
            };
            parts.push([n("n")?, n("devices")?, n("device_months")?, n("amount")?]);
        }
        Ok(OrderTotals::sum(parts))
    }

    async fn cancel_order(&self, id: OrderId, by: AccountId, now: UnixMillis) -> Result<Option<OrderCancellation>> {
        let Some(db) = db_id(id.0) else { return Ok(None) };
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let cancelled: Option<i64> = sqlx::query_scalar(
            "UPDATE orders SET cancelled_at = $2, cancelled_by = $3 \
             WHERE id = $1 AND cancelled_at IS NULL AND starts_at > $2 RETURNING enterprise_id",
        )
        .bind(db)
        .bind(now.0)
        .bind(db_id(by.0).unwrap_or(i64::MAX))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        if let Some(enterprise) = cancelled {
            sqlx::query("SELECT id FROM enterprises WHERE id = $1 FOR NO KEY UPDATE")
                .bind(enterprise)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            super::licences::rank(&mut tx, enterprise, now).await?;
        }
        tx.commit().await.map_err(backend)?;
        let Some(order) = self.read_order(id).await? else { return Ok(None) };
        Ok(Some(if cancelled.is_some() { OrderCancellation::Cancelled(order) } else { refused_cancellation(order) }))
    }

    async fn allowance(&self, enterprise: EnterpriseId, now: UnixMillis) -> Result<u64> {
        let Some(enterprise) = db_id(enterprise.0) else { return Ok(0) };
        let sum: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(max_devices), 0)::bigint FROM orders WHERE enterprise_id = $1 \
             AND cancelled_at IS NULL AND starts_at <= $2 AND ends_at > $2",
        )
        .bind(enterprise)
        .bind(now.0)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(row_id(sum))
    }
}
