//! What the listings share: keyset pagination (`after`, `limit`), the search query string and
//! the page they answer.

use fleetpulse_store::Page;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Builds a [`Page`] from the `after` and `limit` query parameters: `limit` defaults to
/// `default` and must be within `1..=max`, else 400 `invalid_request`.
pub(crate) fn page(after: Option<u64>, limit: Option<u32>, default: u32, max: u32) -> Result<Page, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and {max}")));
    }
    Ok(Page { after: cursor(after)?, limit })
}

/// The `after` cursor of a listing (0 if none): an id, so at most [`fleetpulse_proto::MAX_ID`],
/// else 400 `invalid_request` (the stores could not look it up).
pub(crate) fn cursor(after: Option<u64>) -> Result<u64, ApiError> {
    match after {
        Some(after) if after > fleetpulse_proto::MAX_ID => {
            Err(ApiError::invalid(format!("after must be at most {}", fleetpulse_proto::MAX_ID)))
        }
        after => Ok(after.unwrap_or(0)),
    }
}

/// The cursor of the next page: the last id if the page is full (there may be more), else none.
pub(crate) fn next_after<T>(items: &[T], page: Page, id: impl Fn(&T) -> u64) -> Option<u64> {
    let full = u32::try_from(items.len()).is_ok_and(|n| n >= page.limit);
    if full { items.last().map(id) } else { None }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_default_bound_and_continue() {
        assert_eq!(page(None, None, 50, 1000).ok(), Some(Page { after: 0, limit: 50 }));
        assert_eq!(page(Some(7), Some(1000), 50, 1000).ok(), Some(Page { after: 7, limit: 1000 }));
        assert!(page(None, Some(0), 50, 1000).is_err());
        assert!(page(None, Some(1001), 50, 1000).is_err());
        assert!(page(Some(fleetpulse_proto::MAX_ID), None, 50, 1000).is_ok());
        assert!(page(Some(fleetpulse_proto::MAX_ID + 1), None, 50, 1000).is_err());
        let p = Page { after: 0, limit: 2 };
        assert_eq!(next_after(&[3u64, 5], p, |&x| x), Some(5));
        assert_eq!(next_after(&[3u64], p, |&x| x), None);
        assert_eq!(next_after::<u64>(&[], p, |&x| x), None);
    }
}
