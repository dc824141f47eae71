//! Orders (ORD-1): `/api/v1/orders` — place an order for an enterprise, list and search orders,
//! one order, cancel one before it takes effect, and the CSV export of a search.
//!
//! Who may do what is the policy's ([`Target::Sell`]): the platform sells to every enterprise,
//! a channel to the enterprises of its subtree it sees (a sub-account only with the `orders`
//! feature); an enterprise admin sees its own orders and places none. An order of an enterprise
//! the caller does not see answers 404. Placing and cancelling queue the order email
//! (`order_email.rs`); the operation log records both (middleware).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::{EnterpriseId, OrderId, UnixMillis};
use fleetpulse_store::{Feature, NewOrder, Order, OrderCancellation, OrderFilter, OrderStatus, Page};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::csv_export::CsvDownload;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::openapi::{Operation, get_, post_};
use crate::order_email::{self, OrderEvent};
use crate::policy::{self, Target};
use crate::routes::listing::{ListPage, cursor, page};
use crate::state::AppState;

/// Default page of the order list.
const LIST_DEFAULT: u32 = 50;
/// Largest page of the order list.
pub(crate) const LIST_MAX: u32 = fleetpulse_store::MAX_ORDER_PAGE;
/// Most rows one CSV export writes.
pub(crate) const EXPORT_MAX_ROWS: usize = 100_000;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/orders", get(list).post(create)),
        ("/api/v1/orders/export", get(export)),
        ("/api/v1/orders/{id}", get(show)),
        ("/api/v1/orders/{id}/cancel", post(cancel)),
    ]
}

/// The body of `POST /api/v1/orders`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOrder {
    /// The enterprise it is for (one the caller sells to).
    enterprise_id: EnterpriseId,
    /// The package's name, 1 to 64 characters.
    package: String,
    /// Devices it allows, 1 to 1,000,000.
    max_devices: u32,
    /// Months it lasts, 1 to 120.
    duration_months: u32,
    /// `YYYY-MM-DD` in the enterprise's time zone: today or up to 366 days ahead. The order
    /// starts at local midnight of that day.
    effective_date: String,
    /// Its amount in minor units (cents), at most 10^12; 0 when left out.
    #[serde(default)]
    amount: u64,
}

/// The search of `GET /api/v1/orders` and its export.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderQuery {
    /// One enterprise (an enterprise admin's own is implied).
    enterprise_id: Option<EnterpriseId>,
    /// One order.
    order_id: Option<OrderId>,
    /// Case-insensitive substring of the enterprise's name, emails or contact.
    q: Option<String>,
    /// The status now.
    status: Option<OrderStatus>,
    /// Placed at or after (Unix ms).
    created_from: Option<i64>,
    /// Placed before (Unix ms).
    created_to: Option<i64>,
    /// Expiring at or after (Unix ms).
    expires_from: Option<i64>,
    /// Expiring before (Unix ms).
    expires_to: Option<i64>,
    after: Option<u64>,
    limit: Option<u32>,
}

/// An order with its status now.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct OrderView {
    #[serde(flatten)]
    order: Order,
    /// Where it stands now.
    status: OrderStatus,
}

impl OrderView {
    /// The order as seen at `now`.
    pub(crate) fn at(order: Order, now: UnixMillis) -> OrderView {
        OrderView { status: order.status_at(now), order }
    }

    /// The order's id, the listings' cursor.
    pub(crate) fn id(&self) -> u64 {
        self.order.id.0
    }
}

/// `from` before `to` when both are given, else 400.
pub(crate) fn check_range(what: &str, from: Option<i64>, to: Option<i64>) -> Result<(), ApiError> {
    match (from, to) {
        (Some(from), Some(to)) if from >= to => Err(ApiError::invalid(format!("{what}_from must be before {what}_to"))),
        _ => Ok(()),
    }
}

/// The store filter of a search, narrowed to what the caller sees: the requested enterprise if
/// it sees it (else 404), else every enterprise it sees (the platform: no narrowing).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn scoped_filter(
    ctx: &AppState,
    auth: &AuthAdmin,
    enterprise: Option<EnterpriseId>,
    order_id: Option<OrderId>,
    q: Option<String>,
    status: Option<OrderStatus>,
    created: (Option<i64>, Option<i64>),
    expires: (Option<i64>, Option<i64>),
) -> Result<OrderFilter, ApiError> {
    auth.require(Feature::Orders)?;
    check_range("created", created.0, created.1)?;
    check_range("expires", expires.0, expires.1)?;
    let (one, many) = auth.listing_filter(ctx, enterprise).await?;
    let enterprises = match (one, many) {
        (Some(one), _) => Some(vec![one]),
        (None, many) => many,
    };
    Ok(OrderFilter {
        enterprises,
        order_id,
        q,
        status,
        now: ctx.clock.now(),
        created_from: created.0.map(UnixMillis),
        created_to: created.1.map(UnixMillis),
        expires_from: expires.0.map(UnixMillis),
        expires_to: expires.1.map(UnixMillis),
    })
}

