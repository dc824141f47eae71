//! The per-device session state machine (sans-I/O): sequence numbering, the unacknowledged
//! frames, what to (re)send after a `Welcome`, and the acknowledged persisted sequence numbers
//! that verification compares with the store.
//!
//! The async shell feeds it the schedule's frames ([`DeviceSession::push`]), the server's
//! `Welcome`/`Ack`/`Rejected` ([`DeviceSession::handle_welcome`], [`DeviceSession::handle_ack`],
//! [`DeviceSession::handle_rejected`]) and connection loss ([`DeviceSession::handle_disconnect`]),
//! and writes what [`DeviceSession::poll_transmit`] hands out. Times are microseconds since the
//! start of the run; every resolved frame reports its latency from its *intended* send time.

use std::collections::VecDeque;

use crate::config::MessageKind;
use crate::verify::SeqRuns;

/// Most frames a device keeps unacknowledged; beyond it the schedule's frames stay owed.
pub const MAX_UNACKED: usize = 10_000;

/// A frame generated and not yet acknowledged. Its body is rebuilt from these fields when it is
/// (re)sent, so this is all a pending frame costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingFrame {
    /// Sequence number.
    pub seq: u64,
    /// When the open-model schedule intended to send it.
    pub intended_us: u64,
    /// What it carries.
    pub kind: MessageKind,
}

/// A frame to write now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// The frame.
    pub frame: PendingFrame,
    /// Whether it was already written on an earlier connection.
    pub resend: bool,
}

/// Something a correct server never says; the session survives it and the shell logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// An `Ack` covered sequence numbers never sent; only the sent ones were taken as acked.
    AckBeyondSent {
        /// The acknowledged sequence number.
        ack: u64,
        /// The highest sequence number ever sent.
        highest_sent: u64,
    },
    /// A `Welcome` claimed frames this device never sent.
    WelcomeBeyondSent {
        /// The server's `last_seq`.
        last_seq: u64,
        /// The highest sequence number ever sent.
        highest_sent: u64,
    },
    /// A `Rejected` named a frame that is not pending (never sent or already resolved).
    RejectedUnknown {
        /// The rejected sequence number.
        seq: u64,
    },
}

/// What one server message resolved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// Frames now known to be safe (including rejected ones).
    pub acked: u64,
    /// Of those, frames the server rejected as invalid.
    pub rejected: u64,
    /// Set if the server said something impossible.
    pub anomaly: Option<Anomaly>,
}

/// Session state of one device across its connections.
#[derive(Debug)]
pub struct DeviceSession {
    /// Sequence number of the next frame pushed.
    next_seq: u64,
    /// Highest sequence number ever handed out for sending.
    highest_sent: u64,
    /// While a session is up: frames up to this seq were handed out on the current connection.
    cursor: Option<u64>,
    /// Unacknowledged frames in sequence order.
    pending: VecDeque<PendingFrame>,
    /// Acknowledged sequence numbers of persisted kinds.
    acked_persisted: SeqRuns,
}

impl Default for DeviceSession {
    fn default() -> Self {
        DeviceSession::new()
    }
}

impl DeviceSession {
    /// A device that has sent nothing yet.
    pub fn new() -> Self {
        DeviceSession {
            next_seq: 1,
            highest_sent: 0,
            cursor: None,
            pending: VecDeque::new(),
            acked_persisted: SeqRuns::default(),
        }
    }

