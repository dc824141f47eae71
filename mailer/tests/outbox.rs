//! The outbox worker against a real SMTP server (aiosmtpd) and a real embedded store: what is
//! queued is sent once, transient refusals are retried after a backoff, permanent ones are not,
//! and rate limits defer rather than drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{mailer, payload, queued, store};
use std::num::NonZeroU32;
use std::time::Duration;

use fleetpulse_mailer::{OutboxConfig, OutboxWorker, PassStats, enqueue};
use fleetpulse_proto::{EnterpriseId, UnixMillis};
use fleetpulse_store::Store;
use fleetpulse_testkit::smtp::SmtpServer;

async fn queue(store: &Store, name: &str, to: &str) -> bool {
    enqueue(store.entities.as_ref(), vec![queued(name, to)]).await.unwrap() == 1
}

fn new_worker(store: &Store, port: u16, config: OutboxConfig) -> OutboxWorker {
    OutboxWorker::new(store.entities.clone(), mailer(port), "https://portal.example.com", config)
}

#[tokio::test]
async fn queued_messages_are_sent_once() {
    let server = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    assert!(queue(&store, "alarm-1", "ops@example.com").await);
    assert!(queue(&store, "alarm-2", "noc@example.com").await);
    assert!(!queue(&store, "alarm-1", "ops@example.com").await, "the same key is queued once");
    let worker = new_worker(&store, server.port(), OutboxConfig::default());
    let now = UnixMillis::now();
    assert_eq!(worker.run_once(now).await.unwrap(), PassStats { sent: 2, emails: 2, ..PassStats::default() });
    assert_eq!(worker.run_once(now).await.unwrap(), PassStats::default(), "nothing is sent twice");
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    assert!(
        messages.iter().any(|m| m.contains("Application crash on lobby: alarm-1"))
            && messages.iter().any(|m| m.contains("Application crash on lobby: alarm-2")),
        "{messages:#?}"
    );
}

#[tokio::test]
async fn transient_refusals_are_retried_after_a_backoff_and_permanent_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let config = OutboxConfig { backoff_base: Duration::from_secs(5), ..OutboxConfig::default() };

    let busy = SmtpServer::start_failing(451, 1);
    assert!(queue(&store, "retry-me", "ops@example.com").await);
    let worker = new_worker(&store, busy.port(), config.clone());
    let now = UnixMillis::now();
    assert_eq!(worker.run_once(now).await.unwrap(), PassStats { retried: 1, ..PassStats::default() });
    assert_eq!(
        worker.run_once(UnixMillis(now.0 + 4_000)).await.unwrap(),
        PassStats::default(),
        "not before the backoff"
    );
    assert_eq!(
        worker.run_once(UnixMillis(now.0 + 5_000)).await.unwrap(),
        PassStats { sent: 1, emails: 1, ..PassStats::default() }
    );
    assert_eq!(busy.messages().len(), 1, "delivered once, after the retry");

    let hostile = SmtpServer::start_failing(550, usize::MAX);
    assert!(queue(&store, "reject-me", "ops@example.com").await);
    let worker = new_worker(&store, hostile.port(), config);
    assert_eq!(worker.run_once(now).await.unwrap(), PassStats { failed: 1, ..PassStats::default() });
    assert_eq!(worker.run_once(UnixMillis(now.0 + 3_600_000)).await.unwrap(), PassStats::default(), "never retried");
    assert!(hostile.messages().is_empty());
}

