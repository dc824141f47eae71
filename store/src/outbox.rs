//! The durable notification outbox (`OutboxStore`, ALM-5): one message per idempotency key,
//! the item keys of what each notified, due messages, attempts, and the redaction of account
//! emails once sent.

use async_trait::async_trait;
use fleetpulse_proto::{EnterpriseId, UnixMillis};
use serde::Serialize;

use crate::{Result, StoreError};

/// Most messages one [`OutboxStore::enqueue_outbox_batch`] may queue.
pub const MAX_OUTBOX_BATCH: usize = 1_000;

/// Most item keys one [`OutboxStore::outbox_known_items`] may ask about.
pub const MAX_OUTBOX_ITEM_QUERY: usize = 10_000;

/// Most receivers one [`OutboxStore::due_outbox_except`] may leave out.
pub const MAX_OUTBOX_EXCEPT: usize = 1_000;

/// The durable outbox of notifications and account emails.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Queues a notification in the durable outbox with its item keys; false (and nothing
    /// changes, item keys included) if a message with the same idempotency key was queued before.
    ///
    /// A batch of one: see [`OutboxStore::enqueue_outbox_batch`].
    async fn enqueue_outbox(&self, message: NewOutboxMessage, now: UnixMillis) -> Result<bool> {
        let queued = self.enqueue_outbox_batch(vec![message], now).await?;
        queued.first().copied().ok_or_else(|| StoreError::Backend("the outbox batch answered no message".into()))
    }
    /// Queues notifications in the durable outbox, all in one transaction; returns per message
    /// (in order) whether it was newly queued.
    ///
    /// A message whose idempotency key was queued before, or appears earlier in the batch, is
    /// not queued (false) and its item keys are not recorded. A queued message records its item
    /// keys, except those already recorded (by an earlier message or earlier in the batch).
    /// [`StoreError::InvalidInput`] (and nothing changes) for more than [`MAX_OUTBOX_BATCH`]
    /// messages.
    async fn enqueue_outbox_batch(&self, messages: Vec<NewOutboxMessage>, now: UnixMillis) -> Result<Vec<bool>> {
        Ok(self.enqueue_outbox_batch_ids(messages, now).await?.iter().map(Option::is_some).collect())
    }
    /// [`OutboxStore::enqueue_outbox_batch`], answering per message (in order) the id it was
    /// queued under, or `None` if it was not queued; so that the sender can take a fresh message
    /// straight from whoever queued it once it is durable, without reading it back.
    async fn enqueue_outbox_batch_ids(
        &self,
        messages: Vec<NewOutboxMessage>,
        now: UnixMillis,
    ) -> Result<Vec<Option<u64>>> {
        self.enqueue_outbox_batch_audited(messages, Vec::new(), now).await
    }
    /// [`OutboxStore::enqueue_outbox_batch_ids`] with each message's alarm audit entries
    /// (`audit[i]` belongs to `messages[i]`; a shorter list leaves the last messages without),
    /// recorded in the same transaction as the messages and only for the messages newly queued:
    /// an outbox row and its "planned" entries are durable together (one commit) or not at all,
    /// and a batch queued again (a retry after an error) records no entry twice. Entries beyond
    /// an activation's bound are left out as in
    /// [`crate::NotificationAuditStore::record_alarm_audit`]. [`StoreError::InvalidInput`] (and
    /// nothing changes) for more than [`MAX_OUTBOX_BATCH`] messages or more than
    /// [`crate::MAX_AUDIT_BATCH`] entries in all.
    async fn enqueue_outbox_batch_audited(
        &self,
        messages: Vec<NewOutboxMessage>,
        audit: Vec<Vec<crate::AlarmAuditEntry>>,
        now: UnixMillis,
    ) -> Result<Vec<Option<u64>>>;
    /// Which of the given alarm item keys a queued outbox message recorded (each once, in any
    /// order). [`StoreError::InvalidInput`] for more than [`MAX_OUTBOX_ITEM_QUERY`] keys.
    async fn outbox_known_items(&self, keys: &[String]) -> Result<Vec<String>>;
    /// Pending messages whose next attempt is due at `now`, oldest first (by next attempt, then
    /// in the order queued), at most `limit`.
    async fn due_outbox(&self, now: UnixMillis, limit: u32) -> Result<Vec<OutboxMessage>> {
        self.due_outbox_except(now, limit, &[]).await
    }
    /// Like [`OutboxStore::due_outbox`], leaving out messages to the given receivers (those the
    /// caller cannot send to right now); at most [`MAX_OUTBOX_EXCEPT`] receivers.
    ///
    /// The limit applies to what is left, so a receiver with a large backlog left out does not
    /// crowd the others out of the batch. Receivers compare exactly (case-sensitive); repeated
    /// or unknown ones are harmless. [`StoreError::InvalidInput`] for more than
    /// [`MAX_OUTBOX_EXCEPT`] receivers.
    async fn due_outbox_except(&self, now: UnixMillis, limit: u32, except: &[String]) -> Result<Vec<OutboxMessage>>;
    /// Records an attempt's outcome: `Sent`, `Failed` (permanent), or `Pending` again with the
    /// time of the next attempt (transient). Counts the attempt; only pending messages change.
    async fn record_outbox_attempt(
        &self,
        id: u64,
        outcome: OutboxState,
        at: UnixMillis,
        next_attempt_at: UnixMillis,
        error: Option<String>,
    ) -> Result<Option<OutboxMessage>>;
    /// Records the outcomes of several attempts in one transaction (like
    /// [`OutboxStore::record_outbox_attempt`] for each); at most [`MAX_OUTBOX_BATCH`].
    async fn record_outbox_attempts(&self, attempts: Vec<OutboxAttempt>) -> Result<()> {
        self.record_outbox_attempts_audited(attempts, Vec::new()).await
    }
    /// [`OutboxStore::record_outbox_attempts`] with the notification audit's entries of these
    /// attempts (sent, retried, given up; and any other message entries, e.g. deferrals),
    /// appended in the same transaction: the outcomes and their entries are durable together
    /// (one commit) or not at all, so a failed commit tried again records no entry twice and
    /// an outcome is never recorded without its entries. Entries beyond a message's bound are
    /// left out as in [`crate::NotificationAuditStore::record_message_audit`].
    /// [`StoreError::InvalidInput`] (and nothing changes) for more than [`MAX_OUTBOX_BATCH`]
    /// attempts or more than [`crate::MAX_AUDIT_BATCH`] entries.
    async fn record_outbox_attempts_audited(
        &self,
        attempts: Vec<OutboxAttempt>,
        audit: Vec<crate::MessageAuditEntry>,
    ) -> Result<()>;
    /// Replaces the payload of an outbox message that is no longer pending (sent or given up),
    /// to remove the secrets an account email carried (reset link, login code, temporary
    /// password). False (and nothing changes) for an unknown or still pending message, so a
    /// message that may still be sent keeps what it needs.
    async fn redact_outbox_payload(&self, id: u64, payload: String) -> Result<bool>;
}

