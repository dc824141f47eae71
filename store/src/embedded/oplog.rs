//! The operation log on SQLite ([`OperationLogStore`]): appended in batches, read newest first
//! along an index that fits the filter.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, EnterpriseId, UnixMillis};
use rusqlite::{Row, params};

use super::{EmbeddedStore, SqlValue, json_ids};
use crate::*;

/// The columns `operation_log_from_row` reads, in its order.
const OPERATION_LOG_COLUMNS: &str =
    "id, account_id, account_email, acting_as, operation, method, path, ip, at, status, outcome";

fn operation_log_from_row(r: &Row<'_>) -> rusqlite::Result<OperationLog> {
    let outcome: String = r.get(10)?;
    let entry = NewOperationLog {
        account_id: r.get::<_, Option<u64>>(1)?.map(AccountId),
        account_email: r.get(2)?,
        acting_as: r.get::<_, Option<u64>>(3)?.map(EnterpriseId),
        operation: r.get(4)?,
        method: r.get(5)?,
        path: r.get(6)?,
        ip: r.get(7)?,
        at: UnixMillis(r.get(8)?),
        status: r.get(9)?,
        outcome: OperationOutcome::parse(&outcome).unwrap_or(OperationOutcome::Failure),
    };
    Ok(OperationLog { id: r.get(0)?, entry })
}

/// The query of [`EntityStore::list_operation_logs`] and its values, or `None` if it returns
/// nothing (a zero limit, a filter no row can match). Only the filters given become terms, so that the planner can pick the
/// index that fits; every index of the table ends in the rowid (`id`), so a page of one account,
/// enterprise or operation type is read in order without sorting the matching rows.
pub(super) fn operation_log_sql(filter: &OperationLogFilter, page: Page) -> Option<(String, Vec<SqlValue>)> {
    let limit = page.limit.min(MAX_OPERATION_LOG_PAGE);
    if limit == 0 || filter.matches_nothing() {
        return None;
    }
    let mut terms: Vec<&str> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    if let Some(a) = filter.account_id {
        terms.push("account_id = ?");
        values.push(Box::new(i64::try_from(a.0).ok()?));
    }
    if let Some(e) = filter.enterprise {
        terms.push("acting_as = ?");
        values.push(Box::new(i64::try_from(e.0).ok()?));
    }
    if let Some(op) = &filter.operation {
        terms.push("operation = ?");
        values.push(Box::new(op.clone()));
    }
    if let Some(t) = filter.from {
        terms.push("at >= ?");
        values.push(Box::new(t.0));
    }
    if let Some(t) = filter.to {
        terms.push("at < ?");
        values.push(Box::new(t.0));
    }
    if let Some(within) = &filter.within {
        terms.push("(account_id IN (SELECT value FROM json_each(?)) OR acting_as IN (SELECT value FROM json_each(?)))");
        values.push(Box::new(json_ids(within.accounts.iter().map(|a| a.0)).ok()?));
        values.push(Box::new(json_ids(within.enterprises.iter().map(|e| e.0)).ok()?));
    }
    if page.after > 0 {
        // Every id is below one beyond `i64::MAX`.
        terms.push("id < ?");
        values.push(Box::new(i64::try_from(page.after).unwrap_or(i64::MAX)));
    }
    values.push(Box::new(limit));
    let clause = if terms.is_empty() { String::new() } else { format!(" WHERE {}", terms.join(" AND ")) };
    Some((format!("SELECT {OPERATION_LOG_COLUMNS} FROM operation_log{clause} ORDER BY id DESC LIMIT ?"), values))
}

#[async_trait]
impl OperationLogStore for EmbeddedStore {
    async fn append_operation_logs(&self, rows: Vec<NewOperationLog>) -> Result<()> {
        check_bound("operation log rows", rows.len(), MAX_OPERATION_LOG_BATCH)?;
        rows.iter().try_for_each(NewOperationLog::validate)?;
        if rows.is_empty() {
            return Ok(());
        }
        // One write job: one savepoint of one commit, so the batch is appended whole or not at all.
        self.write(rows.len(), move |c| {
            let mut st = c.prepare_cached(
                "INSERT INTO operation_log (account_id, account_email, acting_as, operation, method, path, ip, at, \
                 status, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for row in &rows {
                st.execute(params![
                    row.account_id.map(|a| a.0),
                    row.account_email,
                    row.acting_as.map(|e| e.0),
                    row.operation,
                    row.method,
                    row.path,
                    row.ip,
                    row.at.0,
                    row.status,
                    row.outcome.as_str(),
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn list_operation_logs(&self, filter: OperationLogFilter, page: Page) -> Result<Vec<OperationLog>> {
        if let Some(within) = &filter.within {
            within.check()?;
        }
        let Some((sql, values)) = operation_log_sql(&filter, page) else { return Ok(Vec::new()) };
        self.read(move |c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(values.iter()), operation_log_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}