#[tokio::test]
async fn what_a_rate_limit_holds_back_goes_out_in_one_digest_and_nothing_is_dropped() {
    let server = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    for i in 0..5 {
        assert!(queue(&store, &format!("storm-{i}"), "ops@example.com").await);
    }
    assert!(queue(&store, "other", "noc@example.com").await);
    let config = OutboxConfig { per_receiver_per_minute: NonZeroU32::new(2).unwrap(), ..OutboxConfig::default() };
    let worker = new_worker(&store, server.port(), config);
    let stats = worker.run_once(UnixMillis::now()).await.unwrap();
    assert_eq!(stats, PassStats { sent: 6, emails: 2, digests: 1, ..PassStats::default() }, "5 for ops in one digest");
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    let digest = messages.iter().find(|m| m.contains("To: ops@example.com")).expect("the digest");
    assert!(digest.contains("Digest: 5 notifications, 5 alarms"), "{digest}");
    for i in 0..5 {
        assert!(digest.contains(&format!("storm-{i}")), "storm-{i} in the digest");
    }

    // The second token of the minute goes to the next digest; after it, ops is over its limit and
    // what comes is kept (deferred), not dropped.
    for i in 5..8 {
        assert!(queue(&store, &format!("storm-{i}"), "ops@example.com").await);
    }
    let stats = worker.run_once(UnixMillis::now()).await.unwrap();
    assert_eq!(stats, PassStats { sent: 3, emails: 1, digests: 1, ..PassStats::default() });
    assert!(queue(&store, "storm-8", "ops@example.com").await);
    let stats = worker.run_once(UnixMillis::now()).await.unwrap();
    assert_eq!(stats, PassStats { deferred: 1, ..PassStats::default() });
    let due = store.entities.due_outbox(UnixMillis::now(), 10).await.unwrap();
    assert_eq!(due.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), [payload("storm-8").key.as_str()]);
    assert_eq!(server.messages().len(), 3, "at most the rate limit of emails");
}

#[tokio::test]
async fn a_crash_after_acceptance_sends_at_most_once_more_with_the_same_message_id() {
    let server = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    assert!(queue(&store, "crash", "ops@example.com").await);
    // The process that "crashes": its email is accepted, its Sent record never written.
    let message = fleetpulse_mailer::render(
        "ops@example.com",
        &[payload("crash")],
        &fleetpulse_mailer::RenderContext {
            from: "fleetpulse <alarms@example.com>".parse().unwrap(),
            portal_url: "https://portal.example.com".into(),
        },
    )
    .unwrap();
    mailer(server.port()).send(message).await.unwrap();
    // The next process sends it again, once.
    let worker = new_worker(&store, server.port(), OutboxConfig::default());
    assert_eq!(worker.run_once(UnixMillis::now()).await.unwrap().emails, 1);
    assert_eq!(worker.run_once(UnixMillis::now()).await.unwrap(), PassStats::default());
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    let id = |m: &str| m.lines().find(|l| l.starts_with("Message-ID:")).map(str::to_owned);
    assert_eq!(id(&messages[0]), id(&messages[1]), "receivers can tell the duplicate");
    assert!(id(&messages[0]).is_some());
}

#[tokio::test]
async fn a_receiver_with_a_backlog_over_its_limit_does_not_starve_the_others() {
    let server = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    for i in 0..20 {
        assert!(queue(&store, &format!("backlog-{i}"), "busy@example.com").await);
    }
    let config =
        OutboxConfig { per_receiver_per_minute: NonZeroU32::new(1).unwrap(), batch: 5, ..OutboxConfig::default() };
    let worker = new_worker(&store, server.port(), config);
    let stats = worker.run_once(UnixMillis::now()).await.unwrap();
    if (stats.emails, stats.sent, stats.digests) != (1, 5, 1) {
        // This once failed in CI with (0, 0, 1) and never again: say why the digest was refused.
        let waiting = store.entities.due_outbox(UnixMillis(i64::MAX / 2), 100).await.unwrap();
        let errors: std::collections::BTreeSet<_> = waiting.iter().filter_map(|m| m.last_error.clone()).collect();
        panic!("the oldest five should go out in one digest: {stats:?}, errors {errors:?}");
    }
    assert_eq!(worker.run_once(UnixMillis::now()).await.unwrap().deferred, 5, "busy is over its limit");
    // Behind busy's backlog of 15, a message for another receiver still goes out at once.
    assert!(queue(&store, "quiet-1", "quiet@example.com").await);
    let stats = worker.run_once(UnixMillis::now()).await.unwrap();
    assert_eq!((stats.emails, stats.sent, stats.deferred), (1, 1, 0), "{stats:?}");
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    assert!(messages[1].contains("To: quiet@example.com"), "{}", messages[1]);
    assert_eq!(store.entities.due_outbox(UnixMillis::now(), 100).await.unwrap().len(), 15, "busy's rest waits");
}

