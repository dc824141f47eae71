//! Login and receiver emails: trimmed and parsed by the mailer's own check
//! ([`fleetpulse_mailer::parse_receiver`], lettre's address type), so that the API stores no
//! address the mailer cannot send to.

use crate::error::ApiError;

/// Trims an email and checks it is a bare address the mailer can send to (ASCII, no display
/// name, no quoted local part, no list, at most 254 bytes).
pub(crate) fn normalize_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim();
    match fleetpulse_mailer::parse_receiver(email) {
        Ok(address) => Ok(address.to_string()),
        Err(_) => Err(ApiError::invalid(format!("{email:?} is not an email address"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_parsed_like_the_mailer_does() {
        assert_eq!(normalize_email("  a@b ").ok().as_deref(), Some("a@b"));
        for bad in [
            "",
            "ab",
            "@b",
            "a@",
            "a b@c",
            "a@b\n c",
            // Issue 19: accepted before, then dropped by the mailer as a permanent failure.
            "\"evil>\"@x.y",
            "a@x.y,evil@z.w",
            "bcc:evil@x.y",
            "x@y.z>",
            "ümlaut@x.y",
            "Evil <a@x.y>",
        ] {
            let e = normalize_email(bad).expect_err(bad);
            assert_eq!((e.code(), e.status().as_u16()), ("invalid_request", 400), "{bad:?}");
        }
        assert!(normalize_email(&format!("a@{}", "b".repeat(254))).is_err());
    }
}
