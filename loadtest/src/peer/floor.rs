//! A device against the QUIC floor: the fleetpulse client configuration and endpoints, one
//! bidirectional stream, frames out, 8-byte cumulative frame counts back.

use bytes::Buf;
use quinn::{Endpoint, VarInt};
use tokio::time::Instant;

use super::{DeviceCtx, DrainGuard, PeerConfig, PeerDevice, Phase, SETUP_TIMEOUT};
use crate::quic;

/// Size of the floor's acknowledgement: the little-endian count of frames received so far.
pub const FLOOR_ACK_LEN: usize = 8;

/// The client endpoints, with the load tester's usual QUIC client configuration.
pub(super) fn endpoints(cfg: &PeerConfig) -> anyhow::Result<Vec<Endpoint>> {
    let config = quic::client_config(&cfg.ca_cert, cfg.heartbeat_interval_s)?;
    quic::client_endpoints(quic::endpoint_count(u64::from(cfg.devices)), cfg.addr, &config)
}

/// Splits a byte stream into 8-byte acknowledgements.
#[derive(Debug, Default)]
pub(crate) struct AckReader {
    buf: [u8; FLOOR_ACK_LEN],
    have: usize,
}

impl AckReader {
    /// Feeds `bytes`; returns the last complete acknowledgement in them, if any.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) -> Option<u64> {
        let mut last = None;
        while !bytes.is_empty() {
            let n = (FLOOR_ACK_LEN - self.have).min(bytes.len());
            self.buf[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == FLOOR_ACK_LEN {
                last = Some(u64::from_le_bytes(self.buf));
                self.have = 0;
            }
        }
        last
    }
}

/// One device: connect, then send on schedule and take acknowledgements until the run closes.
pub(super) async fn device(mut ctx: DeviceCtx, endpoint: Endpoint) {
    let run = ctx.run.clone();
    let mut drain = DrainGuard::adopt(&run.counters);
    let started = Instant::now();
    let connect = async {
        let conn = endpoint.connect(run.cfg.addr, &run.cfg.server_name)?.await?;
        let (send, recv) = conn.open_bi().await?;
        anyhow::Ok((conn, send, recv))
    };
    let (conn, mut send, mut recv) = match tokio::time::timeout(SETUP_TIMEOUT, connect).await {
        Ok(Ok(link)) => link,
        Ok(Err(error)) => {
            tracing::warn!(device = ctx.index, error = %format!("{error:#}"), "could not connect to the floor");
            return ctx.finish(None, true);
        }
        Err(_) => {
            tracing::warn!(device = ctx.index, "connecting to the floor timed out");
            return ctx.finish(None, true);
        }
    };
    ctx.group.record_setup(started.elapsed());
    run.counters.established.incr();
    let mut dev = PeerDevice::new(&run, ctx.index, run.now_us());
    let mut out = bytes::BytesMut::new();
    let mut acks = AckReader::default();
    let wake = tokio::time::sleep_until(run.instant_at(u64::MAX));
    tokio::pin!(wake);
    let mut armed_at = None;
    let failed = loop {
        let phase = *ctx.phase.borrow_and_update();
        let now_us = run.now_us();
        let horizon_us = match phase {
            Phase::Sending => now_us,
            Phase::Draining { gen_end_us } => {
                if dev.drained(gen_end_us) {
                    drain.done();
                }
                now_us.min(gen_end_us)
            }
            Phase::Closing { .. } => break false,
        };
        if out.is_empty() {
            dev.fill(horizon_us, &run, |_, frame| out.extend_from_slice(frame));
        }
        let next_wake = dev.next_wake_us(phase);
        if next_wake != armed_at {
            if let Some(at) = next_wake {
                wake.as_mut().reset(run.instant_at(at));
            }
            armed_at = next_wake;
        }
        tokio::select! {
            read = recv.read_chunk(64, true) => match read {
                Ok(Some(chunk)) => {
                    if let Some(count) = acks.push(&chunk.bytes) {
                        let now_us = run.now_us();
                        let acked = ctx.group.with_ack(|h| dev.ack_through(count, now_us, h));
                        run.counters.acked.add(acked);
                        if count > dev.last_seq {
                            tracing::warn!(device = ctx.index, count, sent = dev.last_seq, "the floor acknowledged more than was sent");
                            run.counters.errors.incr();
                        }
                    }
                }
                Ok(None) | Err(_) => {
                    tracing::warn!(device = ctx.index, "the floor ended the stream");
                    break true;
                }
            },
            written = send.write(&out), if !out.is_empty() => match written {
                Ok(n) => out.advance(n),
                Err(error) => {
                    tracing::warn!(device = ctx.index, %error, "writing to the floor failed");
                    break true;
                }
            },
            () = wake.as_mut(), if armed_at.is_some() && out.is_empty() => armed_at = None,
            changed = ctx.phase.changed() => if changed.is_err() { break false },
        }
    };
    conn.close(VarInt::from_u32(0), b"load test done");
    ctx.finish(Some(&dev), failed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_are_reassembled_across_reads() {
        let mut r = AckReader::default();
        let (a, b) = (5u64.to_le_bytes(), 300u64.to_le_bytes());
        assert_eq!(r.push(&a[..3]), None);
        let mut rest = a[3..].to_vec();
        rest.extend_from_slice(&b[..2]);
        assert_eq!(r.push(&rest), Some(5));
        assert_eq!(r.push(&b[2..]), Some(300));
        let mut two = a.to_vec();
        two.extend_from_slice(&b);
        assert_eq!(r.push(&two), Some(300), "the last of several counts is the one that matters");
    }
}
