//! The alarm summary behind the console's dashboard (UI-1): alarm records by severity and status,
//! and how many had their latest occurrence in each bucket of a time window, counted over a
//! bounded scan of the caller's records.

use axum::extract::State;
use axum::routing::{MethodRouter, get};
use fleetpulse_proto::{EnterpriseId, Severity, UnixMillis};
use fleetpulse_store::{AlarmFilter, AlarmRecord, AlarmStatus, Feature, Page};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::state::AppState;

/// Most alarm records one part of a summary counts (each part: active, acknowledged, window);
/// beyond it the answer says `truncated` and its counts are lower bounds.
pub(crate) const MAX_SCANNED: usize = 10_000;
/// Records read per store call.
const SCAN_PAGE: u32 = 1000;
/// Default and largest number of buckets of the series.
const DEFAULT_BUCKETS: u32 = 24;
const MAX_BUCKETS: u32 = 168;
/// Default window: the last 24 hours.
const DEFAULT_WINDOW_MS: i64 = 24 * 3_600_000;
/// Longest window: 31 days.
const MAX_WINDOW_MS: i64 = 31 * 24 * 3_600_000;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![("/api/v1/alarms/summary", get(summary))]
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SummaryQuery {
    enterprise_id: Option<EnterpriseId>,
    /// Start of the window (unix ms; default 24 hours before `to`).
    from: Option<i64>,
    /// End of the window (unix ms, excluded; default now).
    to: Option<i64>,
    /// Buckets of the series (1 to 168, default 24).
    buckets: Option<u32>,
}

/// Counts per severity.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub(crate) struct SeverityCounts {
    critical: u64,
    major: u64,
    minor: u64,
}

impl SeverityCounts {
    fn add(&mut self, severity: Severity) {
        match severity {
            Severity::Critical => self.critical += 1,
            Severity::Major => self.major += 1,
            Severity::Minor => self.minor += 1,
        }
    }
}

/// One bucket of the series: records whose latest occurrence is in `[start, start + bucket_ms)`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct SummaryBucket {
    start: UnixMillis,
    counts: SeverityCounts,
}

/// `GET /api/v1/alarms/summary`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct AlarmSummary {
    /// Active (not acknowledged, not cleared) records by severity.
    active: SeverityCounts,
    /// Acknowledged, not yet cleared records by severity.
    acknowledged: SeverityCounts,
    from: UnixMillis,
    to: UnixMillis,
    bucket_ms: i64,
    /// Records by the bucket of their latest occurrence in `[from, to)`, oldest bucket first.
    series: Vec<SummaryBucket>,
    /// A part matched more than 10,000 records: its counts are lower bounds.
    truncated: bool,
}

/// Reads the records matching `filter` in id order, at most [`MAX_SCANNED`], handing each to
/// `each`; whether more were left.
async fn scan(ctx: &AppState, filter: &AlarmFilter, mut each: impl FnMut(&AlarmRecord)) -> Result<bool, ApiError> {
    let mut page = Page { after: 0, limit: SCAN_PAGE };
    let mut seen = 0;
    loop {
        let items = ctx.api.store.events.list_alarm_records(filter.clone(), page).await?;
        items.iter().for_each(&mut each);
        seen += items.len();
        match items.last() {
            Some(last) if items.len() >= SCAN_PAGE as usize => {
                if seen >= MAX_SCANNED {
                    return Ok(true);
                }
                page.after = last.id;
            }
            _ => return Ok(false),
        }
    }
}

/// `GET /api/v1/alarms/summary?enterprise_id=&from=&to=&buckets=`: the caller's alarm records
/// (scoped like `GET /api/v1/alarms`) counted by severity, active and acknowledged, and a series
/// of the records whose latest occurrence falls in each bucket of the window. Each part counts
/// at most 10,000 records (`truncated` says when there were more).
async fn summary(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<SummaryQuery>,
) -> Result<Json<AlarmSummary>, ApiError> {
    auth.require(Feature::Alarms)?;
    let to = q.to.unwrap_or(ctx.clock.now().0);
    let from = q.from.unwrap_or(to.saturating_sub(DEFAULT_WINDOW_MS));
    if from >= to || to - from > MAX_WINDOW_MS {
        return Err(ApiError::invalid("from must be before to, at most 31 days apart"));
    }
    let buckets = q.buckets.unwrap_or(DEFAULT_BUCKETS);
    if !(1..=MAX_BUCKETS).contains(&buckets) {
        return Err(ApiError::invalid(format!("buckets must be between 1 and {MAX_BUCKETS}")));
    }
    let bucket_ms = ((to - from) + i64::from(buckets) - 1) / i64::from(buckets);
    let (enterprise, enterprises) = auth.listing_filter(&ctx, q.enterprise_id).await?;
    let scoped = AlarmFilter { enterprise, enterprises, ..AlarmFilter::default() };

    let mut active = SeverityCounts::default();
    let status = AlarmFilter { status: Some(AlarmStatus::Active), ..scoped.clone() };
    let mut truncated = scan(&ctx, &status, |r| active.add(r.severity)).await?;
    let mut acknowledged = SeverityCounts::default();
    let status = AlarmFilter { status: Some(AlarmStatus::Acknowledged), ..scoped.clone() };
    truncated |= scan(&ctx, &status, |r| acknowledged.add(r.severity)).await?;

    let mut series: Vec<SummaryBucket> = (0..i64::from(buckets))
        .map(|i| SummaryBucket { start: UnixMillis(from + i * bucket_ms), counts: SeverityCounts::default() })
        .collect();
    let window = AlarmFilter { latest_from: Some(UnixMillis(from)), latest_to: Some(UnixMillis(to)), ..scoped };
    truncated |= scan(&ctx, &window, |r| {
        let index = usize::try_from((r.latest_at.0 - from) / bucket_ms).unwrap_or(0);
        if let Some(bucket) = series.get_mut(index) {
            bucket.counts.add(r.severity);
        }
    })
    .await?;
    Ok(Json(AlarmSummary {
        active,
        acknowledged,
        from: UnixMillis(from),
        to: UnixMillis(to),
        bucket_ms,
        series,
        truncated,
    }))
}