async fn filter_of(ctx: &AppState, auth: &AuthAdmin, q: &OrderQuery) -> Result<OrderFilter, ApiError> {
    scoped_filter(
        ctx,
        auth,
        q.enterprise_id,
        q.order_id,
        q.q.clone(),
        q.status,
        (q.created_from, q.created_to),
        (q.expires_from, q.expires_to),
    )
    .await
}

/// The order if the caller sees its enterprise, else 404.
async fn find(ctx: &AppState, auth: &AuthAdmin, id: OrderId) -> Result<Order, ApiError> {
    match ctx.api.store.entities.order(id).await? {
        Some(order) if auth.can_see(ctx, order.enterprise_id).await? => Ok(order),
        _ => Err(ApiError::NotFound("order")),
    }
}

/// `POST /api/v1/orders`: 201 with the order. 400 for a bad field, an effective date before
/// today or more than 366 days ahead in the enterprise's time zone (or a zone no database
/// knows); 403 for enterprise scopes and sub-accounts without `orders`; 404 for an enterprise
/// the caller does not see; 429 at the enterprise's 10,000 orders.
async fn create(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(body): Json<CreateOrder>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    auth.require(Feature::Orders)?;
    auth.decide(&ctx, Target::Sell(body.enterprise_id)).await?;
    let entities = &ctx.api.store.entities;
    let enterprise = entities.enterprise(body.enterprise_id).await?.ok_or(ApiError::NotFound("enterprise"))?;
    let tz = crate::schedule::time_zone(&enterprise.profile.time_zone).map_err(ApiError::invalid)?;
    let now = ctx.clock.now();
    let terms = crate::order_terms::order_terms(&body.effective_date, body.duration_months.max(1), &tz, now)
        .map_err(ApiError::invalid)?;
    let new = NewOrder {
        enterprise_id: enterprise.id,
        seller_channel_id: policy::home_channel(&auth.caller),
        package: body.package.trim().to_owned(),
        max_devices: body.max_devices,
        duration_months: body.duration_months,
        effective_date: terms.effective_date,
        starts_at: terms.starts_at,
        ends_at: terms.ends_at,
        amount: body.amount,
        created_by: auth.account.id,
        created_at: now,
    };
    let order = entities.create_order(new).await?;
    order_email::queue(&ctx, &enterprise, &order, OrderEvent::Placed).await?;
    tracing::info!(message = "Order placed.", order = %order.id, enterprise = %enterprise.id);
    Ok((StatusCode::CREATED, Json(OrderView::at(order, now))))
}

/// `GET /api/v1/orders`: newest first.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<OrderQuery>,
) -> Result<Json<ListPage<OrderView>>, ApiError> {
    let page = page(q.after, q.limit, LIST_DEFAULT, LIST_MAX)?;
    let filter = filter_of(&ctx, &auth, &q).await?;
    let items = ctx.api.store.entities.list_orders(&filter, page).await?;
    let items = items.into_iter().map(|o| OrderView::at(o, filter.now)).collect();
    Ok(Json(ListPage::new(items, page, OrderView::id)))
}

/// `GET /api/v1/orders/{id}`.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<OrderId>,
) -> Result<Json<OrderView>, ApiError> {
    auth.require(Feature::Orders)?;
    let order = find(&ctx, &auth, id).await?;
    Ok(Json(OrderView::at(order, ctx.clock.now())))
}

/// `POST /api/v1/orders/{id}/cancel`: the cancelled order. 409 once it has taken effect (its
/// effective date has begun in the enterprise's zone) or when it was cancelled before.
async fn cancel(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<OrderId>,
) -> Result<Json<OrderView>, ApiError> {
    auth.require(Feature::Orders)?;
    let order = find(&ctx, &auth, id).await?;
    auth.decide(&ctx, Target::Sell(order.enterprise_id)).await?;
    let now = ctx.clock.now();
    let entities = &ctx.api.store.entities;
    match entities.cancel_order(id, auth.account.id, now).await? {
        None => Err(ApiError::NotFound("order")),
        Some(OrderCancellation::Cancelled(order)) => {
            if let Some(enterprise) = entities.enterprise(order.enterprise_id).await? {
                order_email::queue(&ctx, &enterprise, &order, OrderEvent::Cancelled).await?;
            }
            Ok(Json(OrderView::at(order, now)))
        }
        Some(OrderCancellation::AlreadyEffective(order)) => Err(ApiError::Conflict(format!(
            "order {} took effect on {}: an effective order cannot be cancelled",
            order.id, order.effective_date
        ))),
        Some(OrderCancellation::AlreadyCancelled(order)) => {
            Err(ApiError::Conflict(format!("order {} is already cancelled", order.id)))
        }
    }
}

