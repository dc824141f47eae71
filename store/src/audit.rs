//! The notification audit (`NotificationAuditStore`, issue 18 item 4): for every alarm
//! activation, what became of its notifications — planned (alone or grouped with others),
//! held back by a maintenance window and released or dropped at its end, deferred by a rate
//! limit, retried, sent (with the relay's reply and the `Message-ID`) or given up (with the
//! reason) — and the retention pass that keeps the audit and the outbox from growing forever.
//!
//! Two kinds of entries:
//! - *alarm entries* name an activation (device, type, first time): planned, window steps;
//! - *message entries* name an outbox message by its idempotency key: deferred, retried, sent,
//!   failed. The outbox worker knows messages, not alarms; an alarm's planned entries name the
//!   messages that carry it, and [`NotificationAuditStore::notification_audit`] joins both.
//!
//! Bounds: at most [`MAX_AUDIT_PER_ACTIVATION`] alarm entries per activation and
//! [`MAX_AUDIT_PER_MESSAGE`] entries per message (further ones are not stored; a notification
//! repeated every few minutes for weeks keeps its first entries), texts cut to
//! [`MAX_AUDIT_DETAIL`] bytes, and [`NotificationAuditStore::prune_notifications`] deletes
//! entries, settled outbox messages and their item keys older than the configured age.

use async_trait::async_trait;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, UnixMillis};
use serde::Serialize;

use crate::Result;

/// Most alarm entries kept per activation.
pub const MAX_AUDIT_PER_ACTIVATION: u32 = 200;
/// Most entries kept per outbox message.
pub const MAX_AUDIT_PER_MESSAGE: u32 = 50;
/// Longest detail or receiver text kept, in bytes.
pub const MAX_AUDIT_DETAIL: usize = 1_000;
/// Most entries one write takes.
pub const MAX_AUDIT_BATCH: usize = 5_000;
/// Most entries one read answers.
pub const MAX_AUDIT_READ: u32 = 500;

/// The notification audit and the retention of what notifications leave behind.
#[async_trait]
pub trait NotificationAuditStore: Send + Sync + 'static {
    /// Appends alarm entries (beyond an activation's bound they are left out).
    /// [`crate::StoreError::InvalidInput`] for more than [`MAX_AUDIT_BATCH`].
    async fn record_alarm_audit(&self, entries: Vec<AlarmAuditEntry>) -> Result<()>;
    /// Appends message entries (beyond a message's bound they are left out).
    /// [`crate::StoreError::InvalidInput`] for more than [`MAX_AUDIT_BATCH`].
    async fn record_message_audit(&self, entries: Vec<MessageAuditEntry>) -> Result<()>;
    /// The activation's story: its alarm entries and the entries of the messages they name,
    /// oldest first (by time, then as recorded), at most `limit` (≤ [`MAX_AUDIT_READ`]).
    async fn notification_audit(
        &self,
        device: DeviceId,
        code: AlarmTypeCode,
        first_at: UnixMillis,
        limit: u32,
    ) -> Result<Vec<AuditEntry>>;
    /// Deletes audit entries older than `before`, and outbox messages sent or given up before
    /// it with their item keys (pending ones stay, however old). Per table at most `limit`
    /// rows (the caller repeats while something was deleted).
    async fn prune_notifications(&self, before: UnixMillis, limit: u32) -> Result<PruneCounts>;
}

/// What happened, as one audit entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// Queued as a notification to a receiver (alone, or grouped with other alarms).
    Planned,
    /// A maintenance window held it back.
    SuppressedByWindow,
    /// The window ended with the alarm still active: notified then.
    Released,
    /// The window ended with the alarm acknowledged: not notified.
    SuppressedAcknowledged,
    /// A receiver's or the global rate limit held the message for a later digest.
    Deferred,
    /// A transient failure; tried again later.
    Retried,
    /// The relay accepted it.
    Sent,
    /// Given up (a permanent failure or too many attempts).
    Failed,
}

impl AuditEvent {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::Planned => "planned",
            AuditEvent::SuppressedByWindow => "suppressed_by_window",
            AuditEvent::Released => "released",
            AuditEvent::SuppressedAcknowledged => "suppressed_acknowledged",
            AuditEvent::Deferred => "deferred",
            AuditEvent::Retried => "retried",
            AuditEvent::Sent => "sent",
            AuditEvent::Failed => "failed",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<AuditEvent> {
        [
            AuditEvent::Planned,
            AuditEvent::SuppressedByWindow,
            AuditEvent::Released,
            AuditEvent::SuppressedAcknowledged,
            AuditEvent::Deferred,
            AuditEvent::Retried,
            AuditEvent::Sent,
            AuditEvent::Failed,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }
}

/// An entry about one alarm activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmAuditEntry {
    /// The alarm's enterprise.
    pub enterprise_id: EnterpriseId,
    /// The device.
    pub device_id: DeviceId,
    /// The alarm type.
    pub code: AlarmTypeCode,
    /// Start of the activation.
    pub first_at: UnixMillis,
    /// When.
    pub at: UnixMillis,
    /// What.
    pub event: AuditEvent,
    /// The receiver (planned entries).
    pub receiver: Option<String>,
    /// The idempotency key of the outbox message that carries it (planned entries).
    pub message_key: Option<String>,
    /// Details in words ("firing, grouped with 2 other alarms", "window 4 “Rollout”").
    pub detail: String,
}

/// An entry about one outbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAuditEntry {
    /// The message's idempotency key.
    pub message_key: String,
    /// The receiver.
    pub receiver: String,
    /// When.
    pub at: UnixMillis,
    /// What: deferred, retried, sent or failed.
    pub event: AuditEvent,
    /// The relay's reply and the `Message-ID` (sent), the reason (retried, failed), the limit
    /// (deferred).
    pub detail: String,
}

/// One line of an alarm's notification story.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AuditEntry {
    /// When.
    pub at: UnixMillis,
    /// What.
    pub event: AuditEvent,
    /// The receiver, when the entry is about one.
    pub receiver: Option<String>,
    /// The outbox message, when the entry is about one.
    pub message_key: Option<String>,
    /// Details in words.
    pub detail: String,
}

/// What one prune deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneCounts {
    /// Audit entries.
    pub audit: u64,
    /// Outbox messages (sent or given up).
    pub outbox: u64,
    /// Outbox item keys.
    pub items: u64,
}

/// `text` cut to [`MAX_AUDIT_DETAIL`] bytes at a character boundary.
pub(crate) fn bounded(text: &str) -> String {
    if text.len() <= MAX_AUDIT_DETAIL {
        return text.to_owned();
    }
    let mut end = MAX_AUDIT_DETAIL;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
