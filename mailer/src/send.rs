//! Sending rendered messages over SMTP, with every failure classified as transient or permanent.

use std::sync::Arc;

use lettre::Message;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};

use crate::config::{MAX_CONNECTIONS, Security, SmtpConfig};
use crate::smtp_pool::{Relay, SendTimings, SmtpPool};
use crate::{MailError, SendError};

/// Sends messages through one SMTP relay, over a bounded pool of reused connections (up to
/// [`SmtpConfig::connections`], idle ones closed after a minute) opened with `TCP_NODELAY`
/// (`smtp_pool.rs`).
#[derive(Clone)]
pub struct Mailer {
    pool: Arc<SmtpPool>,
    from: lettre::message::Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from).finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for the relay in `config`. Does not connect yet.
    ///
    /// # Errors
    ///
    /// [`MailError::Address`] if `config.from` is not a valid mailbox, [`MailError::Transport`] if
    /// the TLS parameters cannot be built, only one of username and password is set, or
    /// `connections` is not between 1 and [`MAX_CONNECTIONS`].
    pub fn new(config: SmtpConfig) -> Result<Mailer, MailError> {
        if !(1..=MAX_CONNECTIONS).contains(&config.connections) {
            return Err(MailError::Transport(format!(
                "connections = {} is out of range: 1 to {MAX_CONNECTIONS} connections to the relay",
                config.connections
            )));
        }
        let from = config.from.parse().map_err(|source| MailError::Address {
            what: "sender",
            address: config.from.clone(),
            source,
        })?;
        let transport_error = |e: lettre::transport::smtp::Error| MailError::Transport(e.to_string());
        let tls = || -> Result<TlsParameters, MailError> {
            let mut params = TlsParameters::builder(config.host.clone());
            if let Some(path) = &config.ca_cert {
                let pem = std::fs::read(path)
                    .map_err(|e| MailError::Transport(format!("reading ca_cert {}: {e}", path.display())))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| MailError::Transport(format!("ca_cert {}: {e}", path.display())))?;
                params = params.add_root_certificate(cert);
            }
            params.build_rustls().map_err(transport_error)
        };
        let tls = match config.security {
            Security::Plain => None,
            Security::StartTls | Security::Tls => Some(tls()?),
        };
        let credentials = match (config.username, config.password) {
            (Some(user), Some(password)) => Some(Credentials::new(user, password)),
            (None, None) => None,
            _ => return Err(MailError::Transport("username and password must be set together".to_owned())),
        };
        let relay = Relay {
            host: config.host,
            port: config.port,
            security: config.security,
            tls,
            credentials,
            timeout: config.timeout,
        };
        Ok(Mailer { pool: Arc::new(SmtpPool::new(relay, config.connections)), from })
    }

    /// Most connections to the relay open at once, and so the emails a worker keeps in flight.
    pub fn connections(&self) -> usize {
        self.pool.connections()
    }

    /// The configured sender, for [`crate::RenderContext::from`].
    pub fn from_mailbox(&self) -> &lettre::message::Mailbox {
        &self.from
    }

    /// Sends `msg` to the recipients of its `To`/`Cc`/`Bcc` headers.
    ///
    /// # Errors
    ///
    /// [`SendError::Transient`] for a 4xx reply, a connection failure, a timeout or a TLS failure
    /// (retry with backoff); [`SendError::Permanent`] for a 5xx reply or a message the client
    /// cannot send (do not retry).
    pub async fn send(&self, msg: Message) -> Result<(), SendError> {
        self.send_timed(msg).await.0
    }

    /// [`Mailer::send`], with how long its SMTP stages took.
    pub async fn send_timed(&self, msg: Message) -> (Result<(), SendError>, SendTimings) {
        let formatted = msg.formatted();
        self.pool.send(msg.envelope(), &formatted).await
    }

    /// Sends an already formatted message (as kept in the outbox) to `receiver`, from the
    /// configured sender. Errors as [`Mailer::send`]; an invalid receiver is permanent.
    pub async fn send_raw(&self, receiver: &str, formatted: &[u8]) -> Result<(), SendError> {
        let to: lettre::Address =
            receiver.parse().map_err(|e| MailError::Permanent(format!("invalid receiver {receiver:?}: {e}")))?;
        let envelope = lettre::address::Envelope::new(Some(self.from.email.clone()), vec![to])
            .map_err(|e| MailError::Permanent(format!("envelope: {e}")))?;
        self.pool.send(&envelope, formatted).await.0
    }
}