/// The documented operations of orders and statements (ORD-1, ORD-2).
pub(crate) fn operations() -> Vec<Operation> {
    use crate::routes::statements::{Statement, StatementQuery};
    const ORDERS: &str = "orders and statements";
    vec![
        get_("/api/v1/orders", ORDERS, "Orders the caller sees, newest first, searched and filtered")
            .query::<OrderQuery>()
            .answers::<ListPage<OrderView>>(200),
        post_(
            "/api/v1/orders",
            ORDERS,
            "Place an order for an enterprise (effective at local midnight of its date in the enterprise's zone); emails the enterprise's master admin and its channel",
        )
        .body::<CreateOrder>()
        .answers::<OrderView>(201)
        .may_fail(&[429]),
        get_("/api/v1/orders/export", ORDERS, "The order search as CSV").query::<OrderQuery>().answers_raw(200, "text/csv"),
        get_("/api/v1/orders/{id}", ORDERS, "One order with its status now").answers::<OrderView>(200),
        post_("/api/v1/orders/{id}/cancel", ORDERS, "Cancel an order before it takes effect (409 once effective)")
            .answers::<OrderView>(200)
            .may_fail(&[409]),
        get_("/api/v1/statements", ORDERS, "A statement: orders placed in a period with the totals of all of them")
            .query::<StatementQuery>()
            .answers::<Statement>(200),
        get_("/api/v1/statements/export", ORDERS, "A statement as CSV, ending with a totals line")
            .query::<StatementQuery>()
            .answers_raw(200, "text/csv"),
    ]
}

/// The CSV columns of an order (the export and the statement export).
pub(crate) const CSV_HEADER: &[&str] = &[
    "order_id",
    "order_time",
    "enterprise_id",
    "enterprise",
    "seller_channel_id",
    "package",
    "max_devices",
    "duration_months",
    "effective_date",
    "starts_at",
    "ends_at",
    "amount",
    "status",
    "cancelled_at",
];

/// An order's CSV record at `now` (times in RFC 3339, UTC).
pub(crate) fn csv_record(o: &Order, now: UnixMillis) -> Vec<String> {
    let time =
        |t: UnixMillis| jiff::Timestamp::from_millisecond(t.0).map_or_else(|_| t.0.to_string(), |t| t.to_string());
    vec![
        o.id.to_string(),
        time(o.created_at),
        o.enterprise_id.to_string(),
        o.enterprise_name.clone(),
        o.seller_channel_id.map(|c| c.to_string()).unwrap_or_default(),
        o.package.clone(),
        o.max_devices.to_string(),
        o.duration_months.to_string(),
        o.effective_date.clone(),
        time(o.starts_at),
        time(o.ends_at),
        o.amount.to_string(),
        o.status_at(now).as_str().to_owned(),
        o.cancelled_at.map(time).unwrap_or_default(),
    ]
}

/// Writes every order of `filter` (from `after`, at most [`EXPORT_MAX_ROWS`]) into `csv`.
pub(crate) async fn write_csv(
    ctx: &AppState,
    filter: &OrderFilter,
    after: Option<u64>,
    csv: &mut CsvDownload,
) -> Result<(), ApiError> {
    let mut page = Page { after: cursor(after)?, limit: LIST_MAX };
    let mut rows = 0;
    while rows < EXPORT_MAX_ROWS {
        let items = ctx.api.store.entities.list_orders(filter, page).await?;
        for o in &items {
            csv.record(csv_record(o, filter.now))?;
        }
        rows += items.len();
        match items.last() {
            Some(last) if items.len() == LIST_MAX as usize => page.after = last.id.0,
            _ => break,
        }
    }
    Ok(())
}

/// `GET /api/v1/orders/export`: the search as CSV, newest first.
async fn export(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<OrderQuery>,
) -> Result<Response, ApiError> {
    let filter = filter_of(&ctx, &auth, &q).await?;
    let mut csv = CsvDownload::new(CSV_HEADER)?;
    write_csv(&ctx, &filter, q.after, &mut csv).await?;
    csv.into_response("orders.csv")
}
