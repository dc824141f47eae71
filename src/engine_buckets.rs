//! The alarm engine of a node of several (issue 16 item 3): each enterprise bucket's evaluation
//! is owned by the node holding the lease `engine:<bucket>`, which runs one alarm service for
//! it; events of a bucket held elsewhere are queued for its holder in PostgreSQL; the API's
//! controls are broadcast to every node. The design and timings are in `docs/cluster.md`.
//!
//! ```text
//!  shards, lost nodes' Offline ──▶ router ──(bucket held here)──▶ bucket's AlarmService
//!                                    └──(else)──▶ engine_events ──NOTIFY / poll──▶ holder's drainer
//!  API Control ──▶ front ──pg_notify──▶ every node's listener ──▶ the bucket's (or every) service
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetpulse_alarm_engine::DeviceEvent;
use fleetpulse_alarm_service::{
    AlarmHandle, AlarmMetrics, AlarmService, Control, FrontInbox, FrontInput, ServiceOptions, decode_control,
    decode_events, encode_control, encode_events, group_by_bucket, plan_buckets,
};
use fleetpulse_mailer::OutboxHandoff;
use fleetpulse_store::{
    ENGINE_BUCKETS, ENGINE_LEASE_PREFIX, EngineNote, EngineStateOwner, MAX_ENGINE_BATCHES, NodeState, Store,
    engine_bucket, engine_lease_name,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, NodeLabel, Reconnecting, stopped};

/// Event batches queued to one bucket's engine before the router (and so the shards) wait.
const BUCKET_EVENT_QUEUE: usize = 256;

/// Shards' batches the router coalesces into one forward.
const ROUTER_COALESCE: usize = 64;

/// Most events in one queued batch.
const FORWARD_CHUNK: usize = 500;

/// Queued batches a holder takes per statement.
const DRAIN_BATCH: usize = 64;

/// How often a holder looks at its buckets' queues without a notification (one missed while its
/// listener reconnected, or sent before it took the bucket).
const DRAIN_POLL: Duration = Duration::from_secs(2);

/// How long a bucket given up may take to evaluate what it was sent, save and flush its effects.
const GIVE_UP_WAIT: Duration = Duration::from_secs(5);

/// `fleetpulse_cluster_engine_*`.
#[derive(Debug, Clone, Default)]
pub struct EngineBucketMetrics {
    buckets: Family<NodeLabel, Gauge>,
    forwarded: Counter,
    drained: Counter,
    dropped: Counter,
    taken: Counter,
    released: Counter,
    lost: Counter,
}

impl EngineBucketMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> EngineBucketMetrics {
        let m = EngineBucketMetrics::default();
        let r = registry.sub_registry_with_prefix("fleetpulse_cluster_engine");
        r.register("buckets", "Engine buckets each node holds, as of this node's last heartbeat", m.buckets.clone());
        r.register(
            "events_forwarded",
            "Alarm events this node queued for the node holding their bucket",
            m.forwarded.clone(),
        );
        r.register("events_drained", "Queued alarm events this node took for a bucket it holds", m.drained.clone());
        r.register(
            "events_dropped",
            "Alarm events not queued for their bucket's holder (the queue was full or PostgreSQL failed)",
            m.dropped.clone(),
        );
        r.register("buckets_taken", "Engine buckets this node took (its engine loaded for them)", m.taken.clone());
        r.register("buckets_released", "Engine buckets this node gave up to balance the nodes", m.released.clone());
        r.register(
            "buckets_lost",
            "Engine buckets whose lease this node failed to renew (stopped at once)",
            m.lost.clone(),
        );
        m
    }
}

/// The engine of a bucket held here, as the router and the listener reach it.
#[derive(Debug, Clone)]
struct HeldEngine {
    events: mpsc::Sender<Vec<DeviceEvent>>,
    handle: AlarmHandle,
    wake: Arc<Notify>,
}

type Held = Arc<Mutex<BTreeMap<u16, HeldEngine>>>;

fn held_engine(held: &Held, bucket: u16) -> Option<HeldEngine> {
    held.lock().expect("no task panics while holding the lock").get(&bucket).cloned()
}

fn all_held(held: &Held) -> Vec<HeldEngine> {
    held.lock().expect("no task panics while holding the lock").values().cloned().collect()
}

/// A bucket's running engine, as the keeper holds it.
struct Running {
    service: AlarmService,
    stop: watch::Sender<bool>,
    drainer: JoinHandle<()>,
    drainer_stop: watch::Sender<bool>,
}

