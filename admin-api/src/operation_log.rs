//! Recording the operation log (LOG-1): the middleware that writes one row per state-changing
//! request (and per file download) on every matched route, and the slots through which the auth extractor and the
//! login handlers tell it who made the request. The listing and export are `routes/oplog.rs`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use fleetpulse_proto::{AccountId, EnterpriseId};
use fleetpulse_store::{NewOperationLog, OperationOutcome};

use crate::state::AppState;

/// Longest concrete path kept in a row.
const MAX_PATH_CHARS: usize = 2048;

/// Who made a request, when the handler knows it better than the bearer token (login): set in
/// the response's extensions.
#[derive(Debug, Clone)]
pub(crate) struct Actor {
    /// The account, if the email named one.
    pub(crate) account_id: Option<AccountId>,
    /// The email the caller gave or has.
    pub(crate) email: String,
}

/// The caller of a state-changing request, as the auth extractor found it: the middleware puts
/// an empty slot into the request and reads it after the handler ran.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallerSlot(std::sync::Arc<std::sync::OnceLock<LoggedCaller>>);

/// Who made a request through a session.
#[derive(Debug, Clone)]
pub(crate) struct LoggedCaller {
    account_id: AccountId,
    email: String,
    /// The enterprise the session acts inside (TEN-3).
    acting_as: Option<EnterpriseId>,
}

impl CallerSlot {
    /// Records the session's account (the first time only).
    pub(crate) fn fill(&self, account: &fleetpulse_store::Account, acting: Option<fleetpulse_store::Acting>) {
        let acting_as = match acting {
            Some(fleetpulse_store::Acting::Enterprise(e)) => Some(e),
            _ => None,
        };
        let _ = self.0.set(LoggedCaller { account_id: account.id, email: account.email.clone(), acting_as });
    }
}

/// Reads recorded like changes: downloads of what devices uploaded (issue 11), whether they
/// succeed or not. Route templates, as in the route table.
pub(crate) const AUDITED_READS: &[&str] = &["/api/v1/files/{id}/content"];

/// Middleware on every matched route: after a state-changing request (any method but GET, HEAD
/// and OPTIONS) or a GET of an [`AUDITED_READS`] route is answered, writes its row. A failed
/// write is logged; the answer stands.
pub(crate) async fn record(State(ctx): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|r| r.as_str().to_owned());
    let audited = *req.method() == Method::GET && route.as_deref().is_some_and(|r| AUDITED_READS.contains(&r));
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) && !audited {
        return next.run(req).await;
    }
    let method = req.method().to_string();
    let operation = match route {
        Some(route) => format!("{method} {route}"),
        None => format!("{method} {}", req.uri().path()),
    };
    let path: String = req.uri().path().chars().take(MAX_PATH_CHARS).collect();
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default();
    // The auth extractor fills the slot once it knows the session's account: one session
    // lookup per request, shared with the handler.
    let slot = CallerSlot::default();
    let mut req = req;
    req.extensions_mut().insert(slot.clone());
    let at = ctx.clock.now();
    let response = next.run(req).await;
    let caller = slot.0.get().cloned();
    // TEN-3: a change made by a channel account acting inside an enterprise is recorded as such.
    let acting_as = caller.as_ref().and_then(|c| c.acting_as);
    let (account_id, account_email) = match (response.extensions().get::<Actor>(), caller) {
        (Some(actor), _) => (actor.account_id, actor.email.clone()),
        (None, Some(caller)) => (Some(caller.account_id), caller.email),
        (None, None) => (None, String::new()),
    };
    let status = response.status();
    let row = NewOperationLog {
        account_id,
        account_email: account_email.chars().take(320).collect(),
        acting_as,
        operation,
        method,
        path,
        ip,
        at,
        status: status.as_u16(),
        outcome: if status.is_success() { OperationOutcome::Success } else { OperationOutcome::Failure },
    };
    if let Err(error) = ctx.api.store.entities.append_operation_logs(vec![row]).await {
        tracing::error!(message = "Operation log row not written.", %error);
    }
    response
}
