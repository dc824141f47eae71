//! Orders on the embedded store ([`OrderStore`]): rows in `orders`, read with their enterprise's
//! name; every filter is a bound parameter (NULL: not filtering), and a cancellation is one
//! conditional update.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId, OrderId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{EmbeddedStore, db_after, json_ids};
use crate::orders::status_code;
use crate::*;

/// The columns `order_from_row` reads, in its order (`o`: orders, `e`: enterprises).
const COLUMNS: &str = "o.id, o.enterprise_id, e.name, o.seller_channel_id, o.package, o.max_devices, \
     o.duration_months, o.effective_date, o.starts_at, o.ends_at, o.amount, o.created_by, o.created_at, \
     o.cancelled_at, o.cancelled_by";

/// The filter of [`OrderFilter`] over `o` and `e`, parameters ?1 to ?9: enterprises (JSON
/// ids), order id, search, status code, now, created from/to, expires from/to.
const FILTER: &str = "(?1 IS NULL OR o.enterprise_id IN (SELECT value FROM json_each(?1))) \
     AND (?2 IS NULL OR o.id = ?2) AND (?3 IS NULL OR instr(e.search_text, ?3) > 0) \
     AND (?4 IS NULL \
          OR (?4 = 0 AND o.cancelled_at IS NULL AND o.starts_at > ?5) \
          OR (?4 = 1 AND o.cancelled_at IS NULL AND o.starts_at <= ?5 AND o.ends_at > ?5) \
          OR (?4 = 2 AND o.cancelled_at IS NULL AND o.ends_at <= ?5) \
          OR (?4 = 3 AND o.cancelled_at IS NOT NULL)) \
     AND (?6 IS NULL OR o.created_at >= ?6) AND (?7 IS NULL OR o.created_at < ?7) \
     AND (?8 IS NULL OR o.ends_at >= ?8) AND (?9 IS NULL OR o.ends_at < ?9)";

fn order_from_row(r: &Row<'_>) -> rusqlite::Result<Order> {
    Ok(Order {
        id: OrderId(r.get(0)?),
        enterprise_id: EnterpriseId(r.get(1)?),
        enterprise_name: r.get(2)?,
        seller_channel_id: r.get::<_, Option<u64>>(3)?.map(ChannelId),
        package: r.get(4)?,
        max_devices: r.get(5)?,
        duration_months: r.get(6)?,
        effective_date: r.get(7)?,
        starts_at: UnixMillis(r.get(8)?),
        ends_at: UnixMillis(r.get(9)?),
        amount: r.get(10)?,
        created_by: AccountId(r.get(11)?),
        created_at: UnixMillis(r.get(12)?),
        cancelled_at: r.get::<_, Option<i64>>(13)?.map(UnixMillis),
        cancelled_by: r.get::<_, Option<u64>>(14)?.map(AccountId),
    })
}

fn read_order(c: &Connection, id: OrderId) -> Result<Option<Order>> {
    let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
    Ok(c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM orders o JOIN enterprises e ON e.id = o.enterprise_id WHERE o.id = ?1"
    ))?
    .query_row([id], order_from_row)
    .optional()?)
}

