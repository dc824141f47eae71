//! Sending rendered messages over SMTP, with every failure classified as transient or permanent.

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransportBuilder, Error as SmtpError};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Security, SmtpConfig};
use crate::{MailError, SendError};

/// Sends messages through one SMTP relay, over a pool of reused connections (lettre's pool: up to
/// 10, idle ones closed after 60 s).
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
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
    /// the TLS parameters cannot be built or only one of username and password is set.
    pub fn new(config: SmtpConfig) -> Result<Mailer, MailError> {
        let from = config.from.parse().map_err(|source| MailError::Address {
            what: "sender",
            address: config.from.clone(),
            source,
        })?;
        let transport_error = |e: SmtpError| MailError::Transport(e.to_string());
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
        let relay = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host);
        let mut builder: AsyncSmtpTransportBuilder = match config.security {
            Security::Plain => relay,
            Security::StartTls => relay.tls(Tls::Required(tls()?)),
            Security::Tls => relay.tls(Tls::Wrapper(tls()?)),
        };
        builder = builder.port(config.port).timeout(Some(config.timeout));
        match (config.username, config.password) {
            (Some(user), Some(password)) => builder = builder.credentials(Credentials::new(user, password)),
            (None, None) => {}
            _ => return Err(MailError::Transport("username and password must be set together".to_owned())),
        }
        Ok(Mailer { transport: builder.build(), from })
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
        self.transport.send(msg).await.map(|_| ()).map_err(classify)
    }

    /// Sends an already formatted message (as kept in the outbox) to `receiver`, from the
    /// configured sender. Errors as [`Mailer::send`]; an invalid receiver is permanent.
    pub async fn send_raw(&self, receiver: &str, formatted: &[u8]) -> Result<(), SendError> {
        let to: lettre::Address =
            receiver.parse().map_err(|e| MailError::Permanent(format!("invalid receiver {receiver:?}: {e}")))?;
        let envelope = lettre::address::Envelope::new(Some(self.from.email.clone()), vec![to])
            .map_err(|e| MailError::Permanent(format!("envelope: {e}")))?;
        self.transport.send_raw(&envelope, formatted).await.map(|_| ()).map_err(classify)
    }
}

/// Transient unless the server said no for good (5xx) or the client cannot send the message.
fn classify(e: SmtpError) -> SendError {
    // The text names the reply code ("permanent error (550): ...").
    let text = e.to_string();
    let code = e.status().map(u16::from);
    if e.is_permanent() || e.is_client() || code.is_some_and(|c| (500..600).contains(&c)) {
        MailError::Permanent(text)
    } else {
        // `is_transient()` (4xx), `is_timeout()`, connection and TLS failures, a garbled reply.
        MailError::Transient(text)
    }
}
