//! End-to-end: rendered notifications sent with [`Mailer`] to a real SMTP server (aiosmtpd), and
//! the classification of its refusals and of an unreachable relay.

use std::time::Duration;

use fleetpulse_mailer::{
    DEFAULT_CONNECTIONS, MailError, Mailer, Message, OutboxPayload, PAYLOAD_VERSION, PayloadItem, PayloadStage,
    RenderContext, Security, SendError, SmtpConfig, render,
};
use fleetpulse_proto::{DeviceId, EnterpriseId, StrategyId};
use fleetpulse_testkit::smtp::{SmtpServer, TlsMode};

fn config(port: u16) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".to_owned(),
        port,
        security: Security::Plain,
        username: None,
        password: None,
        from: "fleetpulse <alarms@example.com>".to_owned(),
        timeout: Duration::from_secs(5),
        ca_cert: None,
        connections: DEFAULT_CONNECTIONS,
    }
}

fn message(mailer: &Mailer) -> Message {
    let key = "42".repeat(16);
    let payload = OutboxPayload {
        version: PAYLOAD_VERSION,
        stage: PayloadStage::Firing,
        enterprise_id: EnterpriseId(7),
        enterprise_name: "Acme".to_owned(),
        strategy_id: StrategyId(1),
        key: key.clone(),
        items: vec![PayloadItem {
            device_id: DeviceId(1),
            device_label: "001565aabbcc".to_owned(),
            code: 109,
            first_at: 1_709_210_096_000,
            latest_at: 1_709_210_096_000,
            count: 1,
            description: "no heartbeat <for 90 s>".to_owned(),
            resolved_at: None,
            key,
        }],
        omitted: 0,
        incident: None,
    };
    let ctx =
        RenderContext { from: mailer.from_mailbox().clone(), portal_url: "https://portal.example.com".to_owned() };
    render("ops@example.com", &[payload], &ctx).expect("renders")
}

#[tokio::test]
async fn rendered_notification_arrives_with_both_parts_and_message_id() {
    let server = SmtpServer::start();
    let mailer = Mailer::new(config(server.port())).expect("mailer");
    mailer.send(message(&mailer)).await.expect("sent");
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let m = &messages[0];
    let key = "42".repeat(16);
    for expected in [
        format!("Message-ID: <{key}@fleetpulse>"),
        format!("X-Fleetpulse-Key: {key}"),
        "To: ops@example.com".to_owned(),
        "multipart/alternative".to_owned(),
        "Content-Type: text/plain; charset=utf-8".to_owned(),
        "Content-Type: text/html; charset=utf-8".to_owned(),
        "Description: no heartbeat <for 90 s>".to_owned(),
        "no heartbeat &lt;for 90 s&gt;".to_owned(),
    ] {
        assert!(m.contains(&expected), "missing {expected:?} in\n{m}");
    }
}

#[tokio::test]
async fn reply_451_is_transient_and_a_retry_succeeds() {
    let server = SmtpServer::start_failing(451, 1);
    let mailer = Mailer::new(config(server.port())).expect("mailer");
    let err = mailer.send(message(&mailer)).await.expect_err("refused once");
    assert!(matches!(err, SendError::Transient(ref text) if text.contains("451")), "{err:?}");
    assert!(err.is_transient());
    mailer.send(message(&mailer)).await.expect("accepted the second time");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn reply_550_is_permanent() {
    let server = SmtpServer::start_failing(550, usize::MAX);
    let mailer = Mailer::new(config(server.port())).expect("mailer");
    let err = mailer.send(message(&mailer)).await.expect_err("rejected");
    assert!(matches!(err, SendError::Permanent(ref text) if text.contains("550")), "{err:?}");
    assert!(!err.is_transient());
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn unreachable_relay_is_transient() {
    let port = fleetpulse_testkit::free_port();
    let mailer = Mailer::new(config(port)).expect("mailer");
    let err = mailer.send(message(&mailer)).await.expect_err("nobody listens");
    assert!(matches!(err, SendError::Transient(_)), "{err:?}");
}

#[test]
fn invalid_sender_is_an_address_error() {
    let mut c = config(25);
    c.from = "not a mailbox".to_owned();
    assert!(matches!(Mailer::new(c), Err(MailError::Address { what: "sender", .. })));
}

/// Sends one message over `security` to a TLS test server of `mode`, trusting its CA or not.
async fn send_over_tls(mode: TlsMode, security: Security, trust_ca: bool) -> (Result<(), MailError>, usize) {
    let server = SmtpServer::start_tls(mode);
    let config = SmtpConfig {
        host: "localhost".to_owned(),
        security,
        ca_cert: trust_ca.then(|| server.ca_pem().expect("a TLS server has a CA").to_owned()),
        ..config(server.port())
    };
    let mailer = Mailer::new(config).expect("mailer");
    let result = mailer.send(message(&mailer)).await;
    (result, server.messages().len())
}

#[tokio::test]
async fn starttls_and_implicit_tls_deliver_to_a_relay_with_a_private_ca() {
    let (result, saved) = send_over_tls(TlsMode::StartTls, Security::StartTls, true).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(saved, 1);
    let (result, saved) = send_over_tls(TlsMode::Implicit, Security::Tls, true).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(saved, 1);
}

#[tokio::test]
async fn an_untrusted_certificate_or_a_missing_starttls_is_refused_before_sending() {
    // The relay's certificate is not signed by a trusted root: nothing is sent.
    let (result, saved) = send_over_tls(TlsMode::StartTls, Security::StartTls, false).await;
    assert!(result.is_err(), "an untrusted relay certificate must fail");
    assert_eq!(saved, 0);
    // STARTTLS required, but the relay does not offer it: no plain-text fallback.
    let server = SmtpServer::start();
    let mailer = Mailer::new(SmtpConfig { security: Security::StartTls, ..config(server.port()) }).expect("mailer");
    assert!(mailer.send(message(&mailer)).await.is_err(), "no fallback to plain text");
    assert!(server.messages().is_empty());
}
