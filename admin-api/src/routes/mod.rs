//! Route modules, one per resource, each exposing `router()`, and what they share: keyset
//! pagination and the JSON fallbacks for unknown routes and methods.

pub(crate) mod account;
pub(crate) mod alarms;
pub(crate) mod dashboard;
pub(crate) mod device_labels;
pub(crate) mod devices;
pub(crate) mod enterprises;
pub(crate) mod oplog;
pub(crate) mod ops;
pub(crate) mod strategies;
pub(crate) mod tenants;

use axum::routing::MethodRouter;
use fleetpulse_store::Page;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;

/// Every route of the API: the router is built from exactly this table, so tests can walk it
/// (the authorization matrix fails when a route is missing from it).
pub(crate) fn all() -> Vec<(&'static str, MethodRouter<AppState>)> {
    [
        ops::routes(),
        crate::auth::routes(),
        enterprises::routes(),
        devices::routes(),
        dashboard::routes(),
        device_labels::routes(),
        alarms::routes(),
        strategies::routes(),
        oplog::routes(),
        tenants::routes(),
        account::routes(),
        crate::openapi::routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Builds a [`Page`] from the `after` and `limit` query parameters: `limit` defaults to
/// `default` and must be within `1..=max`, else 400 `invalid_request`.
pub(crate) fn page(after: Option<u64>, limit: Option<u32>, default: u32, max: u32) -> Result<Page, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and {max}")));
    }
    Ok(Page { after: after.unwrap_or(0), limit })
}

/// The cursor of the next page: the last id if the page is full (there may be more), else none.
pub(crate) fn next_after<T>(items: &[T], page: Page, id: impl Fn(&T) -> u64) -> Option<u64> {
    let full = u32::try_from(items.len()).is_ok_and(|n| n >= page.limit);
    if full { items.last().map(id) } else { None }
}

/// The keys of a request body that no field took: for bodies that flatten a struct, where serde
/// cannot deny unknown fields itself (`#[serde(flatten)] unknown: Unknown`, then
/// [`refuse_unknown`]).
pub(crate) type Unknown = std::collections::BTreeMap<String, serde::de::IgnoredAny>;

/// 400 naming the first unknown key, if any.
pub(crate) fn refuse_unknown(unknown: &Unknown) -> Result<(), ApiError> {
    match unknown.keys().next() {
        Some(key) => Err(ApiError::invalid(format!("unknown field {key:?}"))),
        None => Ok(()),
    }
}

/// The query string of a searchable listing: `q` (a case-insensitive substring of the fields
/// the listing names) and the keyset page.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchQuery {
    /// Case-insensitive substring search.
    pub(crate) q: Option<String>,
    pub(crate) after: Option<u64>,
    pub(crate) limit: Option<u32>,
}

/// One page of a listing.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ListPage<T> {
    /// The rows, ordered by id.
    pub(crate) items: Vec<T>,
    /// Pass as `after` to get the next page; null when this page is the last.
    pub(crate) next_after: Option<u64>,
}

impl<T> ListPage<T> {
    /// A page of `items` fetched with `page`, ids given by `id`.
    pub(crate) fn new(items: Vec<T>, page: Page, id: impl Fn(&T) -> u64) -> ListPage<T> {
        let next_after = next_after(&items, page, id);
        ListPage { items, next_after }
    }
}

/// Fallback for paths no route matches: 404 `not_found`.
pub(crate) async fn unknown_route() -> ApiError {
    ApiError::NotFound("route")
}

/// Fallback for a known path with a method it does not serve: 405 `method_not_allowed`.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_default_bound_and_continue() {
        assert_eq!(page(None, None, 50, 1000).ok(), Some(Page { after: 0, limit: 50 }));
        assert_eq!(page(Some(7), Some(1000), 50, 1000).ok(), Some(Page { after: 7, limit: 1000 }));
        assert!(page(None, Some(0), 50, 1000).is_err());
        assert!(page(None, Some(1001), 50, 1000).is_err());
        let p = Page { after: 0, limit: 2 };
        assert_eq!(next_after(&[3u64, 5], p, |&x| x), Some(5));
        assert_eq!(next_after(&[3u64], p, |&x| x), None);
        assert_eq!(next_after::<u64>(&[], p, |&x| x), None);
    }
}
