//! The request's session token: a bearer token, or (browser sessions, ACC-1) the token in an
//! `HttpOnly` cookie, with CSRF protection.
//!
//! A login with `"cookie": true` answers with `Set-Cookie: fp_session=<token>; HttpOnly; Secure;
//! SameSite=Strict; Path=/api; Max-Age=<session ttl>` and, instead of the token, a `csrf_token`
//! in the body. The CSRF token is derived from the session token (SHA-256 with a domain
//! separator), so nothing more is stored and it dies with the session. The [`AuthAdmin`]
//! extractor takes the cookie when there is no `Authorization` header; a cookie-authenticated
//! POST, PUT, PATCH or DELETE must carry `X-CSRF-Token` equal to the session's CSRF token
//! (compared in constant time), else 403 `csrf_failed`. Bearer requests need no CSRF token: a
//! browser never adds an `Authorization` header by itself.
//!
//! [`AuthAdmin`]: crate::auth::AuthAdmin

use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::secrets;

/// Name of the session cookie.
pub(crate) const SESSION_COOKIE: &str = "fp_session";
/// Header carrying the CSRF token on state-changing cookie requests.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// Longest cookie value considered (a session token is 64 hex digits).
const MAX_TOKEN_CHARS: usize = 128;

/// Where the request's session token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// The `fp_session` cookie (needs CSRF protection).
    Cookie,
}

/// The session token of a request: the bearer token if there is an `Authorization` header,
/// else the `fp_session` cookie.
pub(crate) fn request_token(headers: &HeaderMap) -> Option<(&str, TokenSource)> {
    if headers.contains_key(header::AUTHORIZATION) {
        return bearer_token(headers).map(|t| (t, TokenSource::Bearer));
    }
    cookie_token(headers).map(|t| (t, TokenSource::Cookie))
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The value of the `fp_session` cookie, from any `Cookie` header (parsed by the `cookie`
/// crate: RFC 6265 pairs, whitespace and a quoted value handled; pairs it cannot parse skipped).
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE)
        .and_then(|c| c.value_raw())
        .map(|v| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v))
        .filter(|v| !v.is_empty() && v.len() <= MAX_TOKEN_CHARS)
}

/// The CSRF token of a session: hex SHA-256 of a domain separator and the session token.
pub(crate) fn csrf_token(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"fleetpulse/csrf/v1\0");
    h.update(session_token.as_bytes());
    secrets::hex(&h.finalize())
}

/// Whether the method changes state (and so needs the CSRF token on cookie requests).
fn changes_state(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

/// 403 `csrf_failed` unless a state-changing request authenticated by cookie carries the
/// session's CSRF token in `X-CSRF-Token`. Bearer requests and reads always pass.
pub(crate) fn check_csrf(
    method: &Method,
    headers: &HeaderMap,
    token: &str,
    source: TokenSource,
) -> Result<(), ApiError> {
    if source == TokenSource::Bearer || !changes_state(method) {
        return Ok(());
    }
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if secrets::constant_time_eq(sent.trim().as_bytes(), csrf_token(token).as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::CsrfFailed)
    }
}

/// The session cookie with its attributes: sent only over HTTPS, to the API, never to scripts
/// nor with requests from other sites; alive for `max_age_s` seconds (0: remove it).
fn session_cookie(token: &str, max_age_s: u64) -> Cookie<'_> {
    Cookie::build((SESSION_COOKIE, token))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .path("/api")
        .max_age(cookie::time::Duration::seconds(i64::try_from(max_age_s).unwrap_or(i64::MAX)))
        .build()
}

/// `Set-Cookie` value of `cookie`.
fn set_cookie(cookie: &Cookie<'_>) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&cookie.to_string()).map_err(|e| ApiError::Internal(format!("session cookie: {e}")))
}

/// `Set-Cookie` value ending the browser session.
pub(crate) fn cleared_cookie() -> Result<HeaderValue, ApiError> {
    set_cookie(&session_cookie("", 0))
}

