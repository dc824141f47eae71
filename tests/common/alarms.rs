//! Helpers of the alarm notification tests: SMTP config, strategies, devices raising alarms,
//! reading what the relay received.

use std::time::{Duration, Instant};

use fleetpulse_proto::wire::{AlarmAction, AlarmReport, Downlink, Message, Uplink};
use fleetpulse_testkit::smtp::SmtpServer;
use serde_json::json;

use super::{Api, RawDevice, TestServer};

/// The `[smtp]` and `[notify]` sections for the test relay, plus `extra` lines.
pub fn mail_config(smtp: &SmtpServer, notify_extra: &str) -> String {
    format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"plain\"\nfrom = \"fleetpulse <alarms@fleetpulse.test>\"\ntimeout = 5\n\
         [notify]\nportal_url = \"https://portal.fleetpulse.test\"\nbackoff_base_s = 1\n{notify_extra}",
        smtp.port()
    )
}

/// Creates a strategy for `enterprise` from the default below patched with `patch`.
pub async fn strategy(api: &Api, enterprise: u64, patch: serde_json::Value) -> u64 {
    let mut body = json!({
        "name": "ops",
        "enabled": true,
        "alarm_types": [],
        "severities": [],
        "receivers": ["ops@example.test"],
        "group_wait_ms": 0,
        "group_interval_ms": 1000,
        "repeat_interval_ms": 3_600_000,
    });
    for (k, v) in patch.as_object().unwrap() {
        body[k] = v.clone();
    }
    let created = api.post(&format!("/api/v1/enterprises/{enterprise}/alarm-strategies"), body).await;
    created["id"].as_u64().unwrap()
}

/// A device that said Hello and got its Welcome.
pub async fn device(server: &TestServer, credential: &str, mac: &str) -> RawDevice {
    let mut dev = RawDevice::connect(server).await;
    dev.send(&[RawDevice::hello(mac, credential, 30)]).await;
    match dev.next().await {
        Some(Downlink::Welcome(_)) => dev,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

pub fn alarm(seq: u64, code: u16, raise: bool, description: &str) -> Uplink {
    let action = if raise { AlarmAction::Raise } else { AlarmAction::Clear };
    RawDevice::data(seq, Message::Alarm(AlarmReport { code, action, description: description.into(), log: None }))
}

/// Reads acknowledgements until `seq` is acknowledged.
pub async fn acked(dev: &mut RawDevice, seq: u64) {
    loop {
        match dev.next().await {
            Some(Downlink::Ack(a)) if a.seq >= seq => return,
            Some(Downlink::Ack(_)) => {}
            other => panic!("expected Ack, got {other:?}"),
        }
    }
}

/// Waits until the relay holds at least `n` messages; returns them.
pub async fn emails(smtp: &SmtpServer, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let messages = smtp.messages();
        if messages.len() >= n || Instant::now() > deadline {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `To:` address of a saved message.
pub fn to(message: &str) -> &str {
    message.lines().find_map(|l| l.strip_prefix("To: ")).unwrap_or("")
}

pub fn message_id(message: &str) -> Option<&str> {
    message.lines().find_map(|l| l.strip_prefix("Message-ID: "))
}

/// Notifications an email carries: the count a digest states, else 1.
pub fn notifications_in(message: &str) -> usize {
    let Some(pos) = message.find(" notifications held back by the rate limit") else { return 1 };
    let start = message[..pos].rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
    message[start..pos].parse().unwrap()
}

/// Makes the outbox table refuse inserts (`read_only`) or accept them again, from outside the
/// server, as a real store failure: the server's writes to it fail with SQLite's own error.
pub fn outbox_read_only(dir: &std::path::Path, read_only: bool) {
    let db = rusqlite::Connection::open(dir.join("fleetpulse.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let sql = if read_only {
        "CREATE TRIGGER dead_letter_test_read_only BEFORE INSERT ON outbox \
         BEGIN SELECT RAISE(ABORT, 'the outbox is read-only'); END;"
    } else {
        "DROP TRIGGER dead_letter_test_read_only"
    };
    db.execute_batch(sql).unwrap();
}
