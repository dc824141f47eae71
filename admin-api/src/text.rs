//! The one check of human-entered text (names, contacts, phones, descriptions) at the API edge:
//! trimmed, bounded in characters, no control characters; every field refused with the same
//! error shape (400 `invalid_request`, "`<field>` must have `<min>` to `<max>` characters and no
//! control characters").
//!
//! "Control characters" are Unicode's `Cc` (C0, DEL, C1: CR/LF among them, the header injection
//! of issue 19) and the invisible characters that reorder or break what a reader sees: the line
//! and paragraph separators (U+2028, U+2029) and the bidirectional embeddings, overrides and
//! isolates (U+202A..U+202E, U+2066..U+2069).

use crate::error::ApiError;

/// Names of tenants, strategies, tasks and labels.
pub(crate) const MAX_NAME_CHARS: usize = 128;

/// Whether a character may not appear in human-entered text.
pub(crate) fn is_forbidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `value` trimmed, if it has `min..=max` characters and none [`is_forbidden`].
fn check(field: &str, value: &str, min: usize, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    let chars = value.chars().count();
    if chars < min || chars > max || value.chars().any(is_forbidden) {
        return Err(ApiError::invalid(format!(
            "{field} must have {min} to {max} characters and no control characters"
        )));
    }
    Ok(value.to_owned())
}

/// A required name: trimmed, 1 to `max` characters, no control characters.
pub(crate) fn name(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    check(field, value, 1, max)
}

/// Free text that may be empty (contact, phone, country, description): trimmed, at most `max`
/// characters, no control characters.
pub(crate) fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    check(field, value, 0, max)
}

/// Like [`text`], for a field that is only checked when given.
pub(crate) fn optional(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    value.map(|v| text(field, &v, max)).transpose()
}

/// An email field that may be empty: trimmed, empty or an address the mailer can send to
/// ([`crate::email_address::normalize_email`]).
pub(crate) fn optional_email(field: &str, value: &str) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(String::new());
    }
    crate::email_address::normalize_email(value)
        .map_err(|_| ApiError::invalid(format!("{field} {value:?} is not an email address the mailer can send to")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_bounded_and_free_of_control_characters() {
        let cases: &[(&str, usize, Option<&str>)] = &[
            ("  Acme  ", 10, Some("Acme")),
            ("Ünïcödé 東京", 10, Some("Ünïcödé 東京")),
            ("0123456789", 10, Some("0123456789")),
            ("01234567890", 10, None),
            ("chan\r\nX-Injected: 1", 50, None),
            ("tab\there", 50, None),
            ("nul\0", 50, None),
            ("del\u{7f}", 50, None),
            ("c1\u{85}x", 50, None),
            ("line\u{2028}sep", 50, None),
            ("bidi \u{202E}evil", 50, None),
            ("isolate \u{2066}x", 50, None),
        ];
        for &(input, max, want) in cases {
            let got = text("contact", input, max);
            assert_eq!(got.as_deref().ok(), want, "{input:?}");
            if let Err(e) = got {
                assert_eq!(e.code(), "invalid_request");
                assert_eq!(e.to_string(), format!("contact must have 0 to {max} characters and no control characters"));
            }
        }
        assert!(name("name", "   ", 10).is_err(), "a name is required");
        assert_eq!(text("phone", "   ", 10).ok().as_deref(), Some(""));
        assert_eq!(optional("phone", None, 10).ok(), Some(None));
    }

    #[test]
    fn emails_are_empty_or_sendable() {
        assert_eq!(optional_email("email", "  ").ok().as_deref(), Some(""));
        assert_eq!(optional_email("email", " a@x.y ").ok().as_deref(), Some("a@x.y"));
        for bad in ["\"evil>\"@x.y", "a@x.y,evil@z.w", "bcc:evil@x.y", "x@y.z>", "ümlaut@x.y", "a@x.y\r\nBcc: e@z.w"] {
            let e = optional_email("email", bad).expect_err(bad);
            assert_eq!(e.code(), "invalid_request");
        }
    }
}
