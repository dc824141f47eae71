//! The operation log (`OperationLogStore`, LOG-1): an append-only record of state-changing
//! requests, read newest first by filters and by what a tenant may see.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, EnterpriseId, UnixMillis};
use serde::Serialize;

use crate::{Page, Result};

/// Most rows one [`OperationLogStore::append_operation_logs`] may append.
pub const MAX_OPERATION_LOG_BATCH: usize = 1_000;

/// Most rows one [`OperationLogStore::list_operation_logs`] returns, whatever limit it is given.
pub const MAX_OPERATION_LOG_PAGE: u32 = 1_000;

/// Longest [`NewOperationLog::account_email`], in bytes.
pub const MAX_OPERATION_LOG_EMAIL: usize = 320;

/// Longest [`NewOperationLog::operation`], in bytes.
pub const MAX_OPERATION_LOG_OPERATION: usize = 200;

/// Longest [`NewOperationLog::method`], in bytes.
pub const MAX_OPERATION_LOG_METHOD: usize = 16;

/// Longest [`NewOperationLog::path`], in bytes.
pub const MAX_OPERATION_LOG_PATH: usize = 2_048;

/// Longest [`NewOperationLog::ip`], in bytes.
pub const MAX_OPERATION_LOG_IP: usize = 64;

/// The append-only operation log.
#[async_trait]
pub trait OperationLogStore: Send + Sync + 'static {
    /// Appends rows to the operation log (LOG-1), all in one transaction, in order (ids
    /// increase along the batch).
    ///
    /// [`StoreError::InvalidInput`](crate::StoreError::InvalidInput) (and nothing is appended) for more than
    /// [`MAX_OPERATION_LOG_BATCH`] rows or a row that [`NewOperationLog::validate`] refuses.
    /// The log is append-only: there is no method to change or remove a row, and the database
    /// itself refuses updates and deletes of it.
    async fn append_operation_logs(&self, rows: Vec<NewOperationLog>) -> Result<()>;
    /// Operation log rows matching the filter, newest first (by id, descending): those with an
    /// id below `page.after` when it is above 0, else from the newest; at most `page.limit`,
    /// and never more than [`MAX_OPERATION_LOG_PAGE`].
    async fn list_operation_logs(&self, filter: OperationLogFilter, page: Page) -> Result<Vec<OperationLog>>;
}

/// Whether a logged operation succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationOutcome {
    /// The request did what it asked for (a 2xx or 3xx status).
    Success,
    /// The request was refused or failed.
    Failure,
}

impl OperationOutcome {
    /// Name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationOutcome::Success => "success",
            OperationOutcome::Failure => "failure",
        }
    }

    /// Inverse of [`OperationOutcome::as_str`].
    pub fn parse(s: &str) -> Option<OperationOutcome> {
        match s {
            "success" => Some(OperationOutcome::Success),
            "failure" => Some(OperationOutcome::Failure),
            _ => None,
        }
    }
}

/// One state-changing request, as [`crate::OperationLogStore::append_operation_logs`] records it
/// (LOG-1). Text fields are bounded (see [`NewOperationLog::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct NewOperationLog {
    /// The signed-in account, if any (none for a failed login of an unknown email).
    pub account_id: Option<AccountId>,
    /// The account's email (or the email a failed login gave), at most
    /// [`crate::MAX_OPERATION_LOG_EMAIL`] bytes.
    pub account_email: String,
    /// The enterprise the account acted as, if any.
    pub acting_as: Option<EnterpriseId>,
    /// The operation type: method and route template, e.g. `POST /api/v1/enterprises`; at most
    /// [`crate::MAX_OPERATION_LOG_OPERATION`] bytes.
    pub operation: String,
    /// HTTP method, at most [`crate::MAX_OPERATION_LOG_METHOD`] bytes.
    pub method: String,
    /// The concrete request path, at most [`crate::MAX_OPERATION_LOG_PATH`] bytes.
    pub path: String,
    /// Client IP address, at most [`crate::MAX_OPERATION_LOG_IP`] bytes.
    pub ip: String,
    /// When the request was made.
    pub at: UnixMillis,
    /// HTTP status of the response.
    pub status: u16,
    /// Whether it succeeded.
    pub outcome: OperationOutcome,
}

