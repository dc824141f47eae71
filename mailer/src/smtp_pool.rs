//! The SMTP connections to the relay: opened over a TCP socket of ours with `TCP_NODELAY`, then
//! handed to lettre's [`AsyncSmtpConnection`], and kept in a small bounded pool for reuse.
//!
//! Why not lettre's own transport: it opens the socket itself without `TCP_NODELAY`, and writes a
//! message's body and its closing `.` in two writes, so Nagle held the `.` back until the relay's
//! delayed ACK (≈ 40 ms on Linux) on every email (`docs/PERFORMANCE.md`). Here the socket is ours;
//! lettre still speaks the protocol (EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA, dot-stuffing).
//!
//! - At most `connections` (from `[smtp]`) are open at once; a sender beyond them waits for one.
//! - Where the relay offers `PIPELINING`, an email's envelope commands go out in one write
//!   (`pipelining.rs`): two round trips per email instead of four.
//! - A connection goes back to the pool only after a successful send; one idle for longer than
//!   [`IDLE_TIMEOUT`] is closed instead of reused.
//! - A reused connection that fails without an SMTP reply (the relay closed it while idle) is
//!   replaced by a new one once, for the same message. That may deliver the message twice if
//!   the relay had accepted it and the reply was lost: the outbox's at-least-once, nothing more.
//! - Every send (connect included) is bounded by the configured timeout.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
#[allow(deprecated)] // lettre's only way to put TLS on a stream of ours before the greeting
use lettre::transport::smtp::client::AsyncNetworkStream;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::config::Security;
use crate::{MailError, SendError};

/// An idle connection older than this is closed rather than reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how to connect.
pub(crate) struct Relay {
    /// Host name (also the TLS name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport security.
    pub security: Security,
    /// TLS parameters (for `StartTls` and `Tls`).
    pub tls: Option<TlsParameters>,
    /// Login, if any.
    pub credentials: Option<Credentials>,
    /// Bound of a connect and of a send.
    pub timeout: Duration,
}

/// How long the two SMTP stages of one send took.
#[derive(Debug, Clone, Default)]
pub struct SendTimings {
    /// Waiting for a connection: a pooled one, or a new one connected (greeting, EHLO, TLS, AUTH).
    pub checkout: Duration,
    /// Whether the connection was reused from the pool.
    pub reused: bool,
    /// `MAIL FROM` until the relay accepted the data (`250` after the final `.`).
    pub data: Duration,
    /// The relay's reply to the data when it accepted them (code and first line).
    pub reply: Option<String>,
}

/// A bounded pool of connections to one relay.
pub(crate) struct SmtpPool {
    relay: Relay,
    hello: ClientId,
    idle: Mutex<Vec<(Connection, Instant)>>,
    slots: Semaphore,
    /// Most connections open at once (the slots' count).
    connections: usize,
}

/// One connection to the relay and what it offers.
struct Connection {
    smtp: AsyncSmtpConnection,
    /// The relay listed `PIPELINING` (and pipelining is not turned off).
    pipelining: bool,
}

/// Why one attempt on one connection failed.
enum Failure {
    /// lettre's error (with the reply code, if the relay answered).
    Smtp(SmtpError),
    /// The timeout elapsed.
    TimedOut,
}

impl SmtpPool {
    /// A pool of at most `connections` connections to `relay`; connects lazily.
    pub fn new(relay: Relay, connections: usize) -> SmtpPool {
        SmtpPool {
            relay,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(connections),
            connections,
        }
    }

    /// Most connections open at once.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Sends `bytes` (a formatted message) to the recipients of `envelope`, on a pooled or new
    /// connection. Failures are classified as in [`crate::Mailer::send`].
    pub async fn send(&self, envelope: &Envelope, bytes: &[u8]) -> (Result<(), SendError>, SendTimings) {
        let mut timings = SendTimings::default();
        let started = Instant::now();
        let Ok(_slot) = self.slots.acquire().await else {
            return (Err(MailError::Transient("the SMTP pool is closed".into())), timings);
        };
        let (mut conn, reused) = match self.take_idle() {
            Some(conn) => (conn, true),
            None => match self.connect().await {
                Ok(conn) => (conn, false),
                Err(e) => {
                    timings.checkout = started.elapsed();
                    return (Err(e), timings);
                }
            },
        };
        timings.checkout = started.elapsed();
        timings.reused = reused;
        let sending = Instant::now();
        let mut result = self.send_on(&mut conn, envelope, bytes).await;
        if reused && matches!(&result, Err(Failure::Smtp(e)) if e.status().is_none()) {
            // The relay closed the idle connection (or it broke): once more on a new one.
            tracing::debug!(message = "Pooled SMTP connection failed; reconnecting.");
            match self.connect().await {
                Ok(fresh) => {
                    conn = fresh;
                    result = self.send_on(&mut conn, envelope, bytes).await;
                }
                Err(e) => return (Err(e), timings),
            }
        }
        timings.data = sending.elapsed();
        match result {
            Ok(reply) => {
                if !conn.smtp.has_broken() {
                    self.put_idle(conn);
                }
                timings.reply = Some(reply);
                (Ok(()), timings)
            }
            Err(Failure::TimedOut) => (Err(MailError::Transient("the SMTP relay timed out".into())), timings),
            Err(Failure::Smtp(e)) => (Err(classify(e)), timings),
        }
    }

