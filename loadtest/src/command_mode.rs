//! The command mode of a run (issue 11, LT-1): once the fleet is connected, issue commands
//! through the API, one at a time to random devices or one bulk command to every device, and
//! measure them with the times the simulated devices record.
//!
//! A command's *delivery* is from the instant before its API call to the instant its device
//! received it; its *round trip* is from that instant to the server's acknowledgement of the
//! device's final answer (an acknowledged frame is durable, so the result is stored then). Both
//! come from the devices' clock, which is the load tester's own, so no polling interval blurs them.
//! Afterwards every issued command's state is read back through `GET /api/v1/commands/{id}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use fleetpulse_proto::{CommandId, DeviceId};
use rand::Rng;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::api::{ApiClient, CommandRequest};
use crate::config::{CommandIssue, CommandMode};
use crate::report::{CommandRun, Latency};
use crate::responder::AnswerStatus;
use crate::stats::new_histogram;

/// Most commands whose times the tracker keeps (later ones are not measured).
const MAX_TRACKED: usize = 1_000_000;
/// Devices per bulk API call (the store queues at most this many commands at once).
const BULK_CHUNK: usize = 10_000;
/// How long the mode waits for the fleet to connect before it goes on with the devices it has.
const CONNECT_WAIT: Duration = Duration::from_secs(60);
/// Past a command's deadline, how long the mode still waits for its stored answer.
const DEADLINE_SLACK: Duration = Duration::from_secs(5);
/// One-by-one mode gives up after this many API refusals in a row.
const MAX_CONSECUTIVE_REFUSALS: u32 = 10;
/// Concurrent `GET /api/v1/commands/{id}` when reading the states back.
const STATE_READERS: usize = 16;

/// The id of each simulated device while it has a session (0 while it has none), by index.
#[derive(Debug)]
pub(crate) struct DeviceSlots(Vec<AtomicU64>);

impl DeviceSlots {
    pub fn new(devices: u32) -> Self {
        DeviceSlots((0..devices).map(|_| AtomicU64::new(0)).collect())
    }

    /// Device `index` has a session as `id` (`None`: it has none).
    pub fn set(&self, index: u32, id: Option<DeviceId>) {
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| self.0.get(i)) {
            slot.store(id.map_or(0, |id| id.0), Ordering::Relaxed);
        }
    }

    /// The ids of the devices with a session now.
    pub fn connected(&self) -> Vec<DeviceId> {
        self.0.iter().map(|s| s.load(Ordering::Relaxed)).filter(|&id| id != 0).map(DeviceId).collect()
    }

    fn all_connected(&self) -> bool {
        self.0.iter().all(|s| s.load(Ordering::Relaxed) != 0)
    }
}

/// When the devices received commands and when their final answers were acknowledged,
/// microseconds of the run clock.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommandTimes {
    pub received_us: Option<u64>,
    pub stored_us: Option<u64>,
    pub status: Option<AnswerStatus>,
}

/// What the devices record for the command mode (bounded by [`MAX_TRACKED`]).
#[derive(Debug, Default)]
pub(crate) struct CommandTracker {
    times: Mutex<HashMap<u64, CommandTimes>>,
    untracked: AtomicU64,
}

impl CommandTracker {
    fn update(&self, id: u64, f: impl FnOnce(&mut CommandTimes)) {
        let mut times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        if times.len() >= MAX_TRACKED && !times.contains_key(&id) {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return;
        }
        f(times.entry(id).or_default());
    }

    /// A device received command `id` (the first time counts).
    pub fn received(&self, id: u64, now_us: u64) {
        self.update(id, |t| {
            t.received_us.get_or_insert(now_us);
        });
    }

    /// The final answer to command `id` was acknowledged (the first time counts).
    pub fn stored(&self, id: u64, now_us: u64, status: AnswerStatus) {
        self.update(id, |t| {
            if t.stored_us.is_none() {
                t.stored_us = Some(now_us);
                t.status = Some(status);
            }
        });
    }

    fn times(&self, ids: &[Issued]) -> Vec<CommandTimes> {
        let times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        ids.iter().map(|i| times.get(&i.id.0).copied().unwrap_or_default()).collect()
    }

    fn all_stored(&self, ids: &[Issued]) -> bool {
        let times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        ids.iter().all(|i| times.get(&i.id.0).is_some_and(|t| t.stored_us.is_some()))
    }
}

/// A command the API queued, and when the call to queue it started (run clock).
#[derive(Debug, Clone, Copy)]
struct Issued {
    id: CommandId,
    at_us: u64,
}

/// One command-mode run: issues, waits, and keeps what it issued for the report (so a run cut
/// short still reports what it did).
#[derive(Debug)]
pub(crate) struct CommandPhase {
    mode: CommandMode,
    command_delay: Duration,
    run_start: Instant,
    issued: Mutex<Vec<Issued>>,
    targets: AtomicU64,
    refused: AtomicU64,
}

