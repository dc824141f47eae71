//! CSV device imports (DEV-4): `POST /api/v1/device-imports` reads the body as a stream (never
//! whole), parses it on a blocking thread ([`crate::csv_import::DeviceCsv`]) and applies valid
//! rows in batches of [`BATCH`] while it reads; the import log (counts and per-row errors) is
//! kept in the store, readable and downloadable as CSV.

use std::io::{self, Read};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use fleetpulse_proto::EnterpriseId;
use fleetpulse_store::{
    DeviceImport, Feature, ImportCounts, ImportMode, ImportOutcome, ImportRow, ImportRowError, ImportState,
    MAX_IMPORT_PAGE,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::auth::AuthAdmin;
use crate::csv_export::CsvDownload;
use crate::csv_import::{DeviceCsv, ReadRow};
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::policy::Scope;
use crate::routes::listing::{ListPage, page};
use crate::state::AppState;

/// Rows applied per store transaction.
const BATCH: usize = 500;

/// Body and row limits of an enterprise or channel admin's import (SPEC DEV-4: 10,000 rows).
const LIMIT: Limits = Limits { bytes: 10 * 1024 * 1024, rows: 10_000 };

/// The largest import body of any caller (a platform admin's).
pub(crate) const PLATFORM_LIMIT_BYTES: u64 = 100 * 1024 * 1024;

/// Body and row limits of a platform admin's import.
const PLATFORM_LIMIT: Limits = Limits { bytes: PLATFORM_LIMIT_BYTES, rows: 100_000 };

/// Row errors shown with an import log (the rest: `errors.csv`).
const SHOWN_ERRORS: u32 = 100;

#[derive(Debug, Clone, Copy)]
struct Limits {
    bytes: u64,
    rows: u64,
}

/// `POST /api/v1/device-imports?enterprise_id=&mode=`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportQuery {
    /// The enterprise the devices go to; an enterprise admin's own when left out.
    enterprise_id: Option<EnterpriseId>,
    /// `create` (existing devices are left alone; the default), `overwrite` or `merge`.
    mode: Option<ImportMode>,
}

/// An import log with its first row errors.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ImportReport {
    #[serde(flatten)]
    import: DeviceImport,
    /// The first 100 row errors by line (all of them: `errors.csv`).
    errors: Vec<ImportRowError>,
}

/// What the parsing thread hands back.
enum Parsed {
    /// The header was read (or refused: why).
    Header(Result<(), String>),
    /// Rows read, in order.
    Rows(Vec<ReadRow>),
    /// The read stopped before the end of the file: why.
    Stopped(String),
}

/// A `Read` over the body chunks a task forwards (bounded channel: the body is read only as
/// fast as rows are applied).
struct ChunkReader {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Parses on the calling (blocking) thread, sending rows in batches.
fn parse(reader: ChunkReader, limits: Limits, out: mpsc::Sender<Parsed>) {
    let csv = match DeviceCsv::open(reader) {
        Ok(csv) => csv,
        Err(e) => {
            let _ = out.blocking_send(Parsed::Header(Err(e.0)));
            return;
        }
    };
    if out.blocking_send(Parsed::Header(Ok(()))).is_err() {
        return;
    }
    let mut batch = Vec::with_capacity(BATCH);
    let mut rows = 0u64;
    let mut stopped = None;
    for row in csv {
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                stopped = Some(format!("the upload ended: {e}"));
                break;
            }
        };
        rows += 1;
        if rows > limits.rows {
            stopped = Some(format!("more than {} rows: the rest of the file was not read", limits.rows));
            break;
        }
        batch.push(row);
        if batch.len() >= BATCH && out.blocking_send(Parsed::Rows(std::mem::take(&mut batch))).is_err() {
            return;
        }
    }
    if !batch.is_empty() && out.blocking_send(Parsed::Rows(batch)).is_err() {
        return;
    }
    if let Some(why) = stopped {
        let _ = out.blocking_send(Parsed::Stopped(why));
    }
}

/// Forwards the body's chunks, at most `limit` bytes; beyond it, an error ends the read.
async fn forward(body: Body, limit: u64, chunks: mpsc::Sender<io::Result<Bytes>>) {
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let item = match chunk {
            Ok(bytes) => {
                total += bytes.len() as u64;
                if total > limit {
                    Err(io::Error::other(format!("the file is larger than {} MiB", limit / (1024 * 1024))))
                } else {
                    Ok(bytes)
                }
            }
            Err(e) => Err(io::Error::other(e.to_string())),
        };
        let last = item.is_err();
        if chunks.send(item).await.is_err() || last {
            return;
        }
    }
}

