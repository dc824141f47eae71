//! The mailer's connection pool against a scripted SMTP relay on loopback: connections are
//! reused, bounded, and replaced once when the relay closed an idle one, without sending twice.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleetpulse_mailer::{MAX_CONNECTIONS, Message};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use common::mailer;

/// What the relay saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    open: AtomicUsize,
    most_open: AtomicUsize,
    messages: AtomicUsize,
}

/// A relay that accepts everything; with `close_after_message` it hangs up right after each
/// accepted message (as a relay closing idle connections does, seen from the next send).
async fn relay(close_after_message: bool) -> (u16, Arc<Seen>) {
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
                let _ = session(stream, &seen, close_after_message).await;
                seen.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, seen)
}

async fn session(stream: TcpStream, seen: &Seen, close_after_message: bool) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 relay ready\r\n").await?;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => write.write_all(b"250-relay\r\n250 PIPELINING\r\n").await?,
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
                if close_after_message {
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
    Message::builder()
        .from("alarms@example.com".parse().expect("from"))
        .to("ops@example.com".parse().expect("to"))
        .subject(format!("message {n}"))
        .body(format!("body {n}"))
        .expect("message")
}

#[tokio::test]
async fn sequential_sends_reuse_one_connection() {
    let (port, seen) = relay(false).await;
    let mailer = mailer(port);
    for n in 0..5 {
        let (result, timings) = mailer.send_timed(message(n)).await;
        result.expect("accepted");
        assert_eq!(timings.reused, n > 0, "send {n}");
    }
    assert_eq!(seen.messages.load(Ordering::SeqCst), 5);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_relay_closed_is_replaced_once_and_nothing_is_sent_twice() {
    let (port, seen) = relay(true).await;
    let mailer = mailer(port);
    for n in 0..3 {
        mailer.send(message(n)).await.expect("accepted on a new connection");
    }
    assert_eq!(seen.messages.load(Ordering::SeqCst), 3, "each message once");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_stay_within_the_connection_bound() {
    let (port, seen) = relay(false).await;
    let mailer = mailer(port);
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
    assert!((1..=MAX_CONNECTIONS).contains(&most_open), "{most_open} connections open at once");
    assert!(seen.connections.load(Ordering::SeqCst) <= MAX_CONNECTIONS, "connections were reused");
}
