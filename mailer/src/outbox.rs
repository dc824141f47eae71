//! The durable outbox worker (ALM-5): notifications are queued as formatted messages under their
//! idempotency key in the store's outbox, and this worker sends the due ones, recording every
//! attempt. A transient failure (4xx, connection) is retried with exponential backoff up to a
//! limit; a permanent one (5xx) is not retried. Rate limits per receiver and global (governor)
//! defer what is over the limit to a later pass instead of dropping it.
//!
//! Delivery is at least once: a crash between the SMTP server's acceptance and the `Sent` record
//! sends the message again after the restart (at most once more per crash), with the same
//! `Message-ID`, so receivers can tell.

use std::num::NonZeroU32;
use std::time::Duration;

use fleetpulse_proto::{EnterpriseId, UnixMillis};
use fleetpulse_store::{NewOutboxMessage, OutboxState, Store, StoreError};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use lettre::Message;

use crate::{MailError, Mailer};

/// Settings of the outbox worker.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Messages taken per pass.
    pub batch: u32,
    /// Pause between passes when nothing is due.
    pub poll_interval: Duration,
    /// Delay before the first retry; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest delay between retries.
    pub backoff_max: Duration,
    /// Attempts after which a transiently failing message is given up.
    pub max_attempts: u32,
    /// Messages per receiver per minute.
    pub per_receiver_per_minute: NonZeroU32,
    /// Messages per second over all receivers.
    pub global_per_second: NonZeroU32,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        let n = |v| NonZeroU32::new(v).expect("nonzero constant");
        OutboxConfig {
            batch: 100,
            poll_interval: Duration::from_secs(1),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(15 * 60),
            max_attempts: 12,
            per_receiver_per_minute: n(10),
            global_per_second: n(50),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Accepted by the SMTP server.
    pub sent: u32,
    /// Failed transiently, retried later.
    pub retried: u32,
    /// Given up (permanent failure or too many attempts).
    pub failed: u32,
    /// Left for a later pass by a rate limit.
    pub deferred: u32,
}

/// Why the worker could not make progress.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The store failed.
    #[error("outbox store: {0}")]
    Store(#[from] StoreError),
    /// The message could not be formatted for the outbox.
    #[error("outbox message: {0}")]
    Message(String),
}

/// Queues a rendered message for `receiver` under its idempotency key; false if the key was
/// queued before (nothing changes then).
pub async fn enqueue(
    store: &Store,
    key: &str,
    enterprise_id: EnterpriseId,
    receiver: &str,
    message: &Message,
    not_before: UnixMillis,
) -> Result<bool, OutboxError> {
    let payload = String::from_utf8(message.formatted())
        .map_err(|e| OutboxError::Message(format!("formatted message is not UTF-8: {e}")))?;
    let new =
        NewOutboxMessage { key: key.to_owned(), enterprise_id, receiver: receiver.to_owned(), payload, not_before };
    Ok(store.entities.enqueue_outbox(new, UnixMillis::now()).await?)
}

/// Sends due outbox messages.
#[derive(Debug)]
pub struct OutboxWorker {
    store: Store,
    mailer: Mailer,
    config: OutboxConfig,
    per_receiver: DefaultKeyedRateLimiter<String>,
    global: DefaultDirectRateLimiter,
}

impl OutboxWorker {
    /// A worker sending through `mailer`.
    pub fn new(store: Store, mailer: Mailer, config: OutboxConfig) -> OutboxWorker {
        OutboxWorker {
            per_receiver: RateLimiter::keyed(Quota::per_minute(config.per_receiver_per_minute)),
            global: RateLimiter::direct(Quota::per_second(config.global_per_second)),
            store,
            mailer,
            config,
        }
    }

    /// The delay before the retry after `attempts` attempts.
    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.config.backoff_base.saturating_mul(factor).min(self.config.backoff_max)
    }

    /// One pass over the messages due at `now`.
    pub async fn run_once(&self, now: UnixMillis) -> Result<PassStats, OutboxError> {
        let mut stats = PassStats::default();
        for m in self.store.entities.due_outbox(now, self.config.batch).await? {
            if self.per_receiver.check_key(&m.receiver).is_err() || self.global.check().is_err() {
                stats.deferred += 1;
                continue;
            }
            let (outcome, next, error) = match self.mailer.send_raw(&m.receiver, m.payload.as_bytes()).await {
                Ok(()) => {
                    stats.sent += 1;
                    (OutboxState::Sent, now, None)
                }
                Err(MailError::Transient(e)) if m.attempts + 1 < self.config.max_attempts => {
                    stats.retried += 1;
                    let delay = i64::try_from(self.backoff(m.attempts + 1).as_millis()).unwrap_or(i64::MAX);
                    tracing::warn!(message = "Notification not sent; retrying.", id = m.id, error = %e, delay_ms = delay);
                    (OutboxState::Pending, UnixMillis(now.0.saturating_add(delay)), Some(e))
                }
                Err(e) => {
                    stats.failed += 1;
                    tracing::error!(message = "Notification given up.", id = m.id, error = %e);
                    (OutboxState::Failed, now, Some(e.to_string()))
                }
            };
            self.store.entities.record_outbox_attempt(m.id, outcome, now, next, error).await?;
        }
        Ok(stats)
    }

    /// Runs passes until `stop` turns true; store failures are logged and retried.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let pause = match self.run_once(UnixMillis::now()).await {
                Ok(stats) if stats.sent + stats.retried + stats.failed > 0 => Duration::ZERO,
                Ok(_) => self.config.poll_interval,
                Err(error) => {
                    tracing::error!(message = "Outbox pass failed; retrying.", %error);
                    self.config.poll_interval
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
