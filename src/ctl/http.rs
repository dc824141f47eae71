//! The ctl's HTTP client: one request to the management API, its failure turned into a
//! [`CtlError`] that says plainly what happened and carries the exit code scripts rely on.

use std::fmt;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Exit codes of `fleetpulse ctl` (documented in `docs/api/ctl.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 1: anything else (a 500, a malformed answer, a local file that cannot be read).
    Other = 1,
    /// 2: the command line is wrong (clap uses 2 as well).
    Usage = 2,
    /// 3: not logged in, the session is invalid or expired (401), or not allowed (403).
    Auth = 3,
    /// 4: the object does not exist in the caller's scope (404).
    NotFound = 4,
    /// 5: the request conflicts with the object's state (409) or a limit is reached (429).
    Conflict = 5,
    /// 6: the server cannot be reached or is not ready (connection refused, timeout, 503).
    Unavailable = 6,
}

/// A failed ctl command: what to tell the user, and how to exit.
#[derive(Debug)]
pub struct CtlError {
    pub exit: Exit,
    pub message: String,
}

impl CtlError {
    pub fn new(exit: Exit, message: impl Into<String>) -> CtlError {
        CtlError { exit, message: message.into() }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A client of one server, with the saved session's token (if any).
#[derive(Debug)]
pub struct ApiClient {
    pub base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// A successful answer: JSON, or text (CSV).
#[derive(Debug)]
pub enum Body {
    Json(Value),
    Text(String),
}

impl ApiClient {
    pub fn new(base: &str, token: Option<String>) -> Result<ApiClient, CtlError> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            // Below the API's 10-s bound on a kept-alive connection's wait (`header_read_timeout_s`),
            // so a request never goes out on a connection the server is closing.
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| CtlError::new(Exit::Other, format!("cannot build an HTTP client: {e}")))?;
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CtlError::new(Exit::Usage, format!("the URL {base:?} must start with http:// or https://")));
        }
        Ok(ApiClient { base, token, http })
    }

    /// JSON in, JSON out.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Value, CtlError> {
        match self.call(method, path, query, body).await? {
            Body::Json(v) => Ok(v),
            Body::Text(t) if t.is_empty() => Ok(Value::Null),
            Body::Text(_) => {
                Err(CtlError::new(Exit::Other, format!("{}{path} answered something that is not JSON", self.base)))
            }
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Body, CtlError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).query(query);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            let why = if e.is_connect() {
                "connection failed (wrong URL, or the server is down)"
            } else if e.is_timeout() {
                "no answer in time"
            } else {
                "the request failed"
            };
            CtlError::new(Exit::Unavailable, format!("cannot reach the fleetpulse server at {}: {why}", self.base))
        })?;
        let status = response.status();
        let is_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let retry_after =
            response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = response
            .text()
            .await
            .map_err(|e| CtlError::new(Exit::Unavailable, format!("the answer of {url} was cut off: {e}")))?;
        if status.is_success() {
            if is_json && !text.is_empty() {
                let value = serde_json::from_str(&text)
                    .map_err(|e| CtlError::new(Exit::Other, format!("{url} answered malformed JSON: {e}")))?;
                return Ok(Body::Json(value));
            }
            return Ok(Body::Text(text));
        }
        let error: Option<(String, String)> = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| Some((v["error"]["code"].as_str()?.to_owned(), v["error"]["message"].as_str()?.to_owned())));
        Err(failure(status, error, retry_after, &self.base))
    }
}

/// The plain sentence and exit code of an error answer.
fn failure(status: StatusCode, error: Option<(String, String)>, retry_after: Option<String>, base: &str) -> CtlError {
    let Some((code, message)) = error else {
        let exit = exit_of(status);
        return CtlError::new(exit, format!("the server at {base} is not a fleetpulse API or failed: HTTP {status}"));
    };
    let retry = retry_after.map(|s| format!(" (retry after {s} s)")).unwrap_or_default();
    let sentence = match status {
        StatusCode::UNAUTHORIZED => {
            format!("not logged in or the session expired ({code}: {message}); run `fleetpulse ctl login` again")
        }
        StatusCode::FORBIDDEN => format!("not allowed ({code}): {message}"),
        StatusCode::NOT_FOUND => format!("not found: {message}"),
        StatusCode::CONFLICT => format!("conflict: {message}"),
        StatusCode::TOO_MANY_REQUESTS => format!("limit reached ({code}): {message}{retry}"),
        StatusCode::SERVICE_UNAVAILABLE => format!("the server at {base} is not ready ({code}): {message}{retry}"),
        _ => format!("the server answered HTTP {status} ({code}): {message}"),
    };
    CtlError::new(exit_of(status), sentence)
}

fn exit_of(status: StatusCode) -> Exit {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Exit::Auth,
        StatusCode::NOT_FOUND => Exit::NotFound,
        StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS => Exit::Conflict,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => Exit::Unavailable,
        StatusCode::BAD_REQUEST => Exit::Usage,
        _ => Exit::Other,
    }
}
