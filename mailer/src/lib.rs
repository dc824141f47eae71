//! Mail of fleetpulse (SPEC ALM-5 and the account emails): renders what the durable outbox keeps (alarm
//! notifications the alarm service queues, account emails the admin API queues) as emails, sends
//! them over SMTP with lettre, and runs the outbox worker that sends the due ones.
//!
//! Rendering ([`render`], [`render_account`]) is a pure function of the stored payload and a
//! [`RenderContext`] (only the `Date` header is the time of rendering); sending ([`Mailer::send`])
//! classifies every failure as [`SendError::Transient`] (retry with backoff) or
//! [`SendError::Permanent`] (do not retry), which is all the [`OutboxWorker`] needs to know.
//!
//! *Architecture invariant*: the only crate that speaks SMTP, and it evaluates no alarms. The
//! alarm service (`fleetpulse-alarm-service`, which depends on this crate, never the reverse)
//! produces [`OutboxPayload`]s and queues them with [`enqueue`]; of the alarm engine this crate
//! only uses the idempotency key's hex form (the `Message-ID`).

pub mod account_email;
mod audit;
mod config;
mod dispatch;
mod handoff;
mod metrics;
pub mod outbox;
pub mod payload;
mod pipelining;
mod receiver;
mod render;
mod send;
mod smtp_pool;

pub use account_email::{AccountEmail, AccountEmailPayload, StoredPayload, render_account};
pub use config::{DEFAULT_CONNECTIONS, MAX_CONNECTIONS, Security, SmtpConfig};
pub use dispatch::OUTCOME_QUEUE;
pub use handoff::{HANDOFF_CAPACITY, OutboxHandoff};
pub use lettre::Message;
pub use lettre::message::Mailbox;
pub use metrics::OutboxMetrics;
pub use outbox::{OutboxConfig, OutboxWorker, PassStats, Queued, enqueue};
pub use payload::{MAX_ITEMS_PER_MESSAGE, OutboxPayload, PAYLOAD_VERSION, PayloadIncident, PayloadItem, PayloadStage};
pub use receiver::{MAX_RECEIVER_BYTES, parse_receiver};
pub use render::{MAX_DIGEST_ITEMS, MAX_SUBJECT_DESCRIPTION_CHARS, RenderContext, render};
pub use send::Mailer;
pub use smtp_pool::{IDLE_TIMEOUT, SendTimings};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// An address (the configured sender or a receiver) is not a valid mailbox.
    #[error("invalid {what} address {address:?}: {source}")]
    Address {
        /// Which address: "sender" or "receiver".
        what: &'static str,
        /// The text that failed to parse.
        address: String,
        /// Why it failed.
        source: lettre::address::AddressError,
    },
    /// A receiver address the mailer cannot send to ([`parse_receiver`]).
    #[error("{address:?} is not an email address the mailer can send to: {why}")]
    Receiver {
        /// The text that was refused.
        address: String,
        /// Why.
        why: String,
    },
    /// lettre refused to build the message (e.g. a missing header).
    #[error("cannot build the message: {0}")]
    Message(#[from] lettre::error::Error),
    /// The SMTP transport cannot be set up from the configuration (e.g. TLS parameters).
    #[error("cannot set up the SMTP transport: {0}")]
    Transport(String),
    /// Sending failed in a way that may succeed later: a 4xx reply, a connection failure or a
    /// timeout. Retry with backoff.
    #[error("transient SMTP failure: {0}")]
    Transient(String),
    /// The server rejected the message for good (5xx reply) or the client cannot send it at all.
    /// Do not retry.
    #[error("permanent SMTP failure: {0}")]
    Permanent(String),
    /// The store failed while queueing, reading or recording outbox messages.
    #[error("outbox store: {0}")]
    Store(#[from] fleetpulse_store::StoreError),
    /// A payload could not be read back from the outbox (too large, not JSON, unknown kind or
    /// version).
    #[error("outbox message: {0}")]
    Payload(String),
}

/// What [`Mailer::send`] fails with: always [`MailError::Transient`] or [`MailError::Permanent`].
///
/// An alias rather than a second enum, so that the crate has one error type; match it as
/// `SendError::Transient(_)` / `SendError::Permanent(_)`.
pub type SendError = MailError;

/// Why the outbox could not make progress: always [`MailError::Store`] or [`MailError::Payload`].
///
/// An alias like [`SendError`], so that the crate has one error type.
pub type OutboxError = MailError;

impl MailError {
    /// Whether sending again later may succeed (only [`MailError::Transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, MailError::Transient(_))
    }
}