    /// Whether the unacknowledged window is full.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= MAX_UNACKED
    }

    /// Whether every frame pushed so far is resolved.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// Number of unacknowledged frames.
    pub fn unacked(&self) -> usize {
        self.pending.len()
    }

    /// The lowest sequence number not acknowledged yet: every frame below it is resolved.
    pub fn first_unacked(&self) -> u64 {
        self.pending.front().map_or(self.next_seq, |f| f.seq)
    }

    /// Whether a session is up (a `Welcome` arrived and the connection was not lost since).
    pub fn is_connected(&self) -> bool {
        self.cursor.is_some()
    }

    /// Acknowledged sequence numbers of persisted kinds.
    pub fn acked_persisted(&self) -> &SeqRuns {
        &self.acked_persisted
    }

    /// Consumes the session, keeping what verification needs.
    pub fn into_acked_persisted(self) -> SeqRuns {
        self.acked_persisted
    }

    /// Queues a new frame and returns its sequence number, `None` if the window is full.
    pub fn push(&mut self, kind: MessageKind, intended_us: u64) -> Option<u64> {
        if self.is_full() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back(PendingFrame { seq, intended_us, kind });
        Some(seq)
    }

    /// A session started: the server holds every frame up to `last_seq`. Those are resolved,
    /// numbering continues after the highest of `last_seq` and what was already numbered, and
    /// every remaining pending frame will be (re)sent in order.
    pub fn handle_welcome(&mut self, last_seq: u64, now_us: u64, record: impl FnMut(u64)) -> Resolved {
        let mut resolved = self.resolve_up_to(last_seq.min(self.highest_sent), now_us, record);
        if last_seq > self.highest_sent && self.next_seq > 1 {
            resolved.anomaly = Some(Anomaly::WelcomeBeyondSent { last_seq, highest_sent: self.highest_sent });
        }
        self.next_seq = self.next_seq.max(last_seq + 1);
        self.cursor = Some(0);
        resolved
    }

    /// The next frame to write on the current connection, if any. Handing it out marks it sent.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let cursor = self.cursor?;
        let index = self.pending.partition_point(|f| f.seq <= cursor);
        let frame = *self.pending.get(index)?;
        self.cursor = Some(frame.seq);
        let resend = frame.seq <= self.highest_sent;
        self.highest_sent = self.highest_sent.max(frame.seq);
        Some(Transmit { frame, resend })
    }

    /// A cumulative `Ack`: every sent frame up to `seq` is safe.
    pub fn handle_ack(&mut self, seq: u64, now_us: u64, record: impl FnMut(u64)) -> Resolved {
        let mut resolved = self.resolve_up_to(seq.min(self.highest_sent), now_us, record);
        if seq > self.highest_sent {
            resolved.anomaly = Some(Anomaly::AckBeyondSent { ack: seq, highest_sent: self.highest_sent });
        }
        resolved
    }

    /// The server rejected frame `seq` as invalid: it is resolved but will not be stored.
    pub fn handle_rejected(&mut self, seq: u64, now_us: u64, mut record: impl FnMut(u64)) -> Resolved {
        let found = self.pending.binary_search_by_key(&seq, |f| f.seq).ok().filter(|_| seq <= self.highest_sent);
        let Some(index) = found else {
            return Resolved { anomaly: Some(Anomaly::RejectedUnknown { seq }), ..Resolved::default() };
        };
        let frame = self.pending.remove(index).expect("index came from a search of the same deque");
        record(now_us.saturating_sub(frame.intended_us));
        Resolved { acked: 1, rejected: 1, anomaly: None }
    }

    /// The connection was lost: nothing more is sent until the next `Welcome`.
    pub fn handle_disconnect(&mut self) {
        self.cursor = None;
    }

    fn resolve_up_to(&mut self, seq: u64, now_us: u64, mut record: impl FnMut(u64)) -> Resolved {
        let mut resolved = Resolved::default();
        while let Some(frame) = self.pending.front().filter(|f| f.seq <= seq).copied() {
            self.pending.pop_front();
            record(now_us.saturating_sub(frame.intended_us));
            if frame.kind.is_persisted() {
                self.acked_persisted.push(frame.seq);
            }
            resolved.acked += 1;
        }
        // Give back the memory of a backlog once it is gone.
        if self.pending.is_empty() && self.pending.capacity() > 64 {
            self.pending.shrink_to(16);
        }
        resolved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageKind::{Alarm, Heartbeat, Resource, Status};

    fn sent_seqs(s: &mut DeviceSession) -> Vec<(u64, bool)> {
        std::iter::from_fn(|| s.poll_transmit()).map(|t| (t.frame.seq, t.resend)).collect()
    }

    fn ignore(_: u64) {}

    fn seqs(runs: &SeqRuns) -> Vec<u64> {
        runs.iter().collect()
    }

    #[test]
    fn new_device_numbers_from_one_and_acks_cumulatively() {
        let mut s = DeviceSession::new();
        assert_eq!(s.poll_transmit(), None, "nothing is sent before Welcome");
        assert_eq!(s.handle_welcome(0, 0, ignore), Resolved::default());
        for (i, kind) in [Status, Heartbeat, Resource, Alarm].into_iter().enumerate() {
            assert_eq!(s.push(kind, i as u64 * 10), Some(i as u64 + 1));
        }
        assert_eq!(sent_seqs(&mut s), [(1, false), (2, false), (3, false), (4, false)]);
        let r = s.handle_ack(3, 100, ignore);
        assert_eq!((r.acked, r.rejected, r.anomaly), (3, 0, None));
        assert_eq!(seqs(s.acked_persisted()), [1, 3], "heartbeat 2 is acked but not persisted");
        assert_eq!(s.unacked(), 1);
        assert_eq!(s.handle_ack(2, 100, ignore).acked, 0, "an old ack resolves nothing");
        assert_eq!(s.handle_ack(4, 100, ignore).acked, 1);
        assert!(s.is_idle());
        assert_eq!(seqs(&s.into_acked_persisted()), [1, 3, 4]);
    }

    #[test]
    fn one_ack_records_every_frame_from_its_intended_time() {
        let mut s = DeviceSession::new();
        s.handle_welcome(0, 0, ignore);
        for t in [0, 100_000, 200_000] {
            s.push(Status, t);
        }
        sent_seqs(&mut s);
        let mut latencies = Vec::new();
        s.handle_ack(3, 1_000_000, |l| latencies.push(l));
        assert_eq!(latencies, [1_000_000, 900_000, 800_000]);
    }

    #[test]
    fn reconnect_resends_what_the_server_lacks_and_keeps_numbering() {
        let mut s = DeviceSession::new();
        s.handle_welcome(0, 0, ignore);
        for t in 0..5 {
            s.push(Status, t);
        }
        assert_eq!(sent_seqs(&mut s).len(), 5);
        s.handle_ack(2, 10, ignore);
        s.handle_disconnect();
        assert!(!s.is_connected());
        assert_eq!(s.push(Resource, 6), Some(6), "the schedule goes on while disconnected");
        assert_eq!(s.poll_transmit(), None);

        // The server had durably applied 3 before the connection dropped.
        let mut latencies = Vec::new();
        let r = s.handle_welcome(3, 50, |l| latencies.push(l));
        assert_eq!((r.acked, r.anomaly), (1, None));
        assert_eq!(latencies, [48], "frame 3 was intended at t=2");
        assert_eq!(sent_seqs(&mut s), [(4, true), (5, true), (6, false)]);
        assert_eq!(s.push(Status, 7), Some(7));
        assert_eq!(sent_seqs(&mut s), [(7, false)]);
        s.handle_ack(7, 60, ignore);
        assert_eq!(seqs(s.acked_persisted()), [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn welcome_covering_everything_resends_nothing() {
        let mut s = DeviceSession::new();
        s.handle_welcome(0, 0, ignore);
        s.push(Status, 0);
        s.push(Heartbeat, 0);
        sent_seqs(&mut s);
        s.handle_disconnect();
        assert_eq!(s.handle_welcome(2, 5, ignore).acked, 2);
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(s.push(Status, 5), Some(3));
        assert_eq!(seqs(s.acked_persisted()), [1]);
    }

    #[test]
    fn rejected_frames_count_as_acked_but_not_stored() {
        let mut s = DeviceSession::new();
        s.handle_welcome(0, 0, ignore);
        for _ in 0..3 {
            s.push(Alarm, 0);
        }
        sent_seqs(&mut s);
        let mut latencies = Vec::new();
        assert_eq!(s.handle_rejected(2, 7, |l| latencies.push(l)), Resolved { acked: 1, rejected: 1, anomaly: None });
        assert_eq!(latencies, [7]);
        assert_eq!(s.handle_rejected(2, 8, ignore).anomaly, Some(Anomaly::RejectedUnknown { seq: 2 }));
        assert_eq!(s.handle_ack(3, 9, ignore).acked, 2);
        assert_eq!(seqs(s.acked_persisted()), [1, 3]);
    }

    #[test]
    fn a_first_welcome_with_history_continues_after_it() {
        let mut s = DeviceSession::new();
        let r = s.handle_welcome(41, 0, ignore);
        assert_eq!(r, Resolved::default(), "a device known from before is not an anomaly");
        assert_eq!(s.push(Status, 0), Some(42));
    }

    #[test]
    fn impossible_acks_are_flagged_and_bounded_by_what_was_sent() {
        let mut s = DeviceSession::new();
        s.handle_welcome(0, 0, ignore);
        s.push(Status, 0);
        s.push(Status, 0);
        assert!(s.poll_transmit().is_some());
        let r = s.handle_ack(5, 1, ignore);
        assert_eq!(r.acked, 1, "frame 2 was never sent, so it is not taken as acked");
        assert_eq!(r.anomaly, Some(Anomaly::AckBeyondSent { ack: 5, highest_sent: 1 }));
        s.handle_disconnect();
        let r = s.handle_welcome(9, 2, ignore);
        assert_eq!(r.anomaly, Some(Anomaly::WelcomeBeyondSent { last_seq: 9, highest_sent: 1 }));
        assert_eq!(s.push(Status, 3), Some(10));
    }

    #[test]
    fn the_window_is_bounded() {
        let mut s = DeviceSession::new();
        for _ in 0..MAX_UNACKED {
            assert!(s.push(Heartbeat, 0).is_some());
        }
        assert!(s.is_full());
        assert_eq!(s.push(Heartbeat, 0), None);
        s.handle_welcome(0, 0, ignore);
        assert!(s.poll_transmit().is_some());
        s.handle_ack(1, 0, ignore);
        assert!(!s.is_full());
        assert_eq!(s.push(Heartbeat, 0), Some(MAX_UNACKED as u64 + 1));
    }
}
