//! `fleetpulse-loadtest`: simulates a fleet of devices speaking the fleetpulse protocol over
//! QUIC, measures throughput and acknowledgement latency, and verifies through the management API
//! that every acknowledged message was stored exactly once (SPEC LT-1 basic, LT-2, LT-3), and
//! optionally injects alarms and measures their end-to-end email latency (ALM-5).
//!
//! # Code map
//! - [`config`]: [`LoadConfig`], [`MessageMix`], duration and mix parsing.
//! - [`identity`]: MAC addresses of a run (random 24-bit prefix + 24-bit device index).
//! - [`messages`]: a device's `Hello` and message bodies, deterministic per sequence number.
//! - [`schedule`]: the open-model send schedule (sans-I/O; never slips, so latency is measured
//!   from intended send times and corrected for coordinated omission).
//! - [`device`]: the per-device session state machine (sans-I/O): numbering, unacknowledged
//!   frames, resend after `Welcome`, acknowledged persisted sequence numbers.
//! - [`verify`]: the comparison of acknowledged frames with the store (pure).
//! - [`alarms`]: injected alarms: their tokens, finding tokens in emails, the latency tracker.
//! - [`smtp_sink`]: a minimal SMTP server that accepts the notification emails.
//! - [`api`]: the management API calls (login, create enterprise, stored sequences, alarm strategy,
//!   commands).
//! - [`responder`]: how a device answers server commands (sans-I/O): accepted, a delay, a fake
//!   file upload for file kinds, succeeded or failed; the ids it remembers so a resent command is
//!   answered again and never executed twice.
//! - [`upload`]: fake files (size and SHA-256 header) and their upload stream.
//! - `command_mode`: the command mode (issue commands through the API, measure round trip and
//!   bulk delivery with the times the devices record).
//! - [`report`]: the JSON [`Report`].
//! - [`peer`]: the same devices against the reference points of `scripts/perf.sh compare`: the
//!   QUIC floor (`quic_floor`) and an MQTT broker over TLS with QoS 1 (`fleetpulse-peerload`).
//! - [`https_mode`]: the HTTPS transport (`--transport https`): each device posts its frames to
//!   HTTPS ingest and keeps the same session state; the same verification.
//! - `quic`, `fleet`, `stats`: the async shell (QUIC sessions, device tasks, phases, counters).
//!
//! # Invariants
//! - A frame counts as acknowledged only once, when a cumulative `Ack`, a `Welcome`'s `last_seq`
//!   or a `Rejected` first covers it; only acknowledged persisted frames are expected in the store.
//! - Per-device memory is bounded: at most [`device::MAX_UNACKED`] pending frames of a few words
//!   each (bodies are rebuilt when sent), plus the acknowledged persisted sequence numbers.
//!   Injected alarm tokens awaiting their email are bounded by [`alarms::MAX_OUTSTANDING`].
//!   Remembered commands are bounded by [`responder::MAX_REMEMBERED`], uploads to one at a time
//!   per device, generated chunk by chunk.
//! - Nothing panics on what the server sends; impossible answers are counted as errors and logged.

pub mod alarms;
pub mod api;
mod command_mode;
pub mod config;
pub mod device;
pub mod download;
mod fleet;
pub mod https_mode;
pub mod identity;
pub mod messages;
pub mod peer;
mod quic;
pub mod report;
pub mod responder;
pub mod schedule;
pub mod smtp_sink;
pub mod stages;
mod stats;
pub mod upload;
pub mod verify;

pub use config::{CommandIssue, CommandMode, LoadConfig, MessageKind, MessageMix, Transport, parse_duration};
pub use fleet::{run, run_until};
pub use report::{AlarmEmail, CommandRun, Connections, DeviceCommands, Latency, Report, Verified};
