//! `quic_floor`: the QUIC floor of `scripts/perf.sh compare` (issue 14). A bare quinn server with
//! fleetpulse's ingest transport and TLS configuration (`fleetpulse_ingest::tls::server_config`,
//! the same certificate and endpoint keys) that accepts a connection's one bidirectional stream,
//! reads it, counts the length-prefixed frames, and answers every read that completed a frame
//! with an 8-byte acknowledgement: the little-endian count of frames received so far. No Hello,
//! no decoding, no store: the cost of QUIC + TLS + syscalls + tokio with fleetpulse's work removed.
//!
//! `quic_floor --tls-dir DIR [--addr 127.0.0.1:0]` prints `quic_floor listening quic=ADDR` and
//! serves until killed. `DIR` is a fleetpulse TLS folder (`data/tls`; created if missing).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use fleetpulse_ingest::tls::{self, TlsSource};
use fleetpulse_proto::MAX_FRAME_LEN;
use fleetpulse_proto::codec::HEADER_LEN;

/// Bytes taken from the stream per read, as the ingest session does.
const READ_CHUNK: usize = 16 * 1024;
/// The ingest tier's default idle timeout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Counts complete length-prefixed frames in a byte stream (sans-I/O).
#[derive(Debug, Default)]
struct FrameCounter {
    header: [u8; HEADER_LEN],
    have_header: usize,
    /// Payload bytes still expected of the current frame.
    remaining: usize,
    frames: u64,
}

impl FrameCounter {
    /// Feeds `bytes`; `Err` for a frame longer than the protocol allows.
    fn push(&mut self, mut bytes: &[u8]) -> anyhow::Result<()> {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len());
                self.remaining -= n;
                bytes = &bytes[n..];
                if self.remaining == 0 {
                    self.frames += 1;
                }
                continue;
            }
            let n = (HEADER_LEN - self.have_header).min(bytes.len());
            self.header[self.have_header..self.have_header + n].copy_from_slice(&bytes[..n]);
            self.have_header += n;
            bytes = &bytes[n..];
            if self.have_header == HEADER_LEN {
                self.have_header = 0;
                let len = u32::from_le_bytes(self.header) as usize;
                if len > MAX_FRAME_LEN {
                    bail!("frame of {len} bytes");
                }
                self.remaining = len;
                if len == 0 {
                    self.frames += 1;
                }
            }
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let mut tls_dir = None;
    let mut addr: SocketAddr = "127.0.0.1:0".parse().context("default address")?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--tls-dir", Some(v)) => tls_dir = Some(PathBuf::from(v)),
            ("--addr", Some(v)) => addr = v.parse().context("--addr")?,
            _ => bail!("usage: quic_floor --tls-dir DIR [--addr 127.0.0.1:0]"),
        }
    }
    let tls_dir = tls_dir.context("usage: quic_floor --tls-dir DIR [--addr 127.0.0.1:0]")?;
    // The same runtime as `fleetpulse serve`: multi-threaded, one worker per available core.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(tls_dir, addr))
}

async fn serve(tls_dir: PathBuf, addr: SocketAddr) -> anyhow::Result<()> {
    let server_config = tls::server_config(&TlsSource::Dev { dir: tls_dir.clone() }, IDLE_TIMEOUT)?;
    let keys = tls::endpoint_keys(&tls_dir)?;
    let socket = std::net::UdpSocket::bind(addr)?;
    let endpoint =
        quinn::Endpoint::new(keys.endpoint_config(), Some(server_config), socket, Arc::new(quinn::TokioRuntime))?;
    println!("quic_floor listening quic={}", endpoint.local_addr()?);
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            if let Err(error) = connection(incoming).await {
                eprintln!("quic_floor: connection ended: {error:#}");
            }
        });
    }
    Ok(())
}

async fn connection(incoming: quinn::Incoming) -> anyhow::Result<()> {
    let conn = incoming.await?;
    let (mut send, mut recv) = match conn.accept_bi().await {
        Ok(stream) => stream,
        Err(quinn::ConnectionError::ApplicationClosed(_) | quinn::ConnectionError::LocallyClosed) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    let mut counter = FrameCounter::default();
    let mut acked = 0;
    loop {
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => counter.push(&chunk.bytes)?,
            Ok(None) | Err(quinn::ReadError::ConnectionLost(quinn::ConnectionError::ApplicationClosed(_))) => {
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        }
        if counter.frames > acked {
            acked = counter.frames;
            match send.write_all(&acked.to_le_bytes()).await {
                Ok(()) => {}
                Err(quinn::WriteError::ConnectionLost(quinn::ConnectionError::ApplicationClosed(_))) => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_across_reads_and_oversized_ones_refused() {
        let mut wire = Vec::new();
        for len in [3u32, 0, 70_000] {
            wire.extend_from_slice(&len.to_le_bytes());
            wire.extend(std::iter::repeat_n(7u8, len as usize));
        }
        let mut c = FrameCounter::default();
        for piece in wire.chunks(5) {
            c.push(piece).expect("valid frames");
        }
        assert_eq!(c.frames, 3);
        let mut c = FrameCounter::default();
        c.push(&[1, 0]).expect("half a header");
        assert_eq!(c.frames, 0);
        let mut c = FrameCounter::default();
        assert!(c.push(&(MAX_FRAME_LEN as u32 + 1).to_le_bytes()).is_err());
    }
}
