//! The operation log's listing and CSV export (LOG-1): the platform every row, a tenant the rows
//! of the accounts it sees and of channels acting inside its enterprises. Rows are written by
//! the middleware of `operation_log.rs`; no route edits or deletes a row, and the stores refuse
//! updates and deletes of the table themselves.

use axum::extract::State;
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use fleetpulse_proto::{AccountId, EnterpriseId, UnixMillis};
use fleetpulse_store::{
    AccountFilter, MAX_ACCOUNT_FILTER, OperationLog, OperationLogFilter, OperationLogScope, OperationOutcome, Page,
};
use serde::Deserialize;

use crate::auth::AuthAdmin;
use crate::csv_export::CsvDownload;
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::policy::{self, AccountListing};
use crate::routes::listing::{ListPage, page};
use crate::state::AppState;

/// Default and largest page of the listing.
const LIST_DEFAULT: u32 = 100;
const LIST_MAX: u32 = 1000;
/// Most rows one CSV export carries.
const EXPORT_MAX_ROWS: usize = 100_000;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![("/api/v1/operation-logs", get(list)), ("/api/v1/operation-logs/export", get(export))]
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// At or after (unix ms).
    from: Option<i64>,
    /// Before (unix ms).
    to: Option<i64>,
    /// Operation type, e.g. `POST /api/v1/enterprises`.
    operation: Option<String>,
    account_id: Option<AccountId>,
    enterprise_id: Option<EnterpriseId>,
    after: Option<u64>,
    limit: Option<u32>,
}

/// The filter of a listing or export: the query's filters, within what the caller may see
/// (LOG-1 for tenants): the platform every row; a tenant the rows of the accounts it sees and
/// the rows made acting inside its enterprises ([`OperationLogScope`]).
async fn scoped_filter(ctx: &AppState, auth: &AuthAdmin, q: &ListQuery) -> Result<OperationLogFilter, ApiError> {
    auth.require(fleetpulse_store::Feature::OperationLog)?;
    let mut filter = filter(q)?;
    let (accounts, enterprises) = match policy::operation_log_listing(&auth.caller) {
        AccountListing::All => return Ok(filter),
        AccountListing::Enterprise(own) => {
            let accounts = AccountFilter { enterprises: Some(vec![own]), ..AccountFilter::default() };
            (accounts, vec![own])
        }
        AccountListing::Channels(channels) => {
            let enterprises = auth.visible_enterprises(ctx).await?.unwrap_or_default();
            let accounts = AccountFilter {
                channels: Some(channels),
                enterprises: Some(enterprises.clone()),
                ..AccountFilter::default()
            };
            (accounts, enterprises)
        }
    };
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let batch = ctx.api.store.entities.list_accounts(accounts.clone(), Page { after, limit: 1_000 }).await?;
        ids.extend(batch.iter().map(|a| a.id));
        if ids.len() > MAX_ACCOUNT_FILTER {
            return Err(ApiError::invalid(format!(
                "more than {MAX_ACCOUNT_FILTER} accounts are in scope: filter by account_id"
            )));
        }
        match batch.last() {
            Some(last) if batch.len() == 1_000 => after = last.id.0,
            _ => break,
        }
    }
    // Filters naming another tenant's account or enterprise are not found, like its objects.
    if filter.account_id.is_some_and(|a| !ids.contains(&a)) {
        return Err(ApiError::NotFound("account"));
    }
    if filter.enterprise.is_some_and(|e| !enterprises.contains(&e)) {
        return Err(ApiError::NotFound("enterprise"));
    }
    filter.within = Some(OperationLogScope { accounts: ids, enterprises });
    Ok(filter)
}

fn filter(q: &ListQuery) -> Result<OperationLogFilter, ApiError> {
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from >= to
    {
        return Err(ApiError::invalid("from must be before to"));
    }
    if q.operation.as_ref().is_some_and(|o| o.chars().count() > 200) {
        return Err(ApiError::invalid("operation is at most 200 characters"));
    }
    Ok(OperationLogFilter {
        from: q.from.map(UnixMillis),
        to: q.to.map(UnixMillis),
        operation: q.operation.clone(),
        account_id: q.account_id,
        enterprise: q.enterprise_id,
        within: None,
    })
}

/// `GET /api/v1/operation-logs?from=&to=&operation=&account_id=&enterprise_id=&after=&limit=`:
/// newest first; `next_after` continues with older rows.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListPage<OperationLog>>, ApiError> {
    let page = page(q.after, q.limit, LIST_DEFAULT, LIST_MAX)?;
    let filter = scoped_filter(&ctx, &auth, &q).await?;
    let items = ctx.api.store.entities.list_operation_logs(filter, page).await?;
    Ok(Json(ListPage::new(items, page, |r| r.id)))
}

/// `GET /api/v1/operation-logs/export?…` (the list's filters): `text/csv`, newest first, at most
/// 100,000 rows.
async fn export(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let filter = scoped_filter(&ctx, &auth, &q).await?;
    let mut csv = CsvDownload::new(&[
        "id",
        "time",
        "account_id",
        "account_email",
        "acting_as",
        "operation",
        "method",
        "path",
        "ip",
        "status",
        "result",
    ])?;
    let mut page = Page { after: crate::routes::listing::cursor(q.after)?, limit: LIST_MAX };
    let mut rows = 0;
    while rows < EXPORT_MAX_ROWS {
        let items = ctx.api.store.entities.list_operation_logs(filter.clone(), page).await?;
        for r in &items {
            csv.record(fields(r))?;
        }
        rows += items.len();
        match items.last() {
            Some(last) if items.len() == LIST_MAX as usize => page.after = last.id,
            _ => break,
        }
    }
    csv.into_response("operation-log.csv")
}

/// The export's fields of one row, in the header's order.
fn fields(row: &OperationLog) -> [String; 11] {
    let r = &row.entry;
    [
        row.id.to_string(),
        r.at.0.to_string(),
        r.account_id.map(|a| a.to_string()).unwrap_or_default(),
        r.account_email.clone(),
        r.acting_as.map(|e| e.to_string()).unwrap_or_default(),
        r.operation.clone(),
        r.method.clone(),
        r.path.clone(),
        r.ip.clone(),
        r.status.to_string(),
        match r.outcome {
            OperationOutcome::Success => "success".to_owned(),
            OperationOutcome::Failure => "failure".to_owned(),
        },
    ]
}
