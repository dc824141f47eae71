//! The alarm engine split by enterprise buckets over several nodes (issue 16 item 3): which
//! buckets a node takes or gives up at a heartbeat ([`plan_buckets`], sans I/O), the form event
//! batches travel in to the bucket's holder ([`encode_events`]), and the API's side of an engine
//! that is not one service ([`AlarmHandle::front`]: its controls and replays are read by the
//! node's router instead of one engine task).
//!
//! Each held bucket runs an [`crate::AlarmService`] of its own whose owner is
//! [`EngineStateOwner::Bucket`]: it loads and restores only its bucket's enterprises, so taking
//! a bucket over is exactly a restart of that bucket's engine.

use std::collections::{BTreeMap, BTreeSet};

use fleetpulse_alarm_engine::DeviceEvent;
use fleetpulse_proto::EnterpriseId;
use fleetpulse_store::{ENGINE_BUCKETS, StoredEvent, engine_bucket};
use tokio::sync::mpsc;

use crate::dead::{DeadPayload, ReplayError, ReplayRequest};
use crate::{AlarmHandle, CONTROL_QUEUE, Control, REPLAY_QUEUE};

/// How many buckets a node aims to hold with `live` nodes up (itself included): the ceiling of
/// an even share, so the shares of the live nodes always cover every bucket.
pub fn bucket_target(live: usize) -> usize {
    usize::from(ENGINE_BUCKETS).div_ceil(live.max(1))
}

/// What a node does with the engine buckets at a heartbeat.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BucketPlan {
    /// Free (or lapsed) buckets to try to take, in order.
    pub take: Vec<u16>,
    /// Held buckets to give up (stop, save, release): the surplus over the target.
    pub release: Vec<u16>,
}

/// The balance rule: with `held` here, `elsewhere` held by other nodes with a current lease and
/// `live` nodes up, a node above its [`bucket_target`] gives its surplus up (its highest buckets)
/// so that a node that joined takes its share; a node below it takes free buckets, looking from
/// `start` on (a per-node offset, so that nodes starting together try different buckets first).
pub fn plan_buckets(held: &BTreeSet<u16>, elsewhere: &BTreeSet<u16>, live: usize, start: u16) -> BucketPlan {
    let target = bucket_target(live);
    if held.len() > target {
        return BucketPlan {
            take: Vec::new(),
            release: held.iter().rev().take(held.len() - target).copied().collect(),
        };
    }
    let take = (0..ENGINE_BUCKETS)
        .map(|i| (start % ENGINE_BUCKETS + i) % ENGINE_BUCKETS)
        .filter(|b| !held.contains(b) && !elsewhere.contains(b))
        .take(target - held.len())
        .collect();
    BucketPlan { take, release: Vec::new() }
}

/// The router's choice: `events` by the bucket of their enterprise, each bucket's in the order
/// they came (the engine sees a device's events in order).
pub fn group_by_bucket(events: impl IntoIterator<Item = DeviceEvent>) -> BTreeMap<u16, Vec<DeviceEvent>> {
    let mut by_bucket: BTreeMap<u16, Vec<DeviceEvent>> = BTreeMap::new();
    for event in events {
        by_bucket.entry(engine_bucket(event.enterprise_id)).or_default().push(event);
    }
    by_bucket
}

/// A batch of events as it is queued for another node: a JSON array of the dead letters' form
/// of an event (an alarm's log is not carried: the engine does not read it).
pub fn encode_events(events: &[DeviceEvent]) -> String {
    let stored: Vec<StoredEvent> = events.iter().map(crate::dead::stored_event).collect();
    serde_json::to_string(&stored).expect("serializing plain data cannot fail")
}

/// The events of a queued batch; `None` for one that is not well formed. An event of an alarm
/// type this build does not know is left out.
pub fn decode_events(payload: &str) -> Option<Vec<DeviceEvent>> {
    let stored: Vec<StoredEvent> = serde_json::from_str(payload).ok()?;
    Some(stored.iter().filter_map(crate::dead::to_event).collect())
}

/// A control as broadcast to the nodes.
pub fn encode_control(control: &Control) -> String {
    serde_json::to_string(control).expect("serializing plain data cannot fail")
}

/// A broadcast control; `None` for one that is not well formed.
pub fn decode_control(payload: &str) -> Option<Control> {
    serde_json::from_str(payload).ok()
}

/// What the API asked of an engine that is split over buckets.
#[derive(Debug)]
pub enum FrontInput {
    /// A control, for the engines it concerns on every node.
    Control(Control),
    /// A dead letter to replay, for an engine of this node.
    Replay(ReplayTicket),
}

/// The router's side of [`AlarmHandle::front`].
#[derive(Debug)]
pub struct FrontInbox {
    control: mpsc::Receiver<Control>,
    replays: mpsc::Receiver<ReplayRequest>,
}

impl FrontInbox {
    /// The next request; `None` once every handle is gone.
    pub async fn recv(&mut self) -> Option<FrontInput> {
        tokio::select! {
            Some(c) = self.control.recv() => Some(FrontInput::Control(c)),
            Some(r) = self.replays.recv() => Some(FrontInput::Replay(ReplayTicket(r))),
            else => None,
        }
    }
}

/// A replay waiting for the engine that takes it.
#[derive(Debug)]
pub struct ReplayTicket(ReplayRequest);

impl ReplayTicket {
    /// The enterprise whose engine must take it (an event's); `None` when any engine may (a
    /// record, mark or notification goes to the effects of whichever engine).
    pub fn enterprise(&self) -> Option<EnterpriseId> {
        match &self.0.payload {
            DeadPayload::Event(e) => Some(e.enterprise_id),
            _ => None,
        }
    }

