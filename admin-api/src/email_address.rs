//! The shape of a login email: trimmed, something@something, no spaces, bounded length.

use crate::error::ApiError;

/// Longest accepted email (RFC 5321 path limit).
const MAX_EMAIL_CHARS: usize = 254;

/// Trims an email and checks its shape (something@something, no spaces, bounded length).
pub(crate) fn normalize_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim();
    let well_formed = email.chars().count() <= MAX_EMAIL_CHARS
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if well_formed {
        Ok(email.to_owned())
    } else {
        Err(ApiError::invalid(format!("{email:?} is not an email address")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_checked() {
        assert_eq!(normalize_email("  a@b ").ok().as_deref(), Some("a@b"));
        for bad in ["", "ab", "@b", "a@", "a b@c", "a@b\n c"] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_email(&format!("a@{}", "b".repeat(MAX_EMAIL_CHARS))).is_err());
    }
}