/// Where a notification in the outbox stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Waiting for its (next) attempt.
    Pending,
    /// Accepted by the SMTP server.
    Sent,
    /// Given up on (a permanent failure).
    Failed,
}

impl OutboxState {
    /// Name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
        }
    }

    /// Inverse of [`OutboxState::as_str`].
    pub fn parse(s: &str) -> Option<OutboxState> {
        match s {
            "pending" => Some(OutboxState::Pending),
            "sent" => Some(OutboxState::Sent),
            "failed" => Some(OutboxState::Failed),
            _ => None,
        }
    }
}

/// The outcome of one attempt at sending an outbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxAttempt {
    /// The message.
    pub id: u64,
    /// `Sent`, `Failed` (permanent) or `Pending` again (transient).
    pub outcome: OutboxState,
    /// When the attempt was made.
    pub at: UnixMillis,
    /// When to try again (`Pending` only).
    pub next_attempt_at: UnixMillis,
    /// Why it failed.
    pub error: Option<String>,
}

/// A notification to send, as queued in the durable outbox (ALM-5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxMessage {
    /// Idempotency key (hex): one message per (alarm, stage, receiver); a second enqueue of the
    /// same key is ignored.
    pub key: String,
    /// The enterprise the notification is about.
    pub enterprise_id: EnterpriseId,
    /// Receiver address.
    pub receiver: String,
    /// The notification, serialized by the sender (opaque to the store).
    pub payload: String,
    /// Earliest time of the first attempt.
    pub not_before: UnixMillis,
    /// Idempotency keys of the alarm items the message carries; recorded with the message so
    /// that a later message can leave out items already queued
    /// ([`crate::OutboxStore::outbox_known_items`]).
    pub item_keys: Vec<String>,
}

/// A notification in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct OutboxMessage {
    /// Identifier.
    pub id: u64,
    /// Idempotency key.
    pub key: String,
    /// The enterprise.
    pub enterprise_id: EnterpriseId,
    /// Receiver address.
    pub receiver: String,
    /// The serialized notification.
    pub payload: String,
    /// Where it stands.
    pub state: OutboxState,
    /// Attempts made.
    pub attempts: u32,
    /// Time of the next attempt (pending only).
    pub next_attempt_at: UnixMillis,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: UnixMillis,
    /// When the SMTP server accepted it.
    pub sent_at: Option<UnixMillis>,
}