/// The engine buckets of this node.
#[derive(Debug, Clone)]
pub struct EngineBuckets {
    pub cluster: Cluster,
    pub store: Store,
    pub outbox: Option<OutboxHandoff>,
    pub metrics: AlarmMetrics,
    pub options: ServiceOptions,
    pub counters: EngineBucketMetrics,
    held: Held,
}

impl EngineBuckets {
    /// The engine of this node, not started.
    pub fn new(
        cluster: Cluster,
        store: Store,
        outbox: Option<OutboxHandoff>,
        metrics: AlarmMetrics,
        options: ServiceOptions,
        counters: EngineBucketMetrics,
    ) -> EngineBuckets {
        EngineBuckets { cluster, store, outbox, metrics, options, counters, held: Held::default() }
    }

    /// Starts the router of `events`, the bucket keeper, the listener and the API's front. The
    /// returned service's `engine_task` is the router (it ends when the event senders are
    /// gone), its `effects_task` the keeper (at `stop` it gives every bucket up: each engine
    /// evaluates what it was sent, saves its state, and its lease is released).
    pub fn start(
        self,
        events: mpsc::Receiver<Vec<DeviceEvent>>,
        postgres_url: String,
        stop: watch::Receiver<bool>,
    ) -> AlarmService {
        let (handle, inbox) = AlarmHandle::front();
        let router = tokio::spawn(self.clone().route(events));
        drop(tokio::spawn(self.clone().front(inbox, stop.clone())));
        drop(tokio::spawn(self.clone().listen(postgres_url, stop.clone())));
        let keeper = tokio::spawn(self.keep(stop));
        AlarmService { handle, engine_task: router, effects_task: keeper }
    }

    /// Hands each batch's events to the engine of their bucket here, or queues them for the
    /// bucket's holder (or the next one) in PostgreSQL.
    async fn route(self, mut events: mpsc::Receiver<Vec<DeviceEvent>>) {
        while let Some(first) = events.recv().await {
            let mut batches = vec![first];
            while batches.len() < ROUTER_COALESCE {
                match events.try_recv() {
                    Ok(batch) => batches.push(batch),
                    Err(_) => break,
                }
            }
            let by_bucket = group_by_bucket(batches.into_iter().flatten());
            let mut remote: Vec<(u16, String, usize)> = Vec::new();
            for (bucket, events) in by_bucket {
                let events = match held_engine(&self.held, bucket) {
                    Some(engine) => match engine.events.send(events).await {
                        Ok(()) => continue,
                        // Being given up: its holder-to-be takes them from the queue.
                        Err(mpsc::error::SendError(events)) => events,
                    },
                    None => events,
                };
                for chunk in events.chunks(FORWARD_CHUNK) {
                    remote.push((bucket, encode_events(chunk), chunk.len()));
                }
            }
            for part in remote.chunks(MAX_ENGINE_BATCHES) {
                self.forward(part).await;
            }
        }
    }

