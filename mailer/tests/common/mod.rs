//! What the mailer's integration tests share: a mailer for the local SMTP sink, a one-alarm
//! payload named after its test, and an embedded store without fsync.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fleetpulse_mailer::{
    DEFAULT_CONNECTIONS, Mailer, OutboxPayload, PayloadItem, PayloadStage, Queued, Security, SmtpConfig,
};
use fleetpulse_proto::{DeviceId, EnterpriseId, StrategyId, UnixMillis};
use fleetpulse_store::Store;
use fleetpulse_store::embedded::EmbeddedConfig;

/// A mailer for the plain SMTP server on `127.0.0.1:port`.
pub fn mailer(port: u16) -> Mailer {
    mailer_with_connections(port, DEFAULT_CONNECTIONS)
}

/// [`mailer`] with at most `connections` connections open at once.
pub fn mailer_with_connections(port: u16, connections: usize) -> Mailer {
    Mailer::new(SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: Security::Plain,
        username: None,
        password: None,
        from: "fleetpulse <alarms@example.com>".into(),
        timeout: Duration::from_secs(5),
        ca_cert: None,
        connections,
    })
    .expect("mailer")
}

/// A one-alarm notification whose description and key are `name` (keys are 32 hex digits).
pub fn payload(name: &str) -> OutboxPayload {
    let key = format!("{:0>32}", name.bytes().map(|b| format!("{b:02x}")).collect::<String>());
    let key = key[key.len() - 32..].to_owned();
    OutboxPayload {
        version: 1,
        stage: PayloadStage::Firing,
        enterprise_id: EnterpriseId(1),
        enterprise_name: "Acme".into(),
        strategy_id: StrategyId(1),
        key: key.clone(),
        items: vec![PayloadItem {
            device_id: DeviceId(1),
            device_label: "lobby".into(),
            code: 105,
            first_at: 0,
            latest_at: 0,
            count: 1,
            description: name.into(),
            resolved_at: None,
            key,
        }],
        omitted: 0,
        incident: None,
    }
}

/// [`payload`] queued for `to`, due now.
pub fn queued(name: &str, to: &str) -> Queued {
    let payload = payload(name);
    let item_keys = vec![payload.key.clone()];
    Queued { receiver: to.into(), payload, item_keys, not_before: UnixMillis(0), audit: Vec::new() }
}

/// An embedded store in `dir`, without fsync.
pub fn store(dir: &std::path::Path) -> Store {
    Store::open_embedded(dir, EmbeddedConfig { fsync: false, ..EmbeddedConfig::default() }).unwrap()
}