/// Applies one batch: valid rows go to the store, every refusal becomes a row error.
async fn apply(
    ctx: &AppState,
    import: &DeviceImport,
    batch: Vec<ReadRow>,
) -> Result<(ImportCounts, Vec<ImportRowError>), ApiError> {
    let mut counts = ImportCounts { rows: batch.len() as u64, ..ImportCounts::default() };
    let mut errors = Vec::new();
    let mut valid: Vec<ImportRow> = Vec::with_capacity(batch.len());
    for row in batch {
        match row {
            Ok(row) => valid.push(row),
            Err(e) => errors.push(e),
        }
    }
    let lines: Vec<u64> = valid.iter().map(|r| r.line).collect();
    let outcomes =
        ctx.api.store.entities.import_devices(import.enterprise_id, import.mode, valid, ctx.clock.now()).await?;
    for (line, outcome) in lines.into_iter().zip(outcomes) {
        match outcome {
            ImportOutcome::Created(_) => counts.created += 1,
            ImportOutcome::Updated(_) => counts.updated += 1,
            ImportOutcome::Skipped(_) => counts.skipped += 1,
            ImportOutcome::Failed(column, reason) => errors.push(ImportRowError::new(line, column, &reason)),
        }
    }
    counts.failed = errors.len() as u64;
    errors.sort_by_key(|e| e.line);
    Ok((counts, errors))
}

/// `POST /api/v1/device-imports?enterprise_id=&mode=` with the CSV as the body: 201 with the
/// import log once every row was read. 400 for a file whose header cannot be used (nothing is
/// imported, no log kept); 413 for a `Content-Length` over the limit (10 MiB, 100 MiB for the
/// platform). A bad row never fails the request: it is a row error in the log.
pub(crate) async fn import(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<ImportReport>), ApiError> {
    auth.require(Feature::Devices)?;
    let enterprise = auth
        .enterprise_filter(&ctx, q.enterprise_id)
        .await?
        .ok_or_else(|| ApiError::invalid("enterprise_id is required"))?;
    auth.require_act(&ctx, enterprise).await?;
    let limits = if matches!(auth.caller.scope, Scope::Platform) { PLATFORM_LIMIT } else { LIMIT };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.bytes) {
        return Err(ApiError::PayloadTooLarge);
    }
    let (chunk_tx, chunk_rx) = mpsc::channel(8);
    let (parsed_tx, mut parsed_rx) = mpsc::channel(2);
    let forwarder = tokio::spawn(forward(body, limits.bytes, chunk_tx));
    let reader = ChunkReader { chunks: chunk_rx, current: Bytes::new() };
    let parser = tokio::task::spawn_blocking(move || parse(reader, limits, parsed_tx));
    let header = match parsed_rx.recv().await {
        Some(Parsed::Header(h)) => h,
        _ => Err("the file could not be read".into()),
    };
    if let Err(why) = header {
        forwarder.abort();
        return Err(ApiError::invalid(why));
    }
    let mode = q.mode.unwrap_or(ImportMode::Create);
    let log =
        ctx.api.store.entities.create_device_import(enterprise, auth.caller.account, mode, ctx.clock.now()).await?;
    // The rows are applied by a task of its own: a client that goes away mid-upload ends the
    // body (the log ends aborted), never the work half-way with the log left running.
    let run = Run { forwarder, parser, parsed: parsed_rx };
    let applying = tokio::spawn(apply_all(ctx.clone(), log.clone(), run));
    match applying.await {
        Ok(result) => result?,
        Err(error) => return Err(ApiError::Internal(format!("the import task failed: {error}"))),
    }
    Ok((StatusCode::CREATED, Json(report(&ctx, log.id).await?)))
}

/// The tasks of one import: the body forwarder, the parsing thread, and its output.
struct Run {
    forwarder: tokio::task::JoinHandle<()>,
    parser: tokio::task::JoinHandle<()>,
    parsed: mpsc::Receiver<Parsed>,
}

/// The first line of a batch.
fn first_line(rows: &[ReadRow]) -> u64 {
    rows.first().map_or(0, |r| match r {
        Ok(row) => row.line,
        Err(e) => e.line,
    })
}

