//! The running outbox worker (`OutboxWorker::run`) against a real SMTP server (aiosmtpd) and a
//! real embedded store: fresh messages handed over by whoever queued them and messages only the
//! store holds each go out once, their outcomes are recorded, and what a rate limit holds back
//! stays queued.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{mailer, queued, store};
use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use fleetpulse_mailer::{OutboxConfig, OutboxMetrics, OutboxWorker, Queued, enqueue};
use fleetpulse_proto::UnixMillis;
use fleetpulse_testkit::smtp::SmtpServer;

fn config(per_receiver_per_minute: u32) -> OutboxConfig {
    OutboxConfig {
        poll_interval: Duration::from_millis(50),
        per_receiver_per_minute: NonZeroU32::new(per_receiver_per_minute).unwrap(),
        global_per_second: NonZeroU32::new(10_000).unwrap(),
        ..OutboxConfig::default()
    }
}

/// How many emails carry each alarm description starting with `name`.
fn descriptions(server: &SmtpServer, name: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for m in server.messages() {
        let words: HashSet<&str> =
            m.split(|c: char| c.is_whitespace() || c == '<' || c == '>').filter(|w| w.starts_with(name)).collect();
        for word in words {
            *seen.entry(word.to_owned()).or_insert(0) += 1;
        }
    }
    seen
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_over_and_stored_messages_each_go_out_once_with_their_outcomes_recorded() {
    let server = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    // Queued before the worker runs, as by an earlier process: only the store read finds them.
    let before: Vec<Queued> = (0..3).map(|i| queued(&format!("msg-before-{i}"), "ops@example.com")).collect();
    assert_eq!(enqueue(store.entities.as_ref(), before).await.unwrap(), 3);
    let metrics = OutboxMetrics::default();
    let worker =
        OutboxWorker::new(store.entities.clone(), mailer(server.port()), "https://portal.example.com", config(10_000))
            .with_metrics(metrics.clone());
    let handoff = worker.handoff();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(stopped));
    // Fresh ones, handed over as they are queued, while store reads every 50 ms see them too.
    for i in 0..40 {
        let fresh = queued(&format!("msg-fresh-{i}"), &format!("r{}@example.com", i % 4));
        assert_eq!(handoff.enqueue(store.entities.as_ref(), vec![fresh]).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let again = queued("msg-fresh-0", "r0@example.com");
    assert_eq!(handoff.enqueue(store.entities.as_ref(), vec![again]).await.unwrap(), 0, "a key is queued once");
    until("43 emails", || server.messages().len() >= 43).await;
    // Several more store reads and hand-off checks: nothing goes out twice.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.send(true).unwrap();
    running.await.unwrap();
    let seen = descriptions(&server, "msg-");
    assert_eq!(server.messages().len(), 43, "{seen:?}");
    assert_eq!(seen.len(), 43, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    let later = UnixMillis(UnixMillis::now().0 + 3_600_000);
    assert!(store.entities.due_outbox(later, 100).await.unwrap().is_empty(), "every outcome recorded as sent");
    assert_eq!(metrics.emails_sent.get(), 43);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_messages_go_out_from_the_hand_off_without_a_store_read() {
    let server = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    assert_eq!(enqueue(store.entities.as_ref(), vec![queued("first-0", "ops@example.com")]).await.unwrap(), 1);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = OutboxMetrics::register(&mut registry);
    // The store is read at start and then not for an hour.
    let config = OutboxConfig { poll_interval: Duration::from_secs(3_600), ..config(10_000) };
    let worker = OutboxWorker::new(store.entities.clone(), mailer(server.port()), "https://portal.example.com", config)
        .with_metrics(metrics.clone());
    let handoff = worker.handoff();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(stopped));
    until("the store read at start", || server.messages().len() == 1).await;
    let fresh: Vec<Queued> = (0..10).map(|i| queued(&format!("handed-{i}"), "ops@example.com")).collect();
    assert_eq!(handoff.enqueue(store.entities.as_ref(), fresh).await.unwrap(), 10);
    until("10 more emails", || server.messages().len() >= 11).await;
    stop.send(true).unwrap();
    running.await.unwrap();
    assert_eq!(server.messages().len(), 11);
    assert_eq!(metrics.handed_off.get(), 10);
    // Their wait in the hand-off is timed from the moment they were durable; the message read
    // from the store is not in it.
    assert_eq!(observations(&registry, "fleetpulse_outbox_handoff_wait_seconds"), 10);
    assert_eq!(observations(&registry, "fleetpulse_outbox_pickup_seconds"), 11);
    let later = UnixMillis(UnixMillis::now().0 + 3_600_000);
    assert!(store.entities.due_outbox(later, 100).await.unwrap().is_empty(), "every outcome recorded as sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_messages_over_a_receivers_limit_stay_queued_for_a_later_digest() {
    let server = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let worker =
        OutboxWorker::new(store.entities.clone(), mailer(server.port()), "https://portal.example.com", config(2));
    let handoff = worker.handoff();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(stopped));
    for i in 0..5 {
        let fresh = queued(&format!("limited-{i}"), "busy@example.com");
        assert_eq!(handoff.enqueue(store.entities.as_ref(), vec![fresh]).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until("2 emails", || server.messages().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.send(true).unwrap();
    running.await.unwrap();
    assert_eq!(server.messages().len(), 2, "the limit: 2 emails a minute");
    let pending = store.entities.due_outbox(UnixMillis(UnixMillis::now().0 + 3_600_000), 100).await.unwrap();
    assert_eq!(pending.len(), 3, "the rest stays queued, nothing dropped: {pending:?}");
    assert!(pending.iter().all(|m| m.attempts == 0));
}

/// The number of observations of histogram `name` in `registry`'s text exposition.
fn observations(registry: &prometheus_client::registry::Registry, name: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let prefix = format!("{name}_count ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map_or(0, |n| n.parse().unwrap())
}

/// A send's outcome and its audit entry are one commit: while the store refuses the audit
/// entries (a trigger of the test's own on the real database), the outcomes are not recorded
/// either and the messages are not sent again; once it takes them, the retried commit records
/// every outcome and writes each entry once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_of_outcomes_and_their_audit_is_retried_without_a_duplicate_entry() {
    use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId};
    use fleetpulse_store::{AlarmAuditEntry, AuditEvent};

    let server = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let planned = |q: &mut Queued, device: u64| {
        q.audit = vec![AlarmAuditEntry {
            enterprise_id: EnterpriseId(1),
            device_id: DeviceId(device),
            code: AlarmTypeCode(105),
            first_at: UnixMillis(1_000),
            at: UnixMillis(1_000),
            event: AuditEvent::Planned,
            receiver: Some(q.receiver.clone()),
            message_key: Some(q.payload.key.clone()),
            detail: "planned".into(),
        }];
    };
    let messages: Vec<Queued> = (0..3)
        .map(|i| {
            let mut q = queued(&format!("refused-{i}"), "ops@example.com");
            planned(&mut q, 21 + i);
            q
        })
        .collect();
    assert_eq!(enqueue(store.entities.as_ref(), messages).await.unwrap(), 3);
    // From now on every audit entry is refused, and with it the transaction that writes it.
    let db = rusqlite::Connection::open(dir.path().join(fleetpulse_store::embedded::DB_FILE)).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch(
        "CREATE TABLE test_refuse_audit (n INTEGER); INSERT INTO test_refuse_audit VALUES (1); \
         CREATE TRIGGER test_refuse_audit BEFORE INSERT ON notification_audit \
         WHEN EXISTS (SELECT 1 FROM test_refuse_audit) BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = OutboxMetrics::register(&mut registry);
    let worker =
        OutboxWorker::new(store.entities.clone(), mailer(server.port()), "https://portal.example.com", config(10_000))
            .with_metrics(metrics)
            .with_audit(store.entities.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(stopped));
    until("3 emails", || server.messages().len() >= 3).await;
    let started = Instant::now();
    while observations(&registry, "fleetpulse_outbox_record_seconds") < 2 {
        assert!(started.elapsed() < Duration::from_secs(20), "no commit of outcomes tried twice");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Commits were tried and refused: no outcome recorded without its entry.
    let later = UnixMillis(UnixMillis::now().0 + 3_600_000);
    let pending = store.entities.due_outbox(later, 100).await.unwrap();
    assert_eq!(pending.len(), 3, "{pending:?}");
    assert!(pending.iter().all(|m| m.attempts == 0), "{pending:?}");
    db.execute("DELETE FROM test_refuse_audit", []).unwrap();
    let started = Instant::now();
    while !store.entities.due_outbox(later, 100).await.unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "outcomes not recorded after the store recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    running.await.unwrap();
    assert_eq!(server.messages().len(), 3, "claimed messages are not sent again while their commit fails");
    for device in 21..24 {
        let story = store.entities.notification_audit(DeviceId(device), AlarmTypeCode(105), UnixMillis(1_000), 10);
        let events: Vec<AuditEvent> = story.await.unwrap().iter().map(|e| e.event).collect();
        assert_eq!(events, [AuditEvent::Planned, AuditEvent::Sent], "device {device}");
    }
}
