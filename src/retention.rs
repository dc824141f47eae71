//! The retention passes `serve` runs in the background, each at start and then on its own
//! period: telemetry (STO-4), expired device uploads (issue 11), and sent notifications with
//! their keys and audit (issue 18). A failed pass is logged and tried again at the next period.

use std::sync::Arc;
use std::time::Duration;

use fleetpulse_store::Store;

/// Retention (STO-4): drops telemetry older than `days`, at start and every six hours.
pub async fn telemetry(store: Store, days: u32) {
    let mut every = tokio::time::interval(Duration::from_secs(6 * 3600));
    loop {
        every.tick().await;
        let cutoff = fleetpulse_proto::UnixMillis(fleetpulse_proto::UnixMillis::now().0 - i64::from(days) * 86_400_000);
        match store.events.apply_retention(cutoff).await {
            Ok(removed) => tracing::info!(message = "Retention applied.", days, removed),
            Err(error) => tracing::warn!(message = "Retention failed; retrying later.", %error),
        }
    }
}

/// Uploaded files past their expiry (issue 11): deleted at start and every ten minutes,
/// [`FILE_DELETE_BATCH`] at a time until none is left.
pub async fn files(files: Arc<dyn fleetpulse_store::EntityStore>) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        let now = fleetpulse_proto::UnixMillis::now();
        match fleetpulse_store::delete_all_expired_files(files.as_ref(), now, FILE_DELETE_BATCH).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(message = "Expired files deleted.", deleted),
            Err(error) => tracing::warn!(message = "Deleting expired files failed; retrying later.", %error),
        }
    }
}

/// The notification retention (issue 18): sent or given-up outbox messages, their item keys
/// and the notification audit older than `days`, deleted at start and every hour,
/// [`NOTIFICATION_PRUNE_BATCH`] rows per table at a time until none is left.
pub async fn notifications(store: Arc<dyn fleetpulse_store::EntityStore>, days: u32) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        let before = fleetpulse_proto::UnixMillis(fleetpulse_proto::UnixMillis::now().0 - i64::from(days) * 86_400_000);
        let mut total = fleetpulse_store::PruneCounts::default();
        loop {
            match store.prune_notifications(before, NOTIFICATION_PRUNE_BATCH).await {
                Ok(n) => {
                    total.audit += n.audit;
                    total.outbox += n.outbox;
                    total.items += n.items;
                    if n.audit + n.outbox + n.items == 0 {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(message = "Notification retention failed; retrying later.", %error);
                    break;
                }
            }
        }
        if total.audit + total.outbox + total.items > 0 {
            tracing::info!(
                message = "Notification retention applied.",
                days,
                audit = total.audit,
                outbox = total.outbox,
                items = total.items
            );
        }
    }
}

/// Rows per table one call of the notification retention deletes.
const NOTIFICATION_PRUNE_BATCH: u32 = 5_000;

/// Files one call of the file retention deletes.
const FILE_DELETE_BATCH: u32 = 1_000;