/// Applies every batch the parser sends and closes the log: done, or aborted with a note when
/// the file could not be read to its end or the store failed (the batches before were applied
/// and counted). Err only when the log could not be closed either (the store is gone: the next
/// start aborts it, [`fleetpulse_store::InventoryStore::abort_running_device_imports`]).
async fn apply_all(ctx: AppState, log: DeviceImport, mut run: Run) -> Result<(), ApiError> {
    let mut note = None;
    let mut failure = None;
    while let Some(parsed) = run.parsed.recv().await {
        match parsed {
            Parsed::Rows(rows) => {
                let line = first_line(&rows);
                let applied = async {
                    let (counts, errors) = apply(&ctx, &log, rows).await?;
                    ctx.api.store.entities.record_device_import(log.id, counts, errors).await?;
                    Ok::<(), ApiError>(())
                }
                .await;
                if let Err(error) = applied {
                    tracing::error!(message = "A device import stopped: the store failed.", import = log.id, %error);
                    note = Some(format!(
                        "stopped at line {line}: the store failed; the rows before it were applied, its batch \
                         of up to {BATCH} rows may have been (import the file again in merge mode to be sure)"
                    ));
                    failure = Some(error);
                    break;
                }
            }
            Parsed::Stopped(why) => note = Some(why),
            Parsed::Header(_) => {}
        }
    }
    run.forwarder.abort();
    // Closing the channel ends the parsing thread at its next batch.
    drop(run.parsed);
    if let Err(e) = run.parser.await
        && failure.is_none()
    {
        note = Some(format!("the file could not be read to its end: {e}"));
    }
    let state = if note.is_some() { ImportState::Aborted } else { ImportState::Done };
    match ctx.api.store.entities.finish_device_import(log.id, state, note, ctx.clock.now()).await {
        Ok(()) => Ok(()),
        Err(error) => Err(failure.unwrap_or(error.into())),
    }
}

async fn report(ctx: &AppState, id: u64) -> Result<ImportReport, ApiError> {
    let import = ctx.api.store.entities.device_import(id).await?.ok_or(ApiError::NotFound("device import"))?;
    let errors = ctx.api.store.entities.device_import_errors(id, 0, SHOWN_ERRORS).await?;
    Ok(ImportReport { import, errors })
}

/// The import if the caller sees its enterprise, else 404.
async fn visible(auth: &AuthAdmin, ctx: &AppState, id: u64) -> Result<DeviceImport, ApiError> {
    auth.require(Feature::Devices)?;
    match ctx.api.store.entities.device_import(id).await? {
        Some(i) if auth.can_see(ctx, i.enterprise_id).await? => Ok(i),
        _ => Err(ApiError::NotFound("device import")),
    }
}

/// `GET /api/v1/device-imports?enterprise_id=&after=&limit=`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportListQuery {
    /// Only this enterprise's imports (one the caller sees); all it sees when left out.
    enterprise_id: Option<EnterpriseId>,
    /// The last id of the previous page (newest first: the next page holds older imports).
    after: Option<u64>,
    /// 1 to 200 (default 50).
    limit: Option<u32>,
}

/// `GET /api/v1/device-imports`: the import logs of the enterprises the caller sees (or of
/// one), newest first, keyset paged by `after`; without their row errors.
pub(crate) async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<ImportListQuery>,
) -> Result<Json<ListPage<DeviceImport>>, ApiError> {
    auth.require(Feature::Devices)?;
    let page = page(q.after, q.limit, 50, MAX_IMPORT_PAGE)?;
    let enterprises = match auth.listing_filter(&ctx, q.enterprise_id).await? {
        (Some(one), _) => Some(vec![one]),
        (None, many) => many,
    };
    let before = (page.after > 0).then_some(page.after);
    let items = ctx.api.store.entities.list_device_imports(enterprises, before, page.limit).await?;
    Ok(Json(ListPage::new(items, page, |i| i.id)))
}

/// `GET /api/v1/device-imports/{id}`: the import log and its first 100 row errors.
pub(crate) async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<ImportReport>, ApiError> {
    visible(&auth, &ctx, id).await?;
    Ok(Json(report(&ctx, id).await?))
}

/// `GET /api/v1/device-imports/{id}/errors.csv`: every kept row error (line, column, reason).
pub(crate) async fn errors_csv(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    visible(&auth, &ctx, id).await?;
    let mut csv = CsvDownload::new(&["line", "column", "reason"])?;
    let mut after = 0;
    loop {
        let page = ctx.api.store.entities.device_import_errors(id, after, 1_000).await?;
        for e in &page {
            csv.record([e.line.to_string().as_str(), e.column.as_str(), e.reason.as_str()])?;
        }
        match page.last() {
            Some(last) if page.len() == 1_000 => after = last.line,
            _ => break,
        }
    }
    csv.into_response("device-import-errors.csv")
}
