//! The running outbox worker (issue 20): a dispatcher keeps one email in flight per SMTP connection
//! and takes new work as it comes, and a recorder group-commits the outcomes meanwhile, so that
//! no email waits for the commit of an earlier one's outcome.
//!
//! - **Where work comes from**: fresh messages from the hand-off ([`crate::OutboxHandoff`]) as
//!   soon as they are durable; the store's due messages at start, every poll interval, at once
//!   after the hand-off overflowed or left a receiver over its limit (a store pass decides its
//!   digest), and again at once while the store answers full batches of sendable messages.
//! - **Nothing twice in one process**: a message is claimed when it is taken and released only
//!   once its outcome is recorded; a store read leaves claimed messages out. A hand-off copy is
//!   taken only if no store read completed since its enqueue began (such a read may have
//!   returned it, and it may be sent and released already); older copies are dropped and a
//!   store read follows at once. (Found by the storm test: copies handed over late, after two
//!   store reads, went out a second time.)
//! - **Bounds**: [`OUTCOME_QUEUE`] sends wait for the recorder at most; beyond that the dispatcher
//!   waits (a slow or failing store slows sending instead of growing memory). The claims are
//!   what is in flight, what waits for the recorder and the one batch being sent.
//! - **Crash window**: a crash sends again after the restart what the relay accepted and the
//!   recorder had not committed yet (at most [`OUTCOME_QUEUE`] sends and those in flight), each
//!   once more, with the same `Message-ID`.
//!
//! - **Audit** (issue 18): a send's entries (sent with the relay's reply and `Message-ID`,
//!   retried, given up) travel with its outcomes and are written in the recorder's commit of
//!   those outcomes, one commit for both: an outcome is never recorded without its entries, nor
//!   the reverse, and a commit tried again writes each entry once. Deferrals join the next
//!   commit of outcomes, or are written alone when nothing goes out. `FLEETPULSE_SENT_AUDIT=apart`
//!   writes the sends' entries in a commit of their own after each commit of outcomes (as
//!   before issue 20's fourth round), only to measure the difference.
//!
//! `FLEETPULSE_OUTBOX_MODE` (only to measure these steps against each other in one binary,
//! `docs/PERFORMANCE.md`): `passes` runs the worker as before issue 20's second round (one store
//! read per pass, outcomes committed before the next pass), `recorder` keeps the dispatcher and
//! the recorder but reads every message from the store (no hand-off); anything else is the
//! default described above.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use fleetpulse_proto::UnixMillis;
use fleetpulse_store::OutboxMessage;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::outbox::{OutboxWorker, Outcome, PassStats};

/// Sends whose outcomes may wait for the recorder at once.
pub const OUTCOME_QUEUE: usize = 64;

/// Largest queue `FLEETPULSE_OUTCOME_QUEUE` may set.
const MAX_OUTCOME_QUEUE: usize = 4_096;

/// [`OUTCOME_QUEUE`], or `FLEETPULSE_OUTCOME_QUEUE` (1 to 4,096; only to measure what the
/// bound costs, `docs/PERFORMANCE.md`). Read once.
fn outcome_queue() -> usize {
    static QUEUE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *QUEUE.get_or_init(|| match std::env::var("FLEETPULSE_OUTCOME_QUEUE").map(|v| v.parse::<usize>()) {
        Ok(Ok(n)) if (1..=MAX_OUTCOME_QUEUE).contains(&n) => n,
        Ok(_) => {
            tracing::warn!(
                message = "FLEETPULSE_OUTCOME_QUEUE is not a number from 1 to 4096; using the default.",
                default = OUTCOME_QUEUE
            );
            OUTCOME_QUEUE
        }
        Err(_) => OUTCOME_QUEUE,
    })
}

