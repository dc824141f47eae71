//! The mailer's connection pool against a scripted SMTP relay on loopback: connections are
//! reused, bounded, and replaced once when the relay closed an idle one, without sending twice;
//! the envelope is pipelined where the relay offers it, and only there.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleetpulse_mailer::{MAX_CONNECTIONS, MailError, Mailer, Message, Security, SmtpConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use common::{mailer, mailer_with_connections};

/// What the relay saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    open: AtomicUsize,
    most_open: AtomicUsize,
    messages: AtomicUsize,
    /// `MAIL FROM` commands that arrived with their `RCPT TO` and `DATA` already behind them.
    pipelined_envelopes: AtomicUsize,
    /// `MAIL FROM` commands that arrived alone (the client waited for each reply).
    lone_envelopes: AtomicUsize,
}

/// How the scripted relay behaves.
#[derive(Clone, Copy, Default)]
struct Script {
    /// Hang up right after each accepted message (as a relay closing idle connections does,
    /// seen from the next send).
    close_after_message: bool,
    /// Leave `PIPELINING` out of the `EHLO` answer.
    no_pipelining: bool,
}

/// The recipient the relay refuses (`550`), answering the `DATA` after it with `554`.
const REFUSED: &str = "nobody@example.com";

/// A relay that accepts everything but [`REFUSED`], as `script` says.
async fn relay(script: Script) -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Seen::default());
    let state = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = state.clone();
            seen.connections.fetch_add(1, Ordering::SeqCst);
            let open = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
            seen.most_open.fetch_max(open, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = session(stream, &seen, script).await;
                seen.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, seen)
}

async fn session(stream: TcpStream, seen: &Seen, script: Script) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 relay ready\r\n").await?;
    let mut line = String::new();
    let mut refused_recipient = false;
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" if script.no_pipelining => write.write_all(b"250-relay\r\n250 8BITMIME\r\n").await?,
            "EHLO" => write.write_all(b"250-relay\r\n250 PIPELINING\r\n").await?,
            "MAIL" => {
                // One write from the client arrives whole on loopback: what is already buffered
                // behind MAIL tells whether the envelope came as one group.
                let behind = String::from_utf8_lossy(lines.buffer()).to_ascii_uppercase();
                let counter = if behind.contains("RCPT TO") && behind.contains("DATA\r\n") {
                    &seen.pipelined_envelopes
                } else {
                    &seen.lone_envelopes
                };
                counter.fetch_add(1, Ordering::SeqCst);
                refused_recipient = false;
                write.write_all(b"250 ok\r\n").await?;
            }
            "RCPT" if line.contains(REFUSED) => {
                refused_recipient = true;
                write.write_all(b"550 5.1.1 no such user\r\n").await?;
            }
            "DATA" if refused_recipient => write.write_all(b"554 5.5.1 no valid recipients\r\n").await?,
            "DATA" => {
                write.write_all(b"354 go ahead\r\n").await?;
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                }
                // Slow enough that concurrent senders overlap.
                tokio::time::sleep(Duration::from_millis(5)).await;
                seen.messages.fetch_add(1, Ordering::SeqCst);
                write.write_all(b"250 accepted\r\n").await?;
                if script.close_after_message {
                    return Ok(());
                }
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"250 ok\r\n").await?,
        }
    }
}

fn message(n: usize) -> Message {
    message_to(n, "ops@example.com")
}

fn message_to(n: usize, to: &str) -> Message {
    Message::builder()
        .from("alarms@example.com".parse().expect("from"))
        .to(to.parse().expect("to"))
        .subject(format!("message {n}"))
        .body(format!("body {n}"))
        .expect("message")
}

#[tokio::test]
async fn sequential_sends_reuse_one_connection() {
    let (port, seen) = relay(Script::default()).await;
    let mailer = mailer(port);
    for n in 0..5 {
        let (result, timings) = mailer.send_timed(message(n)).await;
        result.expect("accepted");
        assert_eq!(timings.reused, n > 0, "send {n}");
    }
    assert_eq!(seen.messages.load(Ordering::SeqCst), 5);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    assert_eq!(seen.pipelined_envelopes.load(Ordering::SeqCst), 5, "the relay offers PIPELINING");
    assert_eq!(seen.lone_envelopes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_relay_without_pipelining_gets_one_command_at_a_time() {
    let (port, seen) = relay(Script { no_pipelining: true, ..Script::default() }).await;
    let mailer = mailer(port);
    for n in 0..3 {
        mailer.send(message(n)).await.expect("accepted");
    }
    assert_eq!(seen.messages.load(Ordering::SeqCst), 3);
    assert_eq!(seen.lone_envelopes.load(Ordering::SeqCst), 3);
    assert_eq!(seen.pipelined_envelopes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_refused_recipient_in_a_pipelined_envelope_fails_that_email_only() {
    let (port, seen) = relay(Script::default()).await;
    let mailer = mailer(port);
    mailer.send(message(0)).await.expect("accepted");
    let refused = mailer.send(message_to(1, REFUSED)).await.expect_err("refused recipient");
    assert!(matches!(&refused, MailError::Permanent(why) if why.contains("550")), "{refused}");
    // The refusal left DATA's reply unread on that connection: the next email goes out on a new
    // one, in step, and is accepted.
    mailer.send(message(2)).await.expect("accepted after the refusal");
    assert_eq!(seen.messages.load(Ordering::SeqCst), 2);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2, "the out-of-step connection was dropped");
    assert_eq!(seen.pipelined_envelopes.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_connection_the_relay_closed_is_replaced_once_and_nothing_is_sent_twice() {
    let (port, seen) = relay(Script { close_after_message: true, ..Script::default() }).await;
    let mailer = mailer(port);
    for n in 0..3 {
        mailer.send(message(n)).await.expect("accepted on a new connection");
    }
    assert_eq!(seen.messages.load(Ordering::SeqCst), 3, "each message once");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_stay_within_the_configured_connection_bound() {
    const CONNECTIONS: usize = 3;
    let (port, seen) = relay(Script::default()).await;
    let mailer = mailer_with_connections(port, CONNECTIONS);
    assert_eq!(mailer.connections(), CONNECTIONS);
    let sends: Vec<_> = (0..40)
        .map(|n| {
            let mailer = mailer.clone();
            tokio::spawn(async move { mailer.send(message(n)).await })
        })
        .collect();
    for send in sends {
        send.await.expect("task").expect("accepted");
    }
    assert_eq!(seen.messages.load(Ordering::SeqCst), 40);
    let most_open = seen.most_open.load(Ordering::SeqCst);
    assert!((1..=CONNECTIONS).contains(&most_open), "{most_open} connections open at once");
    assert!(seen.connections.load(Ordering::SeqCst) <= CONNECTIONS, "connections were reused");
}

#[test]
fn a_connection_bound_out_of_range_is_refused_with_the_range() {
    let config = |connections| SmtpConfig {
        host: "127.0.0.1".into(),
        port: 25,
        security: Security::Plain,
        username: None,
        password: None,
        from: "a@example.com".into(),
        timeout: Duration::from_secs(1),
        ca_cert: None,
        connections,
    };
    for connections in [0, MAX_CONNECTIONS + 1] {
        let error = Mailer::new(config(connections)).expect_err("out of range");
        assert!(matches!(&error, MailError::Transport(why) if why.contains("1 to 256")), "{error}");
    }
    assert_eq!(Mailer::new(config(MAX_CONNECTIONS)).expect("the largest bound").connections(), MAX_CONNECTIONS);
}
