//! A session's bounded queue to its writer: several senders, one receiver, and nothing allocated
//! while it is empty.
//!
//! It does what `tokio::sync::mpsc` did for the session (bounded, weak senders, closed when the
//! last sender or the receiver goes), at a tenth of the memory: a tokio channel allocates its
//! first block of 32 slots and two cache-padded halves up front, about 1.6 KiB per connected
//! device, most of them idle (issue 14). Here an empty queue is one small allocation, and its
//! items live in a `VecDeque` that grows only when something is queued.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Creates a queue holding at most `capacity` items.
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: VecDeque::new(), senders: 1, receiver: true, waiting_for_room: false }),
        item: Notify::new(),
        room: Notify::new(),
        capacity,
    });
    (Sender(shared.clone()), Receiver(shared))
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes the receiver: an item arrived, or the last sender left. `notify_one` keeps the
    /// wake-up when the receiver is not waiting yet, so none is lost.
    item: Notify,
    /// Wakes senders waiting for room (or for the receiver's end).
    room: Notify,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// Live [`Sender`]s; the queue closes for the receiver when the last one goes.
    senders: usize,
    /// Whether the [`Receiver`] is alive; sending fails once it is gone.
    receiver: bool,
    /// A sender found the queue full and waits for room.
    waiting_for_room: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why an item could not be queued at once; the item comes back.
#[derive(Debug)]
pub(crate) enum TrySendError<T> {
    /// The queue holds `capacity` items.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// The receiver is gone; the item comes back.
#[derive(Debug)]
pub(crate) struct SendError<T>(pub(crate) T);

/// Queues items. The queue stays open for the receiver while one exists.
pub(crate) struct Sender<T>(Arc<Shared<T>>);

impl<T> Sender<T> {
    /// Queues `item` if there is room.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.0.lock();
        if !state.receiver {
            return Err(TrySendError::Closed(item));
        }
        if state.items.len() >= self.0.capacity {
            state.waiting_for_room = true;
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        drop(state);
        self.0.item.notify_one();
        Ok(())
    }

    /// Queues `item`, waiting for room; fails only when the receiver is gone.
    ///
    /// The wait is boxed: it is rare (backpressure), and inline it would size the task of every
    /// session awaiting this (issue 14).
    pub(crate) async fn send(&self, item: T) -> Result<(), SendError<T>> {
        match self.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(item)) => Err(SendError(item)),
            Err(TrySendError::Full(item)) => Box::pin(self.wait_for_room(item)).await,
        }
    }

    async fn wait_for_room(&self, mut item: T) -> Result<(), SendError<T>> {
        loop {
            // Registered before looking: room made after the look still wakes this sender.
            let room = self.0.room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(SendError(back)),
                Err(TrySendError::Full(back)) => item = back,
            }
            room.await;
        }
    }

    /// A handle that does not keep the queue open, like `mpsc::Sender::downgrade`.
    pub(crate) fn downgrade(&self) -> WeakSender<T> {
        WeakSender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.senders -= 1;
        let last = state.senders == 0;
        drop(state);
        if last {
            self.0.item.notify_one();
        }
    }
}

/// A handle that can become a [`Sender`] while another sender keeps the queue open.
pub(crate) struct WeakSender<T>(Arc<Shared<T>>);

impl<T> WeakSender<T> {
    /// A sender, unless every sender or the receiver is gone.
    pub(crate) fn upgrade(&self) -> Option<Sender<T>> {
        let mut state = self.0.lock();
        if state.senders == 0 || !state.receiver {
            return None;
        }
        state.senders += 1;
        Some(Sender(self.0.clone()))
    }
}

impl<T> Clone for WeakSender<T> {
    fn clone(&self) -> Self {
        WeakSender(self.0.clone())
    }
}

/// Takes items in the order they were queued.
pub(crate) struct Receiver<T>(Arc<Shared<T>>);

impl<T> Receiver<T> {
    /// The next item; `None` once the queue is empty and every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        loop {
            {
                let mut state = self.0.lock();
                if let Some(item) = state.items.pop_front() {
                    self.made_room(state);
                    return Some(item);
                }
                if state.senders == 0 {
                    return None;
                }
            }
            self.0.item.notified().await;
        }
    }

    /// Moves up to `max` queued items to the end of `into`, without waiting.
    pub(crate) fn take_into(&mut self, into: &mut VecDeque<T>, max: usize) {
        let mut state = self.0.lock();
        let n = max.min(state.items.len());
        if n > 0 {
            into.extend(state.items.drain(..n));
            self.made_room(state);
        }
    }

    /// Wakes the senders waiting for room, if any.
    fn made_room(&self, mut state: MutexGuard<'_, State<T>>) {
        if std::mem::take(&mut state.waiting_for_room) {
            drop(state);
            self.0.room.notify_waiters();
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver = false;
        let items = std::mem::take(&mut state.items);
        drop(state);
        drop(items);
        self.0.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn items_arrive_in_order_and_the_queue_ends_with_its_last_sender() {
        let (tx, mut rx) = channel(8);
        let weak = tx.downgrade();
        tx.try_send(1).unwrap();
        weak.upgrade().expect("a sender is alive").try_send(2).unwrap();
        tx.send(3).await.unwrap();
        assert_eq!(rx.recv().await, Some(1));
        let mut rest = VecDeque::new();
        rx.take_into(&mut rest, 8);
        assert_eq!(rest, [2, 3]);
        drop(tx);
        assert!(weak.upgrade().is_none(), "a weak sender does not keep the queue open");
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_makes_the_waiting_sender_wait() {
        let (tx, mut rx) = channel(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        let tx = Arc::new(tx);
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(3).await.map_err(|e| e.0) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the sender waits while the queue is full");
        assert_eq!(rx.recv().await, Some(1));
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("room wakes it").unwrap().unwrap();
        let mut rest = VecDeque::new();
        rx.take_into(&mut rest, 1);
        assert_eq!(rest, [2], "take_into takes at most `max`");
        assert_eq!(rx.recv().await, Some(3));
    }

    #[tokio::test]
    async fn senders_fail_once_the_receiver_is_gone_even_while_waiting() {
        let (tx, rx) = channel(1);
        tx.try_send(1).unwrap();
        let tx = Arc::new(tx);
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(2).await.map_err(|e| e.0) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let weak = tx.downgrade();
        drop(rx);
        let back = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").unwrap();
        assert_eq!(back, Err(2), "the item comes back");
        assert!(matches!(tx.try_send(3), Err(TrySendError::Closed(3))));
        assert!(weak.upgrade().is_none());
    }

    #[tokio::test]
    async fn the_receiver_wakes_for_an_item_sent_while_it_waits() {
        let (tx, mut rx) = channel(4);
        let receiving = tokio::spawn(async move { (rx.recv().await, rx.recv().await) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.try_send(7).unwrap();
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), receiving).await.expect("woken").unwrap();
        assert_eq!(got, (Some(7), None));
    }

    /// What the queue costs an idle session, against the tokio channel it replaced.
    #[test]
    fn an_empty_queue_is_one_small_allocation() {
        let size = std::mem::size_of::<Shared<crate::outbound::Outbound>>();
        assert!(size <= 160, "the queue's allocation takes {size} bytes");
    }
}
