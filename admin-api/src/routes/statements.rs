//! Statements (ORD-2): `/api/v1/statements` — the orders placed in a period (by order time),
//! searched by order id, enterprise and status, with the totals of every matching order (not
//! only the page), and their CSV export with a totals line. Scoped like the order list
//! (`routes/orders.rs`).

use axum::extract::State;
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use fleetpulse_proto::{EnterpriseId, OrderId};
use fleetpulse_store::{OrderFilter, OrderStatus, OrderTotals};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::csv_export::CsvDownload;
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::routes::listing::{ListPage, page};
use crate::routes::orders::{self, OrderView};
use crate::state::AppState;

/// Default page of a statement.
const LIST_DEFAULT: u32 = 100;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![("/api/v1/statements", get(show)), ("/api/v1/statements/export", get(export))]
}

/// `GET /api/v1/statements?from=&to=&order_id=&enterprise_id=&q=&status=`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatementQuery {
    /// Orders placed at or after (Unix ms).
    from: Option<i64>,
    /// Orders placed before (Unix ms).
    to: Option<i64>,
    /// One order.
    order_id: Option<OrderId>,
    /// One enterprise (an enterprise admin's own is implied).
    enterprise_id: Option<EnterpriseId>,
    /// Case-insensitive substring of the enterprise's name, emails or contact.
    q: Option<String>,
    /// The orders' status now.
    status: Option<OrderStatus>,
    after: Option<u64>,
    limit: Option<u32>,
}

/// A statement: one page of its orders and the totals of all of them.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Statement {
    #[serde(flatten)]
    page: ListPage<OrderView>,
    /// Every matching order counted, not only this page's; sums saturate at 2^64 - 1.
    totals: OrderTotals,
}

async fn filter_of(ctx: &AppState, auth: &AuthAdmin, q: &StatementQuery) -> Result<OrderFilter, ApiError> {
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from >= to
    {
        return Err(ApiError::invalid("from must be before to"));
    }
    orders::scoped_filter(ctx, auth, q.enterprise_id, q.order_id, q.q.clone(), q.status, (q.from, q.to), (None, None))
        .await
}

/// `GET /api/v1/statements`: newest first, with totals.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<StatementQuery>,
) -> Result<Json<Statement>, ApiError> {
    let page = page(q.after, q.limit, LIST_DEFAULT, orders::LIST_MAX)?;
    let filter = filter_of(&ctx, &auth, &q).await?;
    let entities = &ctx.api.store.entities;
    let items = entities.list_orders(&filter, page).await?;
    let totals = entities.order_totals(&filter).await?;
    let items = items.into_iter().map(|o| OrderView::at(o, filter.now)).collect();
    Ok(Json(Statement { page: ListPage::new(items, page, OrderView::id), totals }))
}

/// `GET /api/v1/statements/export`: the statement as CSV (the order columns), then a line
/// `totals` with the order count, devices, device-months and amount.
async fn export(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<StatementQuery>,
) -> Result<Response, ApiError> {
    let filter = filter_of(&ctx, &auth, &q).await?;
    let mut csv = CsvDownload::new(orders::CSV_HEADER)?;
    orders::write_csv(&ctx, &filter, q.after, &mut csv).await?;
    let t = ctx.api.store.entities.order_totals(&filter).await?;
    csv.record(totals_record(&t))?;
    csv.into_response("statement.csv")
}

/// The totals line of a statement export, in the order columns' places.
fn totals_record(t: &OrderTotals) -> Vec<String> {
    let mut record = vec![String::new(); orders::CSV_HEADER.len()];
    record[0] = "totals".into();
    record[1] = format!("{} orders", t.orders);
    record[6] = t.devices.to_string();
    record[7] = format!("{} device-months", t.device_months);
    record[11] = t.amount.to_string();
    record
}
