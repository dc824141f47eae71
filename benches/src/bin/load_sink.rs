//! `load_sink`: the cheapest server that speaks fleetpulse's device protocol, for measuring the
//! load tester itself (issue 14 item 5: `fleetpulse-loadtest --sink`). It answers `Hello` with a
//! `Welcome` (a new device id, nothing stored), decodes every data frame only to learn its
//! sequence number, and writes one cumulative `Ack` per read that brought new frames. No store,
//! no API, no rate limits: with it on its own core, the load tester's CPU per simulated message
//! and memory per simulated device are what is left to measure, at rates no real server on this
//! machine reaches.
//!
//! `load_sink --tls-dir DIR [--addr 127.0.0.1:0]` prints `load_sink listening quic=ADDR` and
//! serves until killed. `DIR` is a fleetpulse TLS folder (`data/tls`; created if missing); the
//! load tester trusts `DIR/ca.pem`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::BytesMut;
use fleetpulse_ingest::tls::{self, TlsSource};
use fleetpulse_proto::wire::{Ack, Downlink, Uplink, Welcome};
use fleetpulse_proto::{FrameDecoder, FrameEncoder, MAX_FRAME_LEN, UnixMillis};

/// Bytes taken from the stream per read, as the ingest session does.
const READ_CHUNK: usize = 16 * 1024;
/// The ingest tier's default idle timeout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Sockets sharing the port (`SO_REUSEPORT`), so that the kernel spreads the load tester's
/// endpoints over the sink's cores.
const ENDPOINTS: usize = 2;

/// What a connection's reads amount to (sans-I/O): the device's highest sequence number so far
/// and whether an acknowledgement is owed.
#[derive(Debug, Default)]
struct SinkSession {
    welcomed: bool,
    highest: u64,
    acked: u64,
}

/// What the sink writes after a read.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Welcome,
    Ack(u64),
}

impl SinkSession {
    /// Takes every complete frame in `decoder`; returns what to write (in order).
    fn handle(&mut self, decoder: &mut FrameDecoder, replies: &mut Vec<Reply>) -> anyhow::Result<()> {
        while let Some(frame) = decoder.next_frame::<Uplink>()? {
            match frame {
                Uplink::Hello(_) if !self.welcomed => {
                    self.welcomed = true;
                    replies.push(Reply::Welcome);
                }
                Uplink::Hello(_) => bail!("a second Hello"),
                Uplink::Data(_) if !self.welcomed => bail!("data before Hello"),
                Uplink::Data(df) => self.highest = self.highest.max(df.seq),
            }
        }
        if self.highest > self.acked {
            self.acked = self.highest;
            replies.push(Reply::Ack(self.acked));
        }
        Ok(())
    }
}

/// The load tester's allocator (and the server's), so that the instrument and its counterpart
/// allocate alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let usage = "usage: load_sink --tls-dir DIR [--addr 127.0.0.1:0]";
    let mut tls_dir = None;
    let mut addr: SocketAddr = "127.0.0.1:0".parse().context("default address")?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--tls-dir", Some(v)) => tls_dir = Some(PathBuf::from(v)),
            ("--addr", Some(v)) => addr = v.parse().context("--addr")?,
            _ => bail!(usage),
        }
    }
    let tls_dir = tls_dir.context(usage)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(tls_dir, addr))
}

