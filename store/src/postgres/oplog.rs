//! The operation log on PostgreSQL ([`OperationLogStore`]): appended in batches in one
//! statement, read newest first.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, EnterpriseId, UnixMillis};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgEntityStore, backend, db_id, row_id};
use crate::*;

fn operation_log_from_row(r: &PgRow) -> Result<OperationLog> {
    let outcome: String = r.try_get("outcome").map_err(backend)?;
    let status: i32 = r.try_get("status").map_err(backend)?;
    let entry = NewOperationLog {
        account_id: r.try_get::<Option<i64>, _>("account_id").map_err(backend)?.map(|a| AccountId(row_id(a))),
        account_email: r.try_get("account_email").map_err(backend)?,
        acting_as: r.try_get::<Option<i64>, _>("acting_as").map_err(backend)?.map(|e| EnterpriseId(row_id(e))),
        operation: r.try_get("operation").map_err(backend)?,
        method: r.try_get("method").map_err(backend)?,
        path: r.try_get("path").map_err(backend)?,
        ip: r.try_get("ip").map_err(backend)?,
        at: UnixMillis(r.try_get("at").map_err(backend)?),
        status: u16::try_from(status).unwrap_or_default(),
        outcome: OperationOutcome::parse(&outcome).unwrap_or(OperationOutcome::Failure),
    };
    Ok(OperationLog { id: row_id(r.try_get("id").map_err(backend)?), entry })
}

/// Appends the rows of a batch in array order (ids follow the batch), in one statement.
const INSERT_OPERATION_LOGS: &str = "INSERT INTO operation_log \
     (account_id, account_email, acting_as, operation, method, path, ip, at, status, outcome) \
     SELECT account_id, account_email, acting_as, operation, method, path, ip, at, status, outcome \
     FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], \
     $8::bigint[], $9::integer[], $10::text[]) WITH ORDINALITY \
     AS r (account_id, account_email, acting_as, operation, method, path, ip, at, status, outcome, n) \
     ORDER BY r.n";
/// The start of every [`OperationLogStore::list_operation_logs`] query; the filters follow.
const OPERATION_LOG_PAGE: &str = "SELECT id, account_id, account_email, acting_as, operation, method, path, ip, at, \
     status, outcome FROM operation_log WHERE true";
#[async_trait]
impl OperationLogStore for PgEntityStore {
    async fn append_operation_logs(&self, rows: Vec<NewOperationLog>) -> Result<()> {
        check_bound("operation log rows", rows.len(), MAX_OPERATION_LOG_BATCH)?;
        rows.iter().try_for_each(NewOperationLog::validate)?;
        if rows.is_empty() {
            return Ok(());
        }
        // `validate` refused ids beyond BIGINT, so none is turned into NULL here.
        let id = |id: Option<u64>| id.and_then(db_id);
        let account_ids: Vec<Option<i64>> = rows.iter().map(|r| id(r.account_id.map(|a| a.0))).collect();
        let emails: Vec<&str> = rows.iter().map(|r| r.account_email.as_str()).collect();
        let acting_as: Vec<Option<i64>> = rows.iter().map(|r| id(r.acting_as.map(|e| e.0))).collect();
        let operations: Vec<&str> = rows.iter().map(|r| r.operation.as_str()).collect();
        let methods: Vec<&str> = rows.iter().map(|r| r.method.as_str()).collect();
        let paths: Vec<&str> = rows.iter().map(|r| r.path.as_str()).collect();
        let ips: Vec<&str> = rows.iter().map(|r| r.ip.as_str()).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.at.0).collect();
        let status: Vec<i32> = rows.iter().map(|r| i32::from(r.status)).collect();
        let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
        // One statement: the batch is appended whole or not at all.
        sqlx::query(INSERT_OPERATION_LOGS)
            .bind(&account_ids)
            .bind(&emails)
            .bind(&acting_as)
            .bind(&operations)
            .bind(&methods)
            .bind(&paths)
            .bind(&ips)
            .bind(&at)
            .bind(&status)
            .bind(&outcomes)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_operation_logs(&self, filter: OperationLogFilter, page: Page) -> Result<Vec<OperationLog>> {
        let limit = page.limit.min(MAX_OPERATION_LOG_PAGE);
        if let Some(within) = &filter.within {
            within.check()?;
        }
        if limit == 0 || filter.matches_nothing() {
            return Ok(Vec::new());
        }
        // Only the filters given become terms (from fixed fragments, values bound), so that
        // the planner can pick the index that fits whatever the plan cache holds.
        let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(OPERATION_LOG_PAGE);
        if let Some(a) = filter.account_id {
            let Some(a) = db_id(a.0) else { return Ok(Vec::new()) };
            query.push(" AND account_id = ").push_bind(a);
        }
        if let Some(e) = filter.enterprise {
            let Some(e) = db_id(e.0) else { return Ok(Vec::new()) };
            query.push(" AND acting_as = ").push_bind(e);
        }
        if let Some(op) = filter.operation {
            query.push(" AND operation = ").push_bind(op);
        }
        if let Some(t) = filter.from {
            query.push(" AND at >= ").push_bind(t.0);
        }
        if let Some(t) = filter.to {
            query.push(" AND at < ").push_bind(t.0);
        }
        if let Some(within) = &filter.within {
            let accounts: Vec<i64> = within.accounts.iter().filter_map(|a| db_id(a.0)).collect();
            let enterprises: Vec<i64> = within.enterprises.iter().filter_map(|e| db_id(e.0)).collect();
            query.push(" AND (account_id = ANY(").push_bind(accounts);
            query.push("::bigint[]) OR acting_as = ANY(").push_bind(enterprises).push("::bigint[]))");
        }
        if page.after > 0 {
            // Every id is below one beyond BIGINT.
            query.push(" AND id < ").push_bind(db_id(page.after).unwrap_or(i64::MAX));
        }
        query.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit));
        query.build().fetch_all(&self.pool).await.map_err(backend)?.iter().map(operation_log_from_row).collect()
    }
}