/// The answer of a successful login (or code verification, or password change): the session
/// as JSON for bearer clients; for cookie clients (`cookie`), the same JSON with the token
/// replaced by `csrf_token`, and the token in the session cookie, valid for `max_age_s`.
pub(crate) fn session_response<T: serde::Serialize>(
    body: &T,
    token: &str,
    cookie: bool,
    max_age_s: u64,
) -> Result<Response, ApiError> {
    let mut json = serde_json::to_value(body).map_err(|e| ApiError::Internal(format!("login answer: {e}")))?;
    if !cookie {
        return Ok(axum::Json(json).into_response());
    }
    if let Some(fields) = json.as_object_mut() {
        fields.remove("token");
        fields.insert("csrf_token".into(), csrf_token(token).into());
    }
    let mut response = axum::Json(json).into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(&session_cookie(token, max_age_s))?);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_read_when_there_is_no_authorization_header() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "theme=dark; fp_session=abc123 ; other=1".parse().expect("value"));
        assert_eq!(request_token(&h), Some(("abc123", TokenSource::Cookie)));
        h.insert(header::AUTHORIZATION, "Bearer xyz".parse().expect("value"));
        assert_eq!(request_token(&h), Some(("xyz", TokenSource::Bearer)));
        h.insert(header::AUTHORIZATION, "Basic xyz".parse().expect("value"));
        assert_eq!(request_token(&h), None, "a malformed Authorization header is not overridden by a cookie");
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "fp_session=".parse().expect("value"));
        assert_eq!(request_token(&h), None);
        h.insert(header::COOKIE, "broken; fp_session=\"q123\"".parse().expect("value"));
        assert_eq!(request_token(&h), Some(("q123", TokenSource::Cookie)), "a quoted value is unquoted");
        h.insert(header::COOKIE, format!("fp_session={}", "a".repeat(129)).parse().expect("value"));
        assert_eq!(request_token(&h), None, "an overlong value is not a token");
    }

    #[test]
    fn csrf_is_checked_on_state_changing_cookie_requests_only() {
        let token = "a".repeat(64);
        let mut h = HeaderMap::new();
        assert!(check_csrf(&Method::GET, &h, &token, TokenSource::Cookie).is_ok());
        assert!(check_csrf(&Method::POST, &h, &token, TokenSource::Bearer).is_ok());
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(matches!(check_csrf(&m, &h, &token, TokenSource::Cookie), Err(ApiError::CsrfFailed)));
        }
        h.insert(CSRF_HEADER, csrf_token(&"b".repeat(64)).parse().expect("value"));
        assert!(check_csrf(&Method::POST, &h, &token, TokenSource::Cookie).is_err(), "another session's token");
        h.insert(CSRF_HEADER, csrf_token(&token).parse().expect("value"));
        assert!(check_csrf(&Method::POST, &h, &token, TokenSource::Cookie).is_ok());
        assert_ne!(csrf_token(&token), token, "the CSRF token is not the session token");
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("header value"));
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().expect("header value"));
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header value"));
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().expect("header value"));
        assert_eq!(bearer_token(&h), None);
    }

    #[test]
    fn the_session_cookie_carries_every_protective_attribute() {
        let opened = set_cookie(&session_cookie("abc", 43_200)).expect("a hex token is a valid header");
        let opened = opened.to_str().expect("ASCII");
        assert!(opened.starts_with("fp_session=abc;"), "{opened}");
        let cleared = cleared_cookie().expect("valid header");
        let cleared = cleared.to_str().expect("ASCII");
        assert!(cleared.starts_with("fp_session=;"), "{cleared}");
        for (value, age) in [(opened, "Max-Age=43200"), (cleared, "Max-Age=0")] {
            for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/api", age] {
                assert!(value.split("; ").any(|a| a == attr), "{attr} missing from {value}");
            }
        }
    }
}