/// Queues a password reset email (token `token`) to `to` under its own key.
async fn queue_reset(store: &Store, token: &str, to: &str) {
    use fleetpulse_mailer::{AccountEmail, AccountEmailPayload};
    let key = format!("{:0>32}", token);
    let payload =
        AccountEmailPayload::new(key.clone(), AccountEmail::PasswordReset { token: token.into(), expires_at: 0 });
    let message = fleetpulse_store::NewOutboxMessage {
        key,
        enterprise_id: EnterpriseId(0),
        receiver: to.into(),
        payload: payload.to_json(),
        not_before: UnixMillis(0),
        item_keys: Vec::new(),
    };
    assert!(store.entities.enqueue_outbox(message, UnixMillis::now()).await.unwrap());
}

#[tokio::test]
async fn account_emails_go_out_alone_and_only_the_newest_of_a_kind() {
    let server = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    for token in ["aaa1", "aaa2", "aaa3"] {
        queue_reset(&store, token, "user@example.com").await;
    }
    assert!(queue(&store, "alarm-1", "user@example.com").await);
    let config = OutboxConfig { per_receiver_per_minute: NonZeroU32::new(1).unwrap(), ..OutboxConfig::default() };
    let worker = new_worker(&store, server.port(), config);
    let stats = worker.run_once(UnixMillis::now()).await.unwrap();
    assert_eq!((stats.sent, stats.emails), (2, 2), "{stats:?}");
    let messages: Vec<String> = server.messages().iter().map(|m| m.replace("=\r\n", "").replace("=3D", "=")).collect();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    let reset = messages.iter().find(|m| m.contains("Reset your password")).expect("the reset email");
    assert!(reset.contains("https://portal.example.com/reset-password?token=aaa3"), "the newest link: {reset}");
    assert!(!reset.contains("aaa1") && !reset.contains("Application crash"), "alone: {reset}");
    assert!(messages.iter().any(|m| m.contains("Application crash on lobby: alarm-1")));
    // The superseded ones are settled, not retried.
    assert_eq!(worker.run_once(UnixMillis::now()).await.unwrap(), PassStats::default());
    assert!(store.entities.due_outbox(UnixMillis(i64::MAX / 2), 10).await.unwrap().is_empty());
}

/// Messages carrying more planned audit entries than one store batch takes are queued over
/// several batches, each message's entries in its own batch's transaction; a message queued
/// again records none twice.
#[tokio::test]
async fn planned_audit_entries_are_queued_with_their_messages_across_store_batches() {
    use fleetpulse_proto::{AlarmTypeCode, DeviceId};
    use fleetpulse_store::{AlarmAuditEntry, AuditEvent, MAX_AUDIT_BATCH};

    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let per_message = MAX_AUDIT_BATCH / 2 + 1;
    let with_audit = |name: &str, device: u64| {
        let mut q = queued(name, "ops@example.com");
        q.audit = (0..per_message as i64)
            .map(|first_at| AlarmAuditEntry {
                enterprise_id: EnterpriseId(1),
                device_id: DeviceId(device),
                code: AlarmTypeCode(105),
                first_at: UnixMillis(first_at),
                at: UnixMillis(1_000),
                event: AuditEvent::Planned,
                receiver: Some("ops@example.com".into()),
                message_key: Some(q.payload.key.clone()),
                detail: format!("planned {name}"),
            })
            .collect();
        q
    };
    // Two such messages do not fit one batch's entries: two transactions, all entries kept.
    let added = enqueue(store.entities.as_ref(), vec![with_audit("audit-1", 11), with_audit("audit-2", 12)]);
    assert_eq!(added.await.unwrap(), 2);
    let again = enqueue(store.entities.as_ref(), vec![with_audit("audit-1", 11), with_audit("audit-3", 13)]);
    assert_eq!(again.await.unwrap(), 1, "audit-1 was queued before");
    for (device, name) in [(11, "audit-1"), (12, "audit-2"), (13, "audit-3")] {
        for first_at in [0, per_message as i64 - 1] {
            let story =
                store.entities.notification_audit(DeviceId(device), AlarmTypeCode(105), UnixMillis(first_at), 10);
            let story = story.await.unwrap();
            assert_eq!(story.len(), 1, "one planned entry per activation of {name}: {story:?}");
            assert_eq!(
                (story[0].event, story[0].detail.as_str()),
                (AuditEvent::Planned, format!("planned {name}").as_str())
            );
        }
    }
}