    /// Queues `part` (three attempts); what is refused or fails is counted as dropped.
    async fn forward(&self, part: &[(u16, String, usize)]) {
        let batches: Vec<(u16, String)> = part.iter().map(|(b, p, _)| (*b, p.clone())).collect();
        let mut attempt = 0;
        let queued = loop {
            match self.cluster.store.forward_engine_events(&batches).await {
                Ok(queued) => break queued,
                Err(error) if attempt < 2 => {
                    attempt += 1;
                    tracing::warn!(message = "Queueing alarm events for another node failed; retrying.", %error);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => {
                    tracing::error!(message = "Alarm events for another node dropped.", %error);
                    break 0;
                }
            }
        };
        let forwarded: usize = part.iter().take(queued).map(|(_, _, n)| n).sum();
        let dropped: usize = part.iter().skip(queued).map(|(_, _, n)| n).sum();
        self.counters.forwarded.inc_by(forwarded as u64);
        if dropped > 0 {
            tracing::warn!(message = "The engine events queue is full; alarm events dropped.", events = dropped);
            self.counters.dropped.inc_by(dropped as u64);
        }
    }

    /// The API's controls, broadcast to every node (this one hears its own); replays, to an
    /// engine here.
    async fn front(self, mut inbox: FrontInbox, mut stop: watch::Receiver<bool>) {
        loop {
            let input = tokio::select! {
                input = inbox.recv() => match input {
                    Some(input) => input,
                    None => return,
                },
                () = stopped(&mut stop) => return,
            };
            match input {
                FrontInput::Control(control) => {
                    if let Err(error) = self.cluster.store.broadcast_engine_control(&encode_control(&control)).await {
                        tracing::warn!(message = "Broadcasting an alarm engine control failed; only this node's engines have it.", %error);
                        self.deliver(control).await;
                    }
                }
                FrontInput::Replay(ticket) => {
                    let engine = match ticket.enterprise() {
                        Some(e) => held_engine(&self.held, engine_bucket(e)),
                        None => all_held(&self.held).into_iter().next(),
                    };
                    ticket.deliver(engine.as_ref().map(|e| &e.handle)).await;
                }
            }
        }
    }

    /// Hands a control to the engine of its enterprise's bucket here, or (one that names no
    /// enterprise) to every engine here.
    async fn deliver(&self, control: Control) {
        let engines = match control.enterprise() {
            Some(e) => held_engine(&self.held, engine_bucket(e)).into_iter().collect(),
            None => all_held(&self.held),
        };
        for engine in engines {
            engine.handle.send(control.clone()).await;
        }
    }

    /// Hears which buckets have queued events (wakes their drainers here) and the controls.
    async fn listen(self, url: String, mut stop: watch::Receiver<bool>) {
        let mut notes =
            Reconnecting::new("engine events", || fleetpulse_store::postgres::EngineListener::connect(&url));
        while let Some(note) = notes.next(&mut stop).await {
            match note {
                EngineNote::Events(bucket) => {
                    if let Some(engine) = held_engine(&self.held, bucket) {
                        engine.wake.notify_one();
                    }
                }
                EngineNote::Control(json) => match decode_control(&json) {
                    Some(control) => self.deliver(control).await,
                    None => tracing::warn!(message = "Ignored a malformed alarm engine control."),
                },
            }
        }
    }

    /// Every quarter lease: renews the buckets held (a failed renewal stops that bucket's engine
    /// at once, three quarters of a lease before another node may take it), then balances (see
    /// [`plan_buckets`]). At `stop`, gives every bucket up.
    async fn keep(self, mut stop: watch::Receiver<bool>) {
        let c = &self.cluster;
        let mut running: BTreeMap<u16, Running> = BTreeMap::new();
        let mut tick = tokio::time::interval(c.lease / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Nodes starting together look at different buckets first.
        let start = c.id.as_str().bytes().fold(0u16, |h, b| h.wrapping_mul(31).wrapping_add(u16::from(b)));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stopped(&mut stop) => break,
            }
            for bucket in running.keys().copied().collect::<Vec<_>>() {
                let renewed =
                    tokio::time::timeout(c.lease / 4, c.store.hold_lease(&engine_lease_name(bucket), &c.id, c.lease))
                        .await;
                if !matches!(renewed, Ok(Ok(true))) {
                    tracing::warn!(
                        message = "An engine bucket's lease could not be renewed; stopping its engine.",
                        bucket
                    );
                    self.counters.lost.inc();
                    if let Some(r) = running.remove(&bucket) {
                        self.give_up(bucket, r, true).await;
                    }
                }
            }
            let (nodes, leases) = match (c.store.list_nodes().await, c.store.list_leases(ENGINE_LEASE_PREFIX).await) {
                (Ok(n), Ok(l)) => (n, l),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(message = "Reading the nodes and engine leases failed.", %error);
                    continue;
                }
            };
            let live = nodes.iter().filter(|n| n.alive && n.state == NodeState::Up && n.id != c.id).count() + 1;
            let mut per_node: BTreeMap<String, i64> = nodes.iter().map(|n| (n.id.to_string(), 0)).collect();
            let mut elsewhere = BTreeSet::new();
            for lease in leases.iter().filter(|l| l.current) {
                let Some(bucket) = lease.name.strip_prefix(ENGINE_LEASE_PREFIX).and_then(|b| b.parse::<u16>().ok())
                else {
                    continue;
                };
                *per_node.entry(lease.node_id.to_string()).or_default() += 1;
                if lease.node_id != c.id && bucket < ENGINE_BUCKETS {
                    elsewhere.insert(bucket);
                }
            }
            for (node, count) in per_node {
                self.counters.buckets.get_or_create(&NodeLabel { node }).set(count);
            }
            let held: BTreeSet<u16> = running.keys().copied().collect();
            let plan = plan_buckets(&held, &elsewhere, live, start);
            let surplus: Vec<(u16, Running)> =
                plan.release.iter().filter_map(|b| running.remove(b).map(|r| (*b, r))).collect();
            if !surplus.is_empty() {
                tracing::info!(
                    message = "Giving engine buckets up to balance the nodes.",
                    buckets = surplus.len(),
                    live
                );
                self.counters.released.inc_by(surplus.len() as u64);
                self.give_up_all(surplus).await;
            }
            for bucket in plan.take {
                if !matches!(c.store.hold_lease(&engine_lease_name(bucket), &c.id, c.lease).await, Ok(true)) {
                    continue;
                }
                match self.take(bucket).await {
                    Ok(r) => {
                        tracing::info!(message = "Took an engine bucket.", bucket, node = %c.id);
                        self.counters.taken.inc();
                        running.insert(bucket, r);
                    }
                    Err(error) => {
                        tracing::error!(message = "Starting an engine bucket failed; giving it up.", bucket, %error);
                        let _ = c.store.release_lease(&engine_lease_name(bucket), &c.id).await;
                    }
                }
            }
        }
        self.give_up_all(std::mem::take(&mut running).into_iter().collect()).await;
    }

    /// Gives `buckets` up gracefully, all at once (each waits for its own engine only).
    async fn give_up_all(&self, buckets: Vec<(u16, Running)>) {
        let giving_up: Vec<_> = buckets
            .into_iter()
            .map(|(bucket, r)| {
                let this = self.clone();
                tokio::spawn(async move { this.give_up(bucket, r, false).await })
            })
            .collect();
        for task in giving_up {
            let _ = task.await;
        }
    }

    /// Starts `bucket`'s engine (its enterprises' strategies, windows, active alarms and saved
    /// state loaded as at a restart) and its drainer.
    async fn take(&self, bucket: u16) -> Result<Running, fleetpulse_store::StoreError> {
        let (events_tx, events_rx) = mpsc::channel(BUCKET_EVENT_QUEUE);
        let (stop, stop_rx) = watch::channel(false);
        let options = ServiceOptions { owner: EngineStateOwner::Bucket(bucket), ..self.options.clone() };
        let service = AlarmService::start_with(
            self.store.clone(),
            events_rx,
            self.outbox.clone(),
            stop_rx,
            self.metrics.clone(),
            options,
        )
        .await?;
        let wake = Arc::new(Notify::new());
        let engine = HeldEngine { events: events_tx.clone(), handle: service.handle.clone(), wake: wake.clone() };
        self.held.lock().expect("no task panics while holding the lock").insert(bucket, engine);
        let (drainer_stop, drainer_stopped) = watch::channel(false);
        let drainer = tokio::spawn(self.clone().drain(bucket, events_tx, wake, drainer_stopped));
        Ok(Running { service, stop, drainer, drainer_stop })
    }

    /// Takes `bucket`'s queued events for its engine here, when told and every [`DRAIN_POLL`].
    async fn drain(
        self,
        bucket: u16,
        events: mpsc::Sender<Vec<DeviceEvent>>,
        wake: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            loop {
                let batches = match self.cluster.store.take_engine_events(bucket, DRAIN_BATCH).await {
                    Ok(batches) => batches,
                    Err(error) => {
                        tracing::warn!(message = "Taking queued alarm events failed; retrying.", bucket, %error);
                        break;
                    }
                };
                let full = batches.len() == DRAIN_BATCH;
                for payload in batches {
                    let Some(batch) = decode_events(&payload) else {
                        tracing::warn!(message = "A malformed queued alarm event batch was left out.", bucket);
                        continue;
                    };
                    self.counters.drained.inc_by(batch.len() as u64);
                    if events.send(batch).await.is_err() {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(DRAIN_POLL) => {}
                () = stopped(&mut stop) => return,
            }
        }
    }

    /// Stops `bucket`'s engine: new events are queued for the next holder; the drainer ends; the
    /// engine evaluates what it has (or, `abrupt`, gives it up as dead letters), saves its state
    /// and flushes its effects; a graceful give-up then releases the lease.
    async fn give_up(&self, bucket: u16, r: Running, abrupt: bool) {
        self.held.lock().expect("no task panics while holding the lock").remove(&bucket);
        let Running { service, stop, drainer, drainer_stop } = r;
        if abrupt {
            let _ = stop.send(true);
        }
        let _ = drainer_stop.send(true);
        let _ = tokio::time::timeout(GIVE_UP_WAIT, drainer).await;
        let AlarmService { engine_task, effects_task, handle } = service;
        drop(handle);
        let _ = tokio::time::timeout(GIVE_UP_WAIT, engine_task).await;
        let _ = stop.send(true);
        let _ = tokio::time::timeout(GIVE_UP_WAIT, effects_task).await;
        if !abrupt {
            let c = &self.cluster;
            if let Err(error) = c.store.release_lease(&engine_lease_name(bucket), &c.id).await {
                tracing::debug!(message = "Releasing an engine bucket's lease failed; it lapses.", bucket, %error);
            }
        }
    }
}