impl NewOperationLog {
    /// [`crate::StoreError::InvalidInput`] if a text field is longer than its bound or holds a
    /// NUL character (which PostgreSQL cannot store), or an id is beyond what a database row
    /// can hold (above `i64::MAX`).
    pub fn validate(&self) -> crate::Result<()> {
        let fields = [
            ("account_email", &self.account_email, crate::MAX_OPERATION_LOG_EMAIL),
            ("operation", &self.operation, crate::MAX_OPERATION_LOG_OPERATION),
            ("method", &self.method, crate::MAX_OPERATION_LOG_METHOD),
            ("path", &self.path, crate::MAX_OPERATION_LOG_PATH),
            ("ip", &self.ip, crate::MAX_OPERATION_LOG_IP),
        ];
        for (name, value, max) in fields {
            if value.len() > max {
                return Err(crate::StoreError::InvalidInput(format!(
                    "operation log {name} of {} bytes (at most {max})",
                    value.len()
                )));
            }
            if value.contains('\0') {
                return Err(crate::StoreError::InvalidInput(format!("operation log {name} holds a NUL character")));
            }
        }
        let ids = [("account_id", self.account_id.map(|a| a.0)), ("acting_as", self.acting_as.map(|e| e.0))];
        for (name, id) in ids {
            if id.is_some_and(|id| i64::try_from(id).is_err()) {
                return Err(crate::StoreError::InvalidInput(format!("operation log {name} out of range")));
            }
        }
        Ok(())
    }
}

/// A recorded operation (LOG-1). Rows are never changed or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct OperationLog {
    /// Identifier: increases with every row appended.
    pub id: u64,
    /// The row as it was appended.
    #[serde(flatten)]
    pub entry: NewOperationLog,
}

/// Filters of [`crate::OperationLogStore::list_operation_logs`]; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct OperationLogFilter {
    /// Made at or after this time.
    pub from: Option<UnixMillis>,
    /// Made before this time.
    pub to: Option<UnixMillis>,
    /// Only this operation type (exact match).
    pub operation: Option<String>,
    /// Only requests of this account.
    pub account_id: Option<AccountId>,
    /// Only requests made acting as this enterprise.
    pub enterprise: Option<EnterpriseId>,
    /// Only the rows a tenant may see ([`OperationLogScope`]); `None`: every row.
    pub within: Option<OperationLogScope>,
}

/// The operation-log rows a tenant may see (LOG-1): those made by one of `accounts` (its own
/// and its subtree's), or made acting inside one of `enterprises` (TEN-3). Each list holds at
/// most [`crate::MAX_ACCOUNT_FILTER`] ids; with both empty nothing matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct OperationLogScope {
    /// Rows of these accounts.
    pub accounts: Vec<AccountId>,
    /// Rows acting inside these enterprises.
    pub enterprises: Vec<EnterpriseId>,
}

impl OperationLogScope {
    /// [`crate::StoreError::InvalidInput`] for a list above [`crate::MAX_ACCOUNT_FILTER`] ids.
    pub fn check(&self) -> crate::Result<()> {
        crate::check_bound("account ids", self.accounts.len(), crate::MAX_ACCOUNT_FILTER)?;
        crate::check_bound("enterprise ids", self.enterprises.len(), crate::MAX_ACCOUNT_FILTER)
    }
}

impl OperationLogFilter {
    /// True if no row can match: an operation type no row can have (longer than
    /// [`crate::MAX_OPERATION_LOG_OPERATION`] or holding a NUL character), or an id above
    /// `i64::MAX`. The backends answer such a filter with no rows without asking the database.
    pub fn matches_nothing(&self) -> bool {
        let impossible_id = |id: Option<u64>| id.is_some_and(|id| i64::try_from(id).is_err());
        self.operation.as_ref().is_some_and(|op| op.len() > crate::MAX_OPERATION_LOG_OPERATION || op.contains('\0'))
            || impossible_id(self.account_id.map(|a| a.0))
            || impossible_id(self.enterprise.map(|e| e.0))
            || self.within.as_ref().is_some_and(|w| w.accounts.is_empty() && w.enterprises.is_empty())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn operation_outcomes_are_snake_case_and_round_trip() {
        use super::OperationOutcome;
        for (outcome, name) in [(OperationOutcome::Success, "success"), (OperationOutcome::Failure, "failure")] {
            assert_eq!(serde_json::to_value(outcome).expect("serialize"), serde_json::json!(name));
            assert_eq!((outcome.as_str(), OperationOutcome::parse(name)), (name, Some(outcome)));
        }
        assert_eq!(OperationOutcome::parse("Success"), None);
    }
}
