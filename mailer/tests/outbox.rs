//! The outbox worker against a real SMTP server (aiosmtpd) and a real embedded store: what is
//! queued is sent once, transient refusals are retried after a backoff, permanent ones are not,
//! and rate limits defer rather than drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU32;
use std::time::Duration;

use fleetpulse_mailer::{Mailer, Message, OutboxConfig, OutboxWorker, PassStats, Security, SmtpConfig, enqueue};
use fleetpulse_proto::{EnterpriseId, UnixMillis};
use fleetpulse_store::Store;
use fleetpulse_store::embedded::EmbeddedConfig;
use fleetpulse_testkit::smtp::SmtpServer;

fn mailer(port: u16) -> Mailer {
    Mailer::new(SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: Security::Plain,
        username: None,
        password: None,
        from: "fleetpulse <alarms@example.com>".into(),
        timeout: Duration::from_secs(5),
    })
    .expect("mailer")
}

fn message(subject: &str, to: &str) -> Message {
    Message::builder()
        .from("fleetpulse <alarms@example.com>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject(subject)
        .body(format!("body of {subject}"))
        .unwrap()
}

fn store(dir: &std::path::Path) -> Store {
    Store::open_embedded(dir, EmbeddedConfig { fsync: false, ..EmbeddedConfig::default() }).unwrap()
}

async fn queue(store: &Store, key: &str, to: &str) -> bool {
    enqueue(store, key, EnterpriseId(1), to, &message(key, to), UnixMillis(0)).await.unwrap()
}

#[tokio::test]
async fn queued_messages_are_sent_once() {
    let server = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    assert!(queue(&store, "alarm-1", "ops@example.com").await);
    assert!(queue(&store, "alarm-2", "noc@example.com").await);
    assert!(!queue(&store, "alarm-1", "ops@example.com").await, "the same key is queued once");
    let worker = OutboxWorker::new(store.clone(), mailer(server.port()), OutboxConfig::default());
    let now = UnixMillis::now();
    assert_eq!(worker.run_once(now).await.unwrap(), PassStats { sent: 2, ..PassStats::default() });
    assert_eq!(worker.run_once(now).await.unwrap(), PassStats::default(), "nothing is sent twice");
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    assert!(
        messages.iter().any(|m| m.contains("Subject: alarm-1"))
            && messages.iter().any(|m| m.contains("Subject: alarm-2"))
    );
}

#[tokio::test]
async fn transient_refusals_are_retried_after_a_backoff_and_permanent_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let config = OutboxConfig { backoff_base: Duration::from_secs(5), ..OutboxConfig::default() };

    let busy = SmtpServer::start_failing(451, 1);
    assert!(queue(&store, "retry-me", "ops@example.com").await);
    let worker = OutboxWorker::new(store.clone(), mailer(busy.port()), config.clone());
    let now = UnixMillis::now();
    assert_eq!(worker.run_once(now).await.unwrap(), PassStats { retried: 1, ..PassStats::default() });
    assert_eq!(
        worker.run_once(UnixMillis(now.0 + 4_000)).await.unwrap(),
        PassStats::default(),
        "not before the backoff"
    );
    assert_eq!(
        worker.run_once(UnixMillis(now.0 + 5_000)).await.unwrap(),
        PassStats { sent: 1, ..PassStats::default() }
    );
    assert_eq!(busy.messages().len(), 1, "delivered once, after the retry");

    let hostile = SmtpServer::start_failing(550, usize::MAX);
    assert!(queue(&store, "reject-me", "ops@example.com").await);
    let worker = OutboxWorker::new(store.clone(), mailer(hostile.port()), config);
    assert_eq!(worker.run_once(now).await.unwrap(), PassStats { failed: 1, ..PassStats::default() });
    assert_eq!(worker.run_once(UnixMillis(now.0 + 3_600_000)).await.unwrap(), PassStats::default(), "never retried");
    assert!(hostile.messages().is_empty());
}

#[tokio::test]
async fn a_receiver_over_its_rate_limit_is_deferred_not_dropped() {
    let server = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    for i in 0..5 {
        assert!(queue(&store, &format!("storm-{i}"), "ops@example.com").await);
    }
    assert!(queue(&store, "other", "noc@example.com").await);
    let config = OutboxConfig { per_receiver_per_minute: NonZeroU32::new(2).unwrap(), ..OutboxConfig::default() };
    let worker = OutboxWorker::new(store.clone(), mailer(server.port()), config);
    let stats = worker.run_once(UnixMillis::now()).await.unwrap();
    assert_eq!((stats.sent, stats.deferred), (3, 3), "two for ops, one for noc; three wait");
    let due = store.entities.due_outbox(UnixMillis::now(), 10).await.unwrap();
    assert_eq!(due.len(), 3, "the deferred messages are still queued");
    assert_eq!(server.messages().len(), 3);
}
