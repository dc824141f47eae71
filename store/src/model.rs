//! Types and helpers shared by several store domains: keyset pages, token hashes, bounds, and
//! the text checks and case-insensitive searches of listings. Backend-neutral: no SQL types
//! leak out.

use crate::{Result, StoreError};

/// Keyset pagination: rows with an id above `after`, at most `limit` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Exclusive lower bound of the id (0 for the first page).
    pub after: u64,
    /// Maximum number of rows.
    pub limit: u32,
}

impl Page {
    /// The first `limit` rows.
    pub fn first(limit: u32) -> Page {
        Page { after: 0, limit }
    }
}

/// SHA-256 of a bearer token: the store never holds tokens themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

/// Longest search text a listing accepts, in characters.
pub const MAX_SEARCH_CHARS: usize = 128;
/// [`StoreError::InvalidInput`] if `value` has more than `max` characters or a control character.
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.chars().count() > max {
        return Err(StoreError::InvalidInput(format!("{field} has more than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(StoreError::InvalidInput(format!("{field} holds a control character")));
    }
    Ok(())
}

/// The text a case-insensitive substring search looks in: the given fields, lower-cased
/// (full Unicode), joined by a newline (which no searched field and no search text holds).
pub(crate) fn search_text(fields: &[&str]) -> String {
    fields.iter().map(|f| f.to_lowercase()).collect::<Vec<_>>().join("\n")
}

/// A search as the store compares it: trimmed and lower-cased; `None` for an absent or blank
/// one. [`StoreError::InvalidInput`] for more than [`MAX_SEARCH_CHARS`] characters or a control
/// character.
pub(crate) fn search_needle(q: Option<&str>) -> Result<Option<String>> {
    let Some(q) = q.map(str::trim).filter(|q| !q.is_empty()) else { return Ok(None) };
    check_text("search", q, MAX_SEARCH_CHARS)?;
    Ok(Some(q.to_lowercase()))
}

/// [`StoreError::InvalidInput`] if `count` items exceed the bound `max` of `what`.
pub(crate) fn check_bound(what: &str, count: usize, max: usize) -> Result<()> {
    if count > max {
        return Err(StoreError::InvalidInput(format!("{count} {what} in one call (at most {max})")));
    }
    Ok(())
}

/// [`StoreError::InvalidInput`] unless the referenced row (`what` `id`, e.g. "channel 7") exists.
pub(crate) fn check_exists(what: &str, id: u64, exists: bool) -> Result<()> {
    if exists { Ok(()) } else { Err(StoreError::InvalidInput(format!("{what} {id} does not exist"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_fold_case_and_blank_ones_match_everything() {
        assert_eq!(search_needle(Some("  ÄcMe ")).ok().flatten().as_deref(), Some("äcme"));
        assert_eq!(search_needle(Some("   ")).ok().flatten(), None);
        assert!(search_needle(Some(&"x".repeat(MAX_SEARCH_CHARS + 1))).is_err());
        assert!(search_text(&["ÄCME Corp", "Boss@X"]).contains("äcme corp\nboss@x"));
    }
}