/// Longest pause of the recorder between attempts while the store fails.
const RECORD_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How the running worker takes its work (`FLEETPULSE_OUTBOX_MODE`, read once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One store read per pass, outcomes committed before the next pass.
    Passes,
    /// Dispatcher and recorder, every message read from the store.
    Recorder,
    /// Dispatcher and recorder, fresh messages from the hand-off (the default).
    Handoff,
}

fn mode() -> Mode {
    static MODE: std::sync::OnceLock<Mode> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("FLEETPULSE_OUTBOX_MODE").as_deref() {
        Ok("passes") => Mode::Passes,
        Ok("recorder") => Mode::Recorder,
        _ => Mode::Handoff,
    })
}

/// Runs the dispatcher and the recorder until `stop` turns true; what is in flight then is
/// finished and its outcomes recorded.
pub(crate) async fn run(worker: &OutboxWorker, stop: watch::Receiver<bool>) {
    let mode = mode();
    if mode == Mode::Passes {
        return run_passes(worker, stop).await;
    }
    let (outcomes, to_record) = mpsc::channel(outcome_queue());
    let handoff = mode == Mode::Handoff;
    tokio::join!(dispatch(worker, outcomes, stop.clone(), handoff), record(worker, to_record, stop));
    worker.flush_audit().await;
}

