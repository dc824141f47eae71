//! `fleetpulse-loadtest`: simulates a fleet of devices speaking the fleetpulse protocol over
//! QUIC, measures throughput and acknowledgement latency, and verifies through the management API
//! that every acknowledged message was stored exactly once (SPEC LT-1 basic, LT-2, LT-3).
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
//! - [`api`]: the management API calls (login, create enterprise, stored sequences).
//! - [`report`]: the JSON [`Report`].
//! - `quic`, `fleet`, `stats`: the async shell (QUIC sessions, device tasks, phases, counters).
//!
//! # Invariants
//! - A frame counts as acknowledged only once, when a cumulative `Ack`, a `Welcome`'s `last_seq`
//!   or a `Rejected` first covers it; only acknowledged persisted frames are expected in the store.
//! - Per-device memory is bounded: at most [`device::MAX_UNACKED`] pending frames of a few words
//!   each (bodies are rebuilt when sent), plus the acknowledged persisted sequence numbers.
//! - Nothing panics on what the server sends; impossible answers are counted as errors and logged.

pub mod api;
pub mod config;
pub mod device;
mod fleet;
pub mod identity;
pub mod messages;
mod quic;
pub mod report;
pub mod schedule;
mod stats;
pub mod verify;

pub use config::{LoadConfig, MessageKind, MessageMix, parse_duration};
pub use fleet::{run, run_until};
pub use report::{Connections, Latency, Report, Verified};
