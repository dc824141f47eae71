//! A session's acknowledgement slot: where its shard leaves the answers to the session's reads,
//! instead of a `oneshot` per read and an item per read in the writer's queue (issue 14).
//!
//! The session's reader takes a [`ReadTicket`] per read it hands to the shard (at most
//! [`MAX_READS_IN_FLIGHT`] unanswered at once); the shard answers the ticket once the read's
//! frames are safe. The slot keeps only the highest acknowledged seq, how many reads were
//! answered and whether any failed, so the writer sends one cumulative `Ack` for every read
//! answered since its last write, whatever their number.
//!
//! *Invariant*: a ticket is answered exactly once; a ticket dropped unanswered (the shard went
//! away) counts as a failure, as a dropped `oneshot` sender did.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::shard::AckResult;

/// Reads a session may have handed to its shard and not yet had answered.
pub(crate) const MAX_READS_IN_FLIGHT: u64 = 256;

/// The answers to one session's reads; shared by the session and its tickets.
#[derive(Debug, Default)]
pub(crate) struct AckSlot {
    /// Highest seq the shard acknowledged.
    acked: AtomicU64,
    /// Tickets taken (reads handed to the shard); written by the reader only.
    taken: AtomicU64,
    /// Tickets answered, `Ok` or `Err`.
    answered: AtomicU64,
    /// A read could not be made safe: the session must end (the device resends).
    failed: AtomicBool,
    /// The writer's wake-up: notified (one permit) on every answer.
    answers: Notify,
    /// The reader's wake-up when it waits for room: notified (one permit) on every answer.
    room: Notify,
}

/// What the slot says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotState {
    /// Highest acknowledged seq (0: none yet).
    pub acked: u64,
    /// Reads handed to the shard and not answered.
    pub in_flight: u64,
    /// A read failed.
    pub failed: bool,
}

impl AckSlot {
    /// A slot with nothing in flight.
    pub(crate) fn new() -> Arc<AckSlot> {
        Arc::new(AckSlot::default())
    }

    /// A ticket for the next read (the reader's; one reader per slot).
    pub(crate) fn ticket(self: &Arc<Self>) -> ReadTicket {
        self.taken.fetch_add(1, Ordering::SeqCst);
        ReadTicket { slot: Some(self.clone()) }
    }

    /// The slot's state. `answered` is read before `acked`, and a ticket raises `acked` before it
    /// counts as answered, so every answer counted is in the `acked` returned.
    pub(crate) fn state(&self) -> SlotState {
        let answered = self.answered.load(Ordering::SeqCst);
        let acked = self.acked.load(Ordering::SeqCst);
        let taken = self.taken.load(Ordering::SeqCst);
        SlotState { acked, in_flight: taken.saturating_sub(answered), failed: self.failed.load(Ordering::SeqCst) }
    }

    /// Waits until fewer than [`MAX_READS_IN_FLIGHT`] reads are unanswered, or one failed (the
    /// reader's; checked at once, then after answers).
    pub(crate) async fn room(&self) -> SlotState {
        loop {
            let state = self.state();
            if state.in_flight < MAX_READS_IN_FLIGHT || state.failed {
                return state;
            }
            // An answer after the check left a permit: this returns at once then.
            self.room.notified().await;
        }
    }

    /// Resolves after the next answer, or at once if there was one since the writer last waited
    /// (the writer's; one waiter). It may resolve for an answer already seen in [`Self::state`].
    pub(crate) async fn answered(&self) {
        self.answers.notified().await;
    }

    fn answer(&self, result: AckResult) {
        match result {
            Ok(seq) => {
                self.acked.fetch_max(seq, Ordering::SeqCst);
            }
            Err(()) => self.failed.store(true, Ordering::SeqCst),
        }
        self.answered.fetch_add(1, Ordering::SeqCst);
        self.answers.notify_one();
        self.room.notify_one();
    }
}

/// One read handed to the shard, to be answered once its frames are safe.
#[derive(Debug)]
pub(crate) struct ReadTicket {
    slot: Option<Arc<AckSlot>>,
}

impl ReadTicket {
    /// Answers the read: `Ok(seq)`, everything up to `seq` is safe; `Err`, it is not.
    pub(crate) fn answer(mut self, result: AckResult) {
        if let Some(slot) = self.slot.take() {
            slot.answer(result);
        }
    }
}

impl Drop for ReadTicket {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.answer(Err(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_accumulate_into_one_cumulative_acknowledgement() {
        let slot = AckSlot::new();
        let (a, b, c) = (slot.ticket(), slot.ticket(), slot.ticket());
        assert_eq!(slot.state(), SlotState { acked: 0, in_flight: 3, failed: false });
        a.answer(Ok(4));
        c.answer(Ok(9));
        assert_eq!(slot.state(), SlotState { acked: 9, in_flight: 1, failed: false });
        b.answer(Ok(7));
        assert_eq!(slot.state(), SlotState { acked: 9, in_flight: 0, failed: false });
    }

    #[test]
    fn a_ticket_dropped_unanswered_is_a_failure() {
        let slot = AckSlot::new();
        drop(slot.ticket());
        assert_eq!(slot.state(), SlotState { acked: 0, in_flight: 0, failed: true });
        slot.ticket().answer(Err(()));
        assert!(slot.state().failed);
    }

    #[tokio::test]
    async fn the_reader_waits_for_room_and_the_writer_for_answers() {
        let slot = AckSlot::new();
        let tickets: Vec<_> = (0..MAX_READS_IN_FLIGHT).map(|_| slot.ticket()).collect();
        let reader = {
            let slot = slot.clone();
            tokio::spawn(async move { slot.room().await })
        };
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "no room while every read is unanswered");
        for (seq, ticket) in (1..).zip(tickets) {
            ticket.answer(Ok(seq));
        }
        let state = reader.await.expect("the reader does not panic");
        assert_eq!(state.in_flight, 0);
        // The answers left the writer a permit: it does not wait for another.
        tokio::time::timeout(std::time::Duration::from_secs(5), slot.answered())
            .await
            .expect("an answer before the writer waited still wakes it");
        assert_eq!(slot.state().acked, MAX_READS_IN_FLIGHT);
    }
}
