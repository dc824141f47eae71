//! Fresh outbox messages handed from whoever queued them straight to the outbox worker (issue
//! 20): once a message is durable in the outbox, the worker takes it from here instead of
//! reading it back from the store. The store read stays for what this does not carry: messages
//! queued before a restart, retries, what a rate limit held back, and whatever did not fit here.
//!
//! Bounded ([`HANDOFF_CAPACITY`] messages): a message that does not fit is only counted, and the
//! worker reads the store at once (the message is durable there), so nothing is lost by shedding.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use fleetpulse_proto::UnixMillis;
use fleetpulse_store::{OutboxMessage, OutboxState, OutboxStore};
use tokio::sync::Notify;

use crate::OutboxError;
use crate::outbox::{Queued, enqueue_returning};

/// Most fresh messages waiting for the worker.
pub const HANDOFF_CAPACITY: usize = 4_096;

/// The worker's side and the queuers' side of the hand-off share this.
#[derive(Debug)]
struct Shared {
    /// Fresh messages with the read epoch at the start of their enqueue and the instant they
    /// were handed over (durable).
    fresh: Mutex<VecDeque<(u64, Instant, OutboxMessage)>>,
    /// Store reads the worker completed. A copy tagged with an older epoch is dropped: a read
    /// that completed after its enqueue began may have returned it (and it may be sent already).
    epoch: AtomicU64,
    /// Messages that did not fit since the worker last looked.
    overflowed: AtomicU64,
    /// The worker's wake-up.
    wake: Arc<Notify>,
    /// Whether messages are handed over at all ([`OutboxHandoff::store_only`] does not).
    hands_over: bool,
}

/// Queues notifications in the durable outbox and hands the fresh ones to the outbox worker
/// (from [`crate::OutboxWorker::handoff`]). Cheap to clone.
#[derive(Debug, Clone)]
pub struct OutboxHandoff {
    shared: Arc<Shared>,
}

impl OutboxHandoff {
    /// A hand-off waking the worker through `wake`.
    pub(crate) fn new(wake: Arc<Notify>) -> OutboxHandoff {
        OutboxHandoff::with(wake, true)
    }

    fn with(wake: Arc<Notify>, hands_over: bool) -> OutboxHandoff {
        OutboxHandoff {
            shared: Arc::new(Shared {
                fresh: Mutex::new(VecDeque::new()),
                overflowed: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
                wake,
                hands_over,
            }),
        }
    }

    /// A hand-off that only stores and wakes `wake`: for a node of several, whose outbox worker
    /// runs only while the node holds the outbox lease (a new worker each time), so fresh
    /// messages are read back from the store by whichever node sends.
    pub fn store_only(wake: Arc<Notify>) -> OutboxHandoff {
        OutboxHandoff::with(wake, false)
    }

    /// Queues notifications in the durable outbox like [`crate::enqueue`] (one transaction per
    /// store batch; a key queued before is left alone), then hands the newly queued ones that
    /// are due to the worker and wakes it. Returns how many were new.
    ///
    /// # Errors
    ///
    /// The store failed; what an earlier store batch of the same call queued is durable and
    /// handed over.
    pub async fn enqueue(&self, outbox: &dyn OutboxStore, queued: Vec<Queued>) -> Result<usize, OutboxError> {
        let mut added = 0;
        // Loaded before the store call: a store read completing after this may see the messages.
        let epoch = self.shared.epoch.load(Ordering::SeqCst);
        let result = enqueue_returning(outbox, queued, |fresh| {
            added += fresh.len();
            self.hand_over(epoch, fresh);
        })
        .await;
        self.wake();
        result.map(|()| added)
    }

    /// Wakes the worker (after messages were queued some other way).
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Hands durable, newly queued messages to the worker; those not due yet stay for the store
    /// read, those that do not fit are counted.
    fn hand_over(&self, epoch: u64, messages: Vec<OutboxMessage>) {
        if !self.shared.hands_over {
            return;
        }
        let now = UnixMillis::now();
        let durable = Instant::now();
        let mut fresh = self.shared.fresh.lock().unwrap_or_else(PoisonError::into_inner);
        for m in messages {
            debug_assert!(m.state == OutboxState::Pending && m.attempts == 0, "only fresh messages are handed over");
            if m.next_attempt_at > now {
                continue;
            }
            if fresh.len() < HANDOFF_CAPACITY {
                fresh.push_back((epoch, durable, m));
            } else {
                self.shared.overflowed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes up to `max` fresh messages, oldest first, each with the instant it was handed over
    /// (durable), and whether some were dropped because a store read completed since their
    /// enqueue began (the store read that follows finds them).
    pub(crate) fn take(&self, max: usize) -> (Vec<(Instant, OutboxMessage)>, bool) {
        let epoch = self.shared.epoch.load(Ordering::SeqCst);
        let mut fresh = self.shared.fresh.lock().unwrap_or_else(PoisonError::into_inner);
        let n = fresh.len().min(max);
        let mut stale = false;
        let taken = fresh
            .drain(..n)
            .filter_map(|(e, durable, m)| {
                stale |= e != epoch;
                (e == epoch).then_some((durable, m))
            })
            .collect();
        (taken, stale)
    }

    /// Marks a completed store read (called right after it returned, before its messages are
    /// planned).
    pub(crate) fn read_completed(&self) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Forgets every message handed over so far: the worker is about to read the store, which
    /// holds all of them (each was durable before it was handed over).
    pub(crate) fn clear(&self) {
        self.shared.fresh.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// How many messages did not fit since the last call.
    pub(crate) fn take_overflowed(&self) -> u64 {
        self.shared.overflowed.swap(0, Ordering::Relaxed)
    }
}