impl CommandPhase {
    pub fn new(mode: CommandMode, command_delay: Duration, run_start: Instant) -> Self {
        CommandPhase {
            mode,
            command_delay,
            run_start,
            issued: Mutex::new(Vec::new()),
            targets: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.run_start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn issued(&self) -> Vec<Issued> {
        self.issued.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn request(&self) -> CommandRequest {
        CommandRequest {
            kind: self.mode.kind.clone(),
            args: self.mode.args.clone(),
            deadline_s: self.mode.deadline.as_secs().max(1),
        }
    }

    /// Waits for the fleet to connect, then issues and waits for the commands.
    pub async fn run(&self, api: &ApiClient, tracker: &CommandTracker, slots: &DeviceSlots) {
        let connect_deadline = Instant::now() + CONNECT_WAIT;
        while !slots.all_connected() && Instant::now() < connect_deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let wait = self.mode.deadline + DEADLINE_SLACK;
        match self.mode.issue {
            CommandIssue::OneByOne { count } => self.one_by_one(count, api, tracker, slots, wait).await,
            CommandIssue::Bulk => self.bulk(api, tracker, slots, wait).await,
        }
    }

    async fn one_by_one(
        &self,
        count: u32,
        api: &ApiClient,
        tracker: &CommandTracker,
        slots: &DeviceSlots,
        wait: Duration,
    ) {
        let request = self.request();
        let mut refusals = 0;
        for _ in 0..count {
            let connected = slots.connected();
            if connected.is_empty() {
                tracing::warn!("command mode: no device is connected; stopping");
                return;
            }
            let device = connected[rand::rng().random_range(0..connected.len())];
            self.targets.fetch_add(1, Ordering::Relaxed);
            let at_us = self.now_us();
            match api.issue_command(device, &request).await {
                Ok(id) => {
                    refusals = 0;
                    let issued = Issued { id, at_us };
                    self.issued.lock().unwrap_or_else(PoisonError::into_inner).push(issued);
                    wait_until_stored(tracker, &[issued], wait, Duration::from_millis(1)).await;
                }
                Err(error) => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(device = %device, error = %format!("{error:#}"), "command mode: the API refused a command");
                    refusals += 1;
                    if refusals >= MAX_CONSECUTIVE_REFUSALS {
                        tracing::warn!("command mode: {refusals} refusals in a row; stopping");
                        return;
                    }
                }
            }
        }
    }

    async fn bulk(&self, api: &ApiClient, tracker: &CommandTracker, slots: &DeviceSlots, wait: Duration) {
        let request = self.request();
        let devices = slots.connected();
        self.targets.store(devices.len() as u64, Ordering::Relaxed);
        let at_us = self.now_us();
        for chunk in devices.chunks(BULK_CHUNK) {
            match api.issue_bulk_command(chunk, &request).await {
                Ok(results) => {
                    let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
                    for result in results {
                        match result.command {
                            Ok(id) => issued.push(Issued { id, at_us }),
                            Err(reason) => {
                                tracing::debug!(device = ?result.device_id, %reason, "command mode: refused for a device");
                                self.refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "command mode: the bulk command failed");
                    self.refused.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            }
        }
        wait_until_stored(tracker, &self.issued(), wait, Duration::from_millis(10)).await;
    }

    /// The report section: the devices' times of every issued command, and the states the API
    /// reports for them now.
    pub async fn report(&self, api: &ApiClient, tracker: &CommandTracker) -> CommandRun {
        let issued = self.issued();
        let (api_states, api_errors) = read_states(api, &issued).await;
        let times = tracker.times(&issued);
        let mut run = summarize(&issued, &times);
        run.mode = match self.mode.issue {
            CommandIssue::OneByOne { .. } => "one_by_one",
            CommandIssue::Bulk => "bulk",
        }
        .to_owned();
        run.kind = self.mode.kind.clone();
        run.command_delay_ms = u64::try_from(self.command_delay.as_millis()).unwrap_or(u64::MAX);
        run.targets = self.targets.load(Ordering::Relaxed);
        run.refused = self.refused.load(Ordering::Relaxed);
        run.api_states = api_states;
        run.api_errors = api_errors;
        run.untracked = tracker.untracked.load(Ordering::Relaxed);
        run
    }
}

/// Waits until the final answers of `issued` are stored, or `wait` passes.
async fn wait_until_stored(tracker: &CommandTracker, issued: &[Issued], wait: Duration, poll: Duration) {
    let deadline = Instant::now() + wait;
    while !tracker.all_stored(issued) && Instant::now() < deadline {
        tokio::time::sleep(poll).await;
    }
}

/// The states the API reports for `issued` (counts by state), and the reads that failed.
async fn read_states(api: &ApiClient, issued: &[Issued]) -> (BTreeMap<String, u64>, u64) {
    let mut states = BTreeMap::new();
    let mut errors = 0;
    let mut readers = JoinSet::new();
    let mut ids = issued.iter().map(|i| i.id);
    loop {
        while readers.len() < STATE_READERS {
            let Some(id) = ids.next() else { break };
            let api = api.clone();
            readers.spawn(async move { api.command_state(id).await });
        }
        let Some(result) = readers.join_next().await else { break };
        match result {
            Ok(Ok(state)) => *states.entry(state).or_insert(0) += 1,
            Ok(Err(error)) => {
                tracing::debug!(error = %format!("{error:#}"), "command mode: reading a command failed");
                errors += 1;
            }
            Err(_) => errors += 1,
        }
    }
    (states, errors)
}

/// The counts and latencies of issued commands from the devices' times (pure).
fn summarize(issued: &[Issued], times: &[CommandTimes]) -> CommandRun {
    let (mut delivery, mut round_trip) = (new_histogram(), new_histogram());
    let mut run = CommandRun { issued: issued.len() as u64, ..CommandRun::default() };
    let (mut last_received, mut last_stored) = (Some(0u64), Some(0u64));
    for (issue, t) in issued.iter().zip(times) {
        match t.received_us {
            Some(at) => {
                let us = at.saturating_sub(issue.at_us);
                delivery.saturating_record(us);
                last_received = last_received.map(|l| l.max(us));
            }
            None => last_received = None,
        }
        match (t.stored_us, t.status) {
            (Some(at), Some(status)) => {
                let us = at.saturating_sub(issue.at_us);
                round_trip.saturating_record(us);
                last_stored = last_stored.map(|l| l.max(us));
                if status == AnswerStatus::Succeeded {
                    run.succeeded += 1;
                } else {
                    run.failed += 1;
                }
            }
            _ => {
                last_stored = None;
                run.unfinished += 1;
            }
        }
    }
    run.delivery_us = Latency::from_histogram(&delivery);
    run.round_trip_us = Latency::from_histogram(&round_trip);
    if !issued.is_empty() {
        run.all_delivered_us = last_received;
        run.all_stored_us = last_stored;
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_counts_and_measures_from_the_issue() {
        let issued: Vec<Issued> = (1..=3).map(|i| Issued { id: CommandId(i), at_us: 1_000 }).collect();
        let stored = |received, stored, status| CommandTimes {
            received_us: Some(received),
            stored_us: Some(stored),
            status: Some(status),
        };
        let times = [
            stored(2_000, 5_000, AnswerStatus::Succeeded),
            stored(3_000, 9_000, AnswerStatus::Failed),
            stored(1_500, 3_000, AnswerStatus::Succeeded),
        ];
        let run = summarize(&issued, &times);
        assert_eq!((run.issued, run.succeeded, run.failed, run.unfinished), (3, 2, 1, 0));
        assert_eq!((run.all_delivered_us, run.all_stored_us), (Some(2_000), Some(8_000)));
        assert_eq!(run.delivery_us.p50, 1_000);
        assert!(run.round_trip_us.max.abs_diff(8_000) <= 8, "3 significant figures: {:?}", run.round_trip_us);

        let mut partial = times;
        partial[1] = CommandTimes { received_us: Some(3_000), ..CommandTimes::default() };
        let run = summarize(&issued, &partial);
        assert_eq!((run.succeeded, run.failed, run.unfinished), (2, 0, 1));
        assert_eq!((run.all_delivered_us, run.all_stored_us), (Some(2_000), None), "one result never stored");
        assert_eq!(summarize(&[], &[]).all_stored_us, None);
    }

    #[test]
    fn the_tracker_keeps_first_times_and_slots_follow_sessions() {
        let tracker = CommandTracker::default();
        tracker.stored(4, 50, AnswerStatus::Succeeded);
        tracker.received(4, 10);
        tracker.received(4, 20);
        tracker.stored(4, 60, AnswerStatus::Failed);
        let issued = [Issued { id: CommandId(4), at_us: 0 }];
        assert_eq!(
            tracker.times(&issued),
            [CommandTimes { received_us: Some(10), stored_us: Some(50), status: Some(AnswerStatus::Succeeded) }]
        );
        assert!(tracker.all_stored(&issued));
        let slots = DeviceSlots::new(3);
        slots.set(0, Some(DeviceId(7)));
        slots.set(2, Some(DeviceId(9)));
        slots.set(5, Some(DeviceId(1)));
        assert_eq!(slots.connected(), [DeviceId(7), DeviceId(9)]);
        assert!(!slots.all_connected());
        slots.set(1, Some(DeviceId(8)));
        assert!(slots.all_connected());
        slots.set(0, None);
        assert_eq!(slots.connected(), [DeviceId(8), DeviceId(9)]);
    }
}
