//! The outbox worker's entries in the notification audit (issue 18 item 4): per outbox
//! message, when a rate limit deferred it, when it was retried and why, when the relay accepted
//! it (its reply and the `Message-ID`) or why it was given up.
//!
//! An attempt's entry travels with its outcome and is written in the outcome's own commit
//! ([`fleetpulse_store::OutboxStore::record_outbox_attempts_audited`]); deferrals (no outcome)
//! wait here and join the next commit of outcomes, or are written alone when nothing goes out.
//! Best effort: a failed write of this buffer is logged, never retried at the cost of sending.

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

    /// The entries saying `event` with `detail` for each of `messages` at `at`, in their order
    /// (none if the audit is off).
    pub(crate) fn entries<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a OutboxMessage>,
        at: UnixMillis,
        event: AuditEvent,
        detail: &str,
    ) -> Vec<MessageAuditEntry> {
        if self.store.is_none() {
            return Vec::new();
        }
        messages
            .into_iter()
            .map(|m| MessageAuditEntry {
                message_key: m.key.clone(),
                receiver: m.receiver.clone(),
                at,
                event,
                detail: detail.to_owned(),
            })
            .collect()
    }

    /// Notes `event` with `detail` for each of `messages` at `at`, to be written later.
    pub(crate) fn note<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a OutboxMessage>,
        at: UnixMillis,
        event: AuditEvent,
        detail: &str,
    ) {
        self.push(self.entries(messages, at, event, detail));
    }

    /// Keeps `entries` to be written later (beyond [`MAX_PENDING`] held, they are not kept).
    pub(crate) fn push(&self, entries: Vec<MessageAuditEntry>) {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let room = MAX_PENDING.saturating_sub(pending.len());
        pending.extend(entries.into_iter().take(room));
    }

    /// Takes at most `limit` of the entries held, oldest first, to write them with a commit of
    /// outcomes.
    pub(crate) fn take(&self, limit: usize) -> Vec<MessageAuditEntry> {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = pending.len().min(limit);
        pending.drain(..n).collect()
    }

    /// Puts back entries [`MessageAudit::take`] took, whose commit failed, ahead of the ones
    /// held (the newest beyond [`MAX_PENDING`] are not kept).
    pub(crate) fn restore(&self, mut entries: Vec<MessageAuditEntry>) {
        if entries.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.append(&mut pending);
        entries.truncate(MAX_PENDING);
        *pending = entries;
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