/// The worker as it was before: a pass reads the store, sends, commits the outcomes, and only
/// then does the next pass start (`FLEETPULSE_OUTBOX_MODE=passes`).
async fn run_passes(worker: &OutboxWorker, mut stop: watch::Receiver<bool>) {
    loop {
        worker.hand_off_queue().clear();
        let pass = worker.run_once(UnixMillis::now()).await;
        if let Ok(stats) = &pass {
            worker.count(*stats);
        }
        let pause = match pass {
            Ok(stats) if stats.sent + stats.retried + stats.failed > 0 => Duration::ZERO,
            Ok(_) => worker.config().poll_interval,
            Err(error) => {
                tracing::error!(message = "Outbox pass failed; retrying.", %error);
                worker.config().poll_interval
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = worker.wake_signal().notified() => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// An email about to go out: its receiver and the messages it carries.
type Email = (String, Vec<OutboxMessage>);

async fn dispatch(
    worker: &OutboxWorker,
    outcomes: mpsc::Sender<Vec<Outcome>>,
    mut stop: watch::Receiver<bool>,
    use_handoff: bool,
) {
    let config = worker.config();
    // One email in flight per connection the mailer may open.
    let concurrency = worker.connections();
    let handoff = worker.hand_off_queue();
    let mut in_flight = FuturesUnordered::new();
    let mut ready: VecDeque<Email> = VecDeque::new();
    // A store pass at start: what an earlier process left pending.
    let mut store_pass_at = Instant::now();
    // The ids the last store read returned: hand-off copies of them are not taken again.
    let mut last_read: HashSet<u64> = HashSet::new();
    loop {
        if ready.is_empty() {
            let mut stats = PassStats::default();
            let overflowed = handoff.take_overflowed();
            if overflowed > 0 {
                worker.metrics.handoff_overflowed.inc_by(overflowed);
                store_pass_at = Instant::now();
            }
            if Instant::now() >= store_pass_at {
                handoff.clear();
                let started = Instant::now();
                let read = worker.due_unclaimed(UnixMillis::now()).await;
                worker.metrics.store_read_seconds.observe(started.elapsed().as_secs_f64());
                handoff.read_completed();
                match read {
                    Ok((due, full)) => {
                        last_read = due.iter().map(|m| m.id).collect();
                        let (emails, _) = worker.plan(due, true, &mut stats);
                        let more = full && !emails.is_empty();
                        ready.extend(emails);
                        store_pass_at = Instant::now() + if more { Duration::ZERO } else { config.poll_interval };
                    }
                    Err(error) => {
                        tracing::error!(message = "Outbox pass failed; retrying.", %error);
                        store_pass_at = Instant::now() + config.poll_interval;
                    }
                }
            } else if use_handoff {
                let (fresh, stale) = handoff.take(config.batch as usize);
                if stale {
                    store_pass_at = Instant::now();
                }
                let fresh: Vec<OutboxMessage> = fresh
                    .into_iter()
                    .filter(|(_, m)| !last_read.contains(&m.id) && !worker.is_claimed(m.id))
                    .map(|(durable, m)| {
                        worker.metrics.handoff_wait_seconds.observe(durable.elapsed().as_secs_f64());
                        m
                    })
                    .collect();
                if !fresh.is_empty() {
                    worker.metrics.handed_off.inc_by(fresh.len() as u64);
                    let (emails, needs_store_pass) = worker.plan(fresh, false, &mut stats);
                    ready.extend(emails);
                    if needs_store_pass {
                        store_pass_at = Instant::now();
                    }
                }
            }
            worker.count(stats);
            // Deferrals with nothing going out: no commit of the recorder's follows to write
            // their audit entries.
            if stats.deferred > 0 && ready.is_empty() && in_flight.is_empty() {
                worker.flush_audit().await;
            }
        }
        while in_flight.len() < concurrency {
            let Some((receiver, messages)) = ready.pop_front() else { break };
            in_flight.push(worker.send(UnixMillis::now(), receiver, messages));
        }
        // With emails waiting, every slot is busy: only a finished send makes room.
        let idle = ready.is_empty();
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            Some((stats, settled)) = in_flight.next(), if !in_flight.is_empty() => {
                worker.count(stats);
                let finished = Instant::now();
                if outcomes.send(settled).await.is_err() {
                    break;
                }
                worker.metrics.outcome_queue_wait_seconds.observe(finished.elapsed().as_secs_f64());
            }
            () = worker.wake_signal().notified(), if idle => {
                if !use_handoff {
                    store_pass_at = Instant::now();
                }
            }
            () = tokio::time::sleep_until(store_pass_at), if idle => {}
        }
    }
    while let Some((stats, settled)) = in_flight.next().await {
        worker.count(stats);
        // The recorder may have given up already (store failing at stop): nothing more to do.
        let _ = outcomes.send(settled).await;
    }
    for (_, messages) in ready {
        worker.unclaim(&messages);
    }
}

/// Group-commits outcomes as they come: everything that arrived while the previous commit ran
/// goes into the next. A failing store is retried with backoff (the messages stay claimed, so
/// they are not sent again meanwhile); at stop, what still cannot be recorded is given up and
/// logged (those messages are sent once more after the restart).
async fn record(worker: &OutboxWorker, mut to_record: mpsc::Receiver<Vec<Outcome>>, mut stop: watch::Receiver<bool>) {
    let mut received = Vec::new();
    while to_record.recv_many(&mut received, outcome_queue()).await > 0 {
        let mut outcomes = worker.take_unrecorded();
        outcomes.extend(received.drain(..).flatten());
        let mut backoff = Duration::from_millis(100);
        let mut stopping = false;
        while let Err(error) = worker.record(outcomes).await {
            outcomes = worker.take_unrecorded();
            if stopping || *stop.borrow() {
                tracing::error!(message = "Outbox outcomes not recorded at stop; their messages will be sent again.", count = outcomes.len(), %error);
                return;
            }
            tracing::error!(message = "Recording outbox outcomes failed; retrying.", %error, delay_ms = backoff.as_millis() as u64);
            // Stopping (or the stop sender gone) cuts the pause short for one last attempt.
            stopping = tokio::select! {
                () = tokio::time::sleep(backoff) => false,
                () = stopped(&mut stop) => true,
            };
            backoff = (backoff * 2).min(RECORD_BACKOFF_MAX);
        }
        // What the commit could not take (deferrals beyond a store batch; with
        // FLEETPULSE_SENT_AUDIT=apart, the sends' entries), written after it (best effort).
        worker.flush_audit().await;
    }
}

/// Returns once `stop` turns true (or its sender is gone); holds no borrow of its value, so that
/// the `select!`s above stay `Send`.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