/// The orders of `enterprise` that are not cancelled (at most
/// [`MAX_ORDERS_PER_ENTERPRISE`]).
pub(super) fn live_orders(c: &Connection, enterprise: i64) -> Result<Vec<Order>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM orders o JOIN enterprises e ON e.id = o.enterprise_id \
         WHERE o.enterprise_id = ?1 AND o.cancelled_at IS NULL"
    ))?;
    let rows = st.query_map([enterprise], order_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The filter's nine parameters.
fn filter_params(f: &OrderFilter) -> Result<Vec<rusqlite::types::Value>> {
    use rusqlite::types::Value;
    f.validate()?;
    let enterprises = match &f.enterprises {
        Some(ids) => Value::Text(json_ids(ids.iter().map(|e| e.0))?),
        None => Value::Null,
    };
    let opt = |v: Option<i64>| v.map_or(Value::Null, Value::Integer);
    Ok(vec![
        enterprises,
        opt(f.order_id.map(|o| db_after(o.0))),
        f.needle()?.map_or(Value::Null, Value::Text),
        opt(status_code(f.status)),
        Value::Integer(f.now.0),
        opt(f.created_from.map(|t| t.0)),
        opt(f.created_to.map(|t| t.0)),
        opt(f.expires_from.map(|t| t.0)),
        opt(f.expires_to.map(|t| t.0)),
    ])
}

#[async_trait]
impl OrderStore for EmbeddedStore {
    async fn create_order(&self, new: NewOrder) -> Result<Order> {
        new.validate()?;
        let Ok(enterprise) = i64::try_from(new.enterprise_id.0) else {
            return Err(StoreError::InvalidInput(format!("enterprise {} does not exist", new.enterprise_id)));
        };
        self.write(1, move |c| {
            let held: Option<u64> = c
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM orders WHERE enterprise_id = ?1) FROM enterprises WHERE id = ?1",
                )?
                .query_row([enterprise], |r| r.get(0))
                .optional()?;
            let Some(held) = held else {
                return Err(StoreError::InvalidInput(format!("enterprise {} does not exist", new.enterprise_id)));
            };
            if held >= MAX_ORDERS_PER_ENTERPRISE {
                return Err(too_many_orders(new.enterprise_id));
            }
            if let Some(seller) = new.seller_channel_id
                && !super::row_exists(c, "channels", seller.0)?
            {
                return Err(StoreError::InvalidInput(format!("channel {seller} does not exist")));
            }
            c.prepare_cached(
                "INSERT INTO orders (enterprise_id, seller_channel_id, package, max_devices, duration_months, \
                 effective_date, starts_at, ends_at, amount, created_by, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                enterprise,
                new.seller_channel_id.map(|c| db_after(c.0)),
                new.package,
                new.max_devices,
                new.duration_months,
                new.effective_date,
                new.starts_at.0,
                new.ends_at.0,
                db_after(new.amount),
                db_after(new.created_by.0),
                new.created_at.0
            ])?;
            let id = OrderId(u64::try_from(c.last_insert_rowid()).unwrap_or_default());
            super::licences::rank(c, enterprise, new.created_at)?;
            read_order(c, id)?.ok_or_else(|| StoreError::Backend("the new order was not read back".into()))
        })
        .await
    }

    async fn order(&self, id: OrderId) -> Result<Option<Order>> {
        self.read(move |c| read_order(c, id)).await
    }

    async fn list_orders(&self, filter: &OrderFilter, page: Page) -> Result<Vec<Order>> {
        let mut values = filter_params(filter)?;
        let limit = page.limit.min(MAX_ORDER_PAGE);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let before = if page.after == 0 { i64::MAX } else { db_after(page.after) };
        values.push(rusqlite::types::Value::Integer(before));
        values.push(rusqlite::types::Value::Integer(i64::from(limit)));
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM orders o JOIN enterprises e ON e.id = o.enterprise_id \
                 WHERE {FILTER} AND o.id < ?10 ORDER BY o.id DESC LIMIT ?11"
            ))?;
            let rows = st.query_map(rusqlite::params_from_iter(values), order_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn order_totals(&self, filter: &OrderFilter) -> Result<OrderTotals> {
        let values = filter_params(filter)?;
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT count(*), sum(o.max_devices), sum(o.max_devices * o.duration_months), sum(o.amount) \
                 FROM orders o JOIN enterprises e ON e.id = o.enterprise_id WHERE {FILTER} GROUP BY o.enterprise_id"
            ))?;
            let rows = st.query_map(rusqlite::params_from_iter(values), |r| {
                let n = |i: usize| r.get::<_, Option<i64>>(i).map(|v| u64::try_from(v.unwrap_or(0)).unwrap_or(0));
                Ok([n(0)?, n(1)?, n(2)?, n(3)?])
            })?;
            Ok(OrderTotals::sum(rows.collect::<rusqlite::Result<Vec<_>>>()?))
        })
        .await
    }

    async fn cancel_order(&self, id: OrderId, by: AccountId, now: UnixMillis) -> Result<Option<OrderCancellation>> {
        let Ok(db) = i64::try_from(id.0) else { return Ok(None) };
        self.write(1, move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE orders SET cancelled_at = ?2, cancelled_by = ?3 \
                     WHERE id = ?1 AND cancelled_at IS NULL AND starts_at > ?2",
                )?
                .execute(params![db, now.0, db_after(by.0)])?;
            let Some(order) = read_order(c, id)? else { return Ok(None) };
            if changed == 1 {
                super::licences::rank(c, db_after(order.enterprise_id.0), now)?;
            }
            Ok(Some(if changed == 1 { OrderCancellation::Cancelled(order) } else { refused_cancellation(order) }))
        })
        .await
    }

    async fn allowance(&self, enterprise: EnterpriseId, now: UnixMillis) -> Result<u64> {
        let Ok(enterprise) = i64::try_from(enterprise.0) else { return Ok(0) };
        self.read(move |c| {
            let sum: i64 = c
                .prepare_cached(
                    "SELECT coalesce(sum(max_devices), 0) FROM orders WHERE enterprise_id = ?1 \
                     AND cancelled_at IS NULL AND starts_at <= ?2 AND ends_at > ?2",
                )?
                .query_row(params![enterprise, now.0], |r| r.get(0))?;
            Ok(u64::try_from(sum).unwrap_or_default())
        })
        .await
    }
}