    /// One send on `conn`, bounded by the timeout.
    async fn send_on(&self, conn: &mut Connection, envelope: &Envelope, bytes: &[u8]) -> Result<String, Failure> {
        let sent = async {
            if conn.pipelining {
                crate::pipelining::send(&mut conn.smtp, envelope, bytes).await
            } else {
                conn.smtp.send(envelope, bytes).await
            }
        };
        match tokio::time::timeout(self.relay.timeout, sent).await {
            Ok(Ok(response)) => {
                let line = response.message().next().unwrap_or_default();
                Ok(format!("{} {line}", response.code()))
            }
            Ok(Err(e)) => Err(Failure::Smtp(e)),
            Err(_) => Err(Failure::TimedOut),
        }
    }

    /// The most recently used idle connection not older than [`IDLE_TIMEOUT`]; older ones are
    /// closed.
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        idle.retain(|(_, since)| now.duration_since(*since) < IDLE_TIMEOUT);
        idle.pop().map(|(conn, _)| conn)
    }

    fn put_idle(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Never more than the slots allow; a surplus connection is simply closed.
        if idle.len() < self.connections {
            idle.push((conn, Instant::now()));
        }
    }

    /// A new connection: TCP with `TCP_NODELAY`, TLS as configured, greeting, EHLO, a second EHLO
    /// to learn whether the relay pipelines (lettre does not keep that), AUTH.
    async fn connect(&self) -> Result<Connection, SendError> {
        match tokio::time::timeout(self.relay.timeout, self.connect_unbounded()).await {
            Ok(result) => result,
            Err(_) => Err(MailError::Transient("connecting to the SMTP relay timed out".into())),
        }
    }

    async fn connect_unbounded(&self) -> Result<Connection, SendError> {
        let relay = &self.relay;
        let tcp = TcpStream::connect((relay.host.as_str(), relay.port))
            .await
            .map_err(|e| MailError::Transient(format!("connecting to {}:{}: {e}", relay.host, relay.port)))?;
        if nodelay() {
            tcp.set_nodelay(true).map_err(|e| MailError::Transient(format!("TCP_NODELAY: {e}")))?;
        }
        let tls =
            || relay.tls.clone().ok_or_else(|| MailError::Transport("TLS is configured without TLS parameters".into()));
        let mut conn = match relay.security {
            Security::Plain => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await,
            Security::StartTls => {
                let mut conn =
                    AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await.map_err(classify)?;
                conn.starttls(tls()?, &self.hello).await.map(|()| conn)
            }
            Security::Tls => {
                #[allow(deprecated)]
                let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
                stream.upgrade_tls(tls()?).await.map_err(classify)?;
                AsyncSmtpConnection::connect_with_transport(Box::new(TlsStream(stream)), &self.hello).await
            }
        }
        .map_err(classify)?;
        let pipelining = pipelining_allowed()
            && crate::pipelining::offers_pipelining(&mut conn, &self.hello).await.map_err(classify)?;
        if let Some(credentials) = &relay.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials).await.map_err(classify)?;
        }
        Ok(Connection { smtp: conn, pipelining })
    }
}

/// Whether connections set `TCP_NODELAY`: always, unless `FLEETPULSE_SMTP_NODELAY=off` asks for
/// Nagle back (only to measure what it costs, `scripts/perf.sh alarms`). Read once.
fn nodelay() -> bool {
    static NODELAY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NODELAY.get_or_init(|| std::env::var("FLEETPULSE_SMTP_NODELAY").map_or(true, |v| v != "off"))
}

/// Whether connections pipeline where the relay offers it: always, unless
/// `FLEETPULSE_SMTP_PIPELINING=off` (only to measure what it gains, `scripts/perf.sh alarms`).
/// Read once.
fn pipelining_allowed() -> bool {
    static PIPELINING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PIPELINING.get_or_init(|| std::env::var("FLEETPULSE_SMTP_PIPELINING").map_or(true, |v| v != "off"))
}

/// Transient unless the server said no for good (5xx) or the client cannot send the message.
pub(crate) fn classify(e: SmtpError) -> SendError {
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

/// lettre's TLS stream over our socket, as the tokio stream its connection takes (implicit TLS:
/// the greeting already comes encrypted, so TLS must be on before lettre reads it).
#[allow(deprecated)]
#[derive(Debug)]
struct TlsStream(AsyncNetworkStream);

impl AsyncRead for TlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let unfilled = buf.initialize_unfilled();
        match futures_io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, unfilled) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        futures_io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_io::AsyncWrite::poll_close(Pin::new(&mut self.0), cx)
    }
}

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
}
