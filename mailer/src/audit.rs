//! The outbox worker's entries in the notification audit (issue 18 item 4): per outbox
//! message, when a rate limit deferred it, when it was retried and why, when the relay accepted
//! it (its reply and the `Message-ID`) or why it was given up. Collected during a pass and
//! written after the pass's outcomes; best effort: a failed write is logged and counted, never
//! retried at the cost of sending.

use std::sync::{Arc, Mutex};

use fleetpulse_proto::UnixMillis;
use fleetpulse_store::{AuditEvent, MAX_AUDIT_BATCH, MessageAuditEntry, NotificationAuditStore, OutboxMessage};

/// Most entries held between two writes (beyond, further ones of the pass are not kept).
const MAX_PENDING: usize = 20_000;

/// The audit side of the outbox worker.
#[derive(Default)]
pub(crate) struct MessageAudit {
    store: Option<Arc<dyn NotificationAuditStore>>,
    pending: Mutex<Vec<MessageAuditEntry>>,
}

impl std::fmt::Debug for MessageAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageAudit").field("enabled", &self.store.is_some()).finish_non_exhaustive()
    }
}

impl MessageAudit {
    /// Writes entries to `store`.
    pub(crate) fn new(store: Arc<dyn NotificationAuditStore>) -> MessageAudit {
        MessageAudit { store: Some(store), pending: Mutex::new(Vec::new()) }
    }

    /// Notes `event` with `detail` for each of `messages` at `at`.
    pub(crate) fn note<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a OutboxMessage>,
        at: UnixMillis,
        event: AuditEvent,
        detail: &str,
    ) {
        if self.store.is_none() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for m in messages {
            if pending.len() >= MAX_PENDING {
                return;
            }
            pending.push(MessageAuditEntry {
                message_key: m.key.clone(),
                receiver: m.receiver.clone(),
                at,
                event,
                detail: detail.to_owned(),
            });
        }
    }

    /// Writes what was noted. A failure is logged; the entries are not kept.
    pub(crate) async fn flush(&self) {
        let Some(store) = &self.store else { return };
        let entries = std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let chunk: Vec<MessageAuditEntry> = entries.by_ref().take(MAX_AUDIT_BATCH).collect();
            if let Err(error) = store.record_message_audit(chunk).await {
                tracing::warn!(message = "Notification audit entries not written.", %error);
                return;
            }
        }
    }
}