async fn serve(tls_dir: PathBuf, addr: SocketAddr) -> anyhow::Result<()> {
    let server_config = tls::server_config(&TlsSource::Dev { dir: tls_dir.clone() }, IDLE_TIMEOUT)?;
    let keys = tls::endpoint_keys(&tls_dir)?;
    let ids = Arc::new(AtomicU64::new(1));
    let mut bound = addr;
    let mut tasks = Vec::new();
    for i in 0..ENDPOINTS {
        let socket = reuse_port_socket(bound)?;
        bound = socket.local_addr()?;
        let endpoint = quinn::Endpoint::new(
            keys.endpoint_config(),
            Some(server_config.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        if i == 0 {
            println!("load_sink listening quic={bound}");
        }
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    if let Err(error) = connection(incoming, id).await {
                        eprintln!("load_sink: connection ended: {error:#}");
                    }
                });
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

fn reuse_port_socket(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_recv_buffer_size(8 << 20).ok();
    s.set_send_buffer_size(8 << 20).ok();
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn lost(error: &quinn::ConnectionError) -> bool {
    matches!(
        error,
        quinn::ConnectionError::ApplicationClosed(_)
            | quinn::ConnectionError::LocallyClosed
            | quinn::ConnectionError::TimedOut
    )
}

async fn connection(incoming: quinn::Incoming, device_id: u64) -> anyhow::Result<()> {
    let conn = incoming.await?;
    let (mut send, mut recv) = match conn.accept_bi().await {
        Ok(stream) => stream,
        Err(error) if lost(&error) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
    let mut encoder = FrameEncoder::default();
    let mut session = SinkSession::default();
    let mut replies = Vec::new();
    let mut out = BytesMut::new();
    loop {
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            Ok(None) => return Ok(()),
            Err(quinn::ReadError::ConnectionLost(error)) if lost(&error) => return Ok(()),
            Err(error) => return Err(error.into()),
        }
        session.handle(&mut decoder, &mut replies)?;
        for reply in replies.drain(..) {
            let frame = match reply {
                Reply::Welcome => Downlink::Welcome(Welcome {
                    device_id,
                    last_seq: 0,
                    server_time_ms: UnixMillis::now().0,
                    protocol_version: 1,
                    max_file_bytes: 0,
                }),
                Reply::Ack(seq) => Downlink::Ack(Ack { seq }),
            };
            encoder.encode(&frame, &mut out)?;
        }
        if !out.is_empty() {
            match send.write_all(&out).await {
                Ok(()) => out.clear(),
                Err(quinn::WriteError::ConnectionLost(error)) if lost(&error) => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::wire::{DataFrame, Heartbeat, Hello, Message};

    fn wire(frames: &[Uplink]) -> BytesMut {
        let mut out = BytesMut::new();
        let mut encoder = FrameEncoder::default();
        for f in frames {
            encoder.encode(f, &mut out).expect("encodable");
        }
        out
    }

    fn hello() -> Uplink {
        Uplink::Hello(Hello {
            protocol_version: 1,
            mac: "001122334455".into(),
            serial: String::new(),
            model: "T54W".into(),
            firmware: "1".into(),
            credential: "c".into(),
            heartbeat_interval_s: 30,
        })
    }

    fn data(seq: u64) -> Uplink {
        Uplink::Data(DataFrame { seq, sent_at_ms: 0, body: Message::Heartbeat(Heartbeat { uptime_s: 1 }) })
    }

    #[test]
    fn welcome_then_one_cumulative_ack_per_read() {
        let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
        let mut session = SinkSession::default();
        let mut replies = Vec::new();
        let bytes = wire(&[hello(), data(1), data(2)]);
        // Split mid-frame: the second read completes the last frame.
        decoder.push(&bytes[..bytes.len() - 3]);
        session.handle(&mut decoder, &mut replies).expect("valid");
        assert_eq!(std::mem::take(&mut replies), [Reply::Welcome, Reply::Ack(1)]);
        decoder.push(&bytes[bytes.len() - 3..]);
        session.handle(&mut decoder, &mut replies).expect("valid");
        assert_eq!(std::mem::take(&mut replies), [Reply::Ack(2)]);
        // A read with nothing new owes nothing.
        session.handle(&mut decoder, &mut replies).expect("valid");
        assert!(replies.is_empty());
    }

    #[test]
    fn data_before_hello_and_a_second_hello_are_refused() {
        let mut session = SinkSession::default();
        let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
        decoder.push(&wire(&[data(1)]));
        assert!(session.handle(&mut decoder, &mut Vec::new()).is_err());
        let mut session = SinkSession::default();
        let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
        decoder.push(&wire(&[hello(), hello()]));
        assert!(session.handle(&mut decoder, &mut Vec::new()).is_err());
    }
}