    /// Hands it to `to`'s engine, or answers that no engine here takes it.
    pub async fn deliver(self, to: Option<&AlarmHandle>) {
        match to {
            Some(handle) => handle.forward_replay(self.0).await,
            None => {
                let _ = self.0.done.send(Err(ReplayError::Stopped));
            }
        }
    }
}

impl AlarmHandle {
    /// A handle whose controls and replays are read from the returned inbox (by the router of a
    /// node of several) instead of by one engine task.
    pub fn front() -> (AlarmHandle, FrontInbox) {
        let (control_tx, control) = mpsc::channel(CONTROL_QUEUE);
        let (replay_tx, replays) = mpsc::channel(REPLAY_QUEUE);
        (AlarmHandle::new(control_tx, replay_tx), FrontInbox { control, replays })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_alarm_engine::DeviceInput;
    use fleetpulse_proto::domain::DeviceAlarm;
    use fleetpulse_proto::{AccountId, DeviceId, UnixMillis, alarm_types};

    fn set(items: &[u16]) -> BTreeSet<u16> {
        items.iter().copied().collect()
    }

    #[test]
    fn targets_cover_every_bucket() {
        for live in 1..=20 {
            assert!(bucket_target(live) * live >= usize::from(ENGINE_BUCKETS), "{live} nodes");
        }
        assert_eq!(bucket_target(0), 16);
        assert_eq!(bucket_target(1), 16);
        assert_eq!(bucket_target(3), 6);
    }

    #[test]
    fn a_lone_node_takes_every_bucket() {
        let plan = plan_buckets(&set(&[]), &set(&[]), 1, 5);
        assert_eq!(plan.take, (5..16).chain(0..5).collect::<Vec<_>>());
        assert!(plan.release.is_empty());
    }

    #[test]
    fn a_node_gives_its_surplus_up_when_another_joins() {
        let all: BTreeSet<u16> = (0..16).collect();
        let plan = plan_buckets(&all, &set(&[]), 2, 0);
        assert_eq!(plan.release, (8..16).rev().collect::<Vec<_>>());
        assert!(plan.take.is_empty());
        // The one that joined takes what was given up, never what is held.
        let plan = plan_buckets(&set(&[]), &(0..8).collect(), 2, 3);
        assert_eq!(plan.take, (8..16).collect::<Vec<_>>());
    }

    #[test]
    fn a_lost_nodes_buckets_are_taken_up_to_the_target_only() {
        // Three nodes held 6, 6, 4; the second is lost: two live nodes aim at 8 each.
        let mine = set(&[0, 1, 2, 3, 4, 5]);
        let other = set(&[12, 13, 14, 15]);
        let plan = plan_buckets(&mine, &other, 2, 0);
        assert_eq!(plan.take, vec![6, 7]);
        let plan = plan_buckets(&other, &mine, 2, 0);
        assert_eq!(plan.take, vec![6, 7, 8, 9]);
        // At the target: nothing to do.
        assert_eq!(plan_buckets(&mine, &other, 3, 0), BucketPlan::default());
    }

    #[test]
    fn buckets_are_the_enterprise_modulo_their_count() {
        assert_eq!(engine_bucket(EnterpriseId(1)), 1);
        assert_eq!(engine_bucket(EnterpriseId(16)), 0);
        assert_eq!(engine_bucket(EnterpriseId(35)), 3);
    }

    #[test]
    fn the_router_groups_events_by_their_enterprises_bucket_in_order() {
        let event = |device: u64, enterprise: u64, at: i64| DeviceEvent {
            device_id: DeviceId(device),
            enterprise_id: EnterpriseId(enterprise),
            at: UnixMillis(at),
            input: DeviceInput::Online,
        };
        let grouped = group_by_bucket(vec![event(1, 3, 1), event(2, 19, 2), event(3, 4, 3), event(1, 3, 4)]);
        let seen: Vec<(u16, Vec<(u64, i64)>)> = grouped
            .into_iter()
            .map(|(b, events)| (b, events.iter().map(|e| (e.device_id.0, e.at.0)).collect()))
            .collect();
        assert_eq!(seen, vec![(3, vec![(1, 1), (2, 2), (1, 4)]), (4, vec![(3, 3)])]);
    }

    #[test]
    fn events_and_controls_travel_intact() {
        let events = vec![
            DeviceEvent {
                device_id: DeviceId(7),
                enterprise_id: EnterpriseId(3),
                at: UnixMillis(1_000),
                input: DeviceInput::Alarm(DeviceAlarm {
                    alarm_type: alarm_types::OFFLINE.alarm_type().expect("known"),
                    clear: false,
                    description: "gone".into(),
                    log: None,
                }),
            },
            DeviceEvent {
                device_id: DeviceId(8),
                enterprise_id: EnterpriseId(19),
                at: UnixMillis(2_000),
                input: DeviceInput::Online,
            },
        ];
        assert_eq!(decode_events(&encode_events(&events)), Some(events));
        assert_eq!(decode_events("[{"), None);
        for control in [
            Control::StrategiesChanged(EnterpriseId(4)),
            Control::Cleared {
                device_id: DeviceId(1),
                code: alarm_types::OFFLINE,
                by: AccountId(2),
                at: UnixMillis(3),
            },
        ] {
            assert_eq!(decode_control(&encode_control(&control)), Some(control));
        }
        assert_eq!(Control::WindowsChanged(EnterpriseId(9)).enterprise(), Some(EnterpriseId(9)));
    }
}
