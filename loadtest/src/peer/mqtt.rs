//! A device against an MQTT 3.1.1 broker: TLS 1.3 over TCP (rustls with ring, trusting the given
//! CA), `CONNECT` with a clean session, each frame the payload of a QoS 1 `PUBLISH` to
//! `fleetpulse/<mac>/data`, acknowledged by its `PUBACK`.
//!
//! Packets are encoded and decoded by `rumqttc`'s MQTT codec (`rumqttc::mqttbytes`); its client
//! and event loop are not used, because its TLS transport pulls in `rustls-webpki` 0.102 and
//! `rustls-pemfile`, both with RustSec advisories, and needs a packet-id ↔ frame mapping anyway.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, Packet, Publish};
use rumqttc::mqttbytes::{Error as MqttError, QoS};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::{DeviceCtx, DrainGuard, PeerDevice, Phase, SETUP_TIMEOUT};

/// Largest packet accepted from the broker.
const MAX_PACKET: usize = 64 * 1024;
/// `CONNECT` keep-alive, seconds (devices send far more often than this).
const KEEP_ALIVE_S: u16 = 60;

/// A TLS 1.3 connector trusting only the CA certificates in `ca_cert` (PEM).
pub(super) fn connector(ca_cert: &Path) -> anyhow::Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_cert)
        .with_context(|| format!("reading the CA certificate {}", ca_cert.display()))?
    {
        roots.add(cert.context("parsing the CA certificate")?).context("adding the CA certificate")?;
    }
    ensure!(!roots.is_empty(), "{} holds no certificate", ca_cert.display());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(tls)))
}

/// The packet id of frame `seq`: 1..=65535 in turn (0 is not a valid id). The window of
/// unacknowledged frames is far smaller than 65,535, so ids in flight are unique.
fn packet_id(seq: u64) -> u16 {
    u16::try_from((seq - 1) % 65_535 + 1).expect("at most 65535")
}

/// Every complete packet in `buf`; `Err` on a malformed one.
fn packets(buf: &mut BytesMut, mut each: impl FnMut(Packet)) -> anyhow::Result<()> {
    loop {
        match Packet::read(buf, MAX_PACKET) {
            Ok(packet) => each(packet),
            Err(MqttError::InsufficientBytes(_)) => return Ok(()),
            Err(error) => bail!("malformed packet from the broker: {error}"),
        }
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// TCP connect, TLS handshake, `CONNECT` → `CONNACK`.
async fn open(ctx: &DeviceCtx, tls: &TlsConnector, client_id: String) -> anyhow::Result<(Tls, BytesMut)> {
    let cfg = &ctx.run.cfg;
    let tcp = TcpStream::connect(cfg.addr).await.context("TCP connect")?;
    tcp.set_nodelay(true).context("TCP_NODELAY")?;
    let name = ServerName::try_from(cfg.server_name.clone()).context("server name")?;
    let mut stream = tls.connect(name, tcp).await.context("TLS handshake")?;
    let mut connect = Connect::new(client_id);
    connect.keep_alive = KEEP_ALIVE_S;
    let mut out = BytesMut::new();
    connect.write(&mut out).map_err(|e| anyhow::anyhow!("encoding CONNECT: {e}"))?;
    stream.write_all(&out).await.context("writing CONNECT")?;
    stream.flush().await.context("writing CONNECT")?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match Packet::read(&mut buf, MAX_PACKET) {
            Ok(Packet::ConnAck(ConnAck { code: rumqttc::mqttbytes::v4::ConnectReturnCode::Success, .. })) => {
                return Ok((stream, buf));
            }
            Ok(other) => bail!("expected CONNACK (accepted), got {other:?}"),
            Err(MqttError::InsufficientBytes(_)) => {}
            Err(error) => bail!("malformed CONNACK: {error}"),
        }
        if stream.read_buf(&mut buf).await.context("reading CONNACK")? == 0 {
            bail!("the broker closed the connection before CONNACK");
        }
    }
}

/// One device: connect, then publish on schedule and take `PUBACK`s until the run closes.
pub(super) async fn device(mut ctx: DeviceCtx, tls: TlsConnector) {
    let run = ctx.run.clone();
    let mut drain = DrainGuard::adopt(&run.counters);
    let started = Instant::now();
    let client_id = format!("fp-{}", run.macs.mac(ctx.index)).replace(':', "");
    let topic = format!("fleetpulse/{client_id}/data");
    let (stream, mut inbuf) = match tokio::time::timeout(SETUP_TIMEOUT, open(&ctx, &tls, client_id)).await {
        Ok(Ok(link)) => link,
        Ok(Err(error)) => {
            tracing::warn!(device = ctx.index, error = %format!("{error:#}"), "could not connect to the broker");
            return ctx.finish(None, true);
        }
        Err(_) => {
            tracing::warn!(device = ctx.index, "connecting to the broker timed out");
            return ctx.finish(None, true);
        }
    };
    ctx.group.record_setup(started.elapsed());
    run.counters.established.incr();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut dev = PeerDevice::new(&run, ctx.index, run.now_us());
    let mut out = BytesMut::new();
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
        let mut encode_failed = false;
        dev.fill(horizon_us, &run, |seq, frame| {
            let mut publish = Publish::new(topic.as_str(), QoS::AtLeastOnce, frame.to_vec());
            publish.pkid = packet_id(seq);
            encode_failed |= publish.write(&mut out).is_err();
        });
        if encode_failed {
            tracing::warn!(device = ctx.index, "could not encode a PUBLISH");
            break true;
        }
        if !out.is_empty() {
            // One TLS record per burst, flushed at once (the broker's PUBACKs queue meanwhile).
            let written = async {
                wr.write_all(&out).await?;
                wr.flush().await
            };
            if let Err(error) = written.await {
                tracing::warn!(device = ctx.index, %error, "writing to the broker failed");
                break true;
            }
            out.clear();
        }
        let next_wake = dev.next_wake_us(phase);
        if next_wake != armed_at {
            if let Some(at) = next_wake {
                wake.as_mut().reset(run.instant_at(at));
            }
            armed_at = next_wake;
        }
        tokio::select! {
            read = rd.read_buf(&mut inbuf) => match read {
                Ok(0) | Err(_) => {
                    tracing::warn!(device = ctx.index, "the broker closed the connection");
                    break true;
                }
                Ok(_) => {
                    let now_us = run.now_us();
                    let mut acked = 0;
                    let mut unexpected = 0;
                    let parsed = ctx.group.with_ack(|h| packets(&mut inbuf, |packet| match packet {
                        Packet::PubAck(ack) => {
                            // PUBACKs come in publish order: the one for `ack.pkid` covers its frame.
                            match dev.pending.iter().find(|(seq, _)| packet_id(*seq) == ack.pkid) {
                                Some(&(seq, _)) => acked += dev.ack_through(seq, now_us, h),
                                None => unexpected += 1,
                            }
                        }
                        Packet::PingResp => {}
                        _ => unexpected += 1,
                    }));
                    run.counters.acked.add(acked);
                    if unexpected > 0 {
                        tracing::warn!(device = ctx.index, unexpected, "unexpected packets from the broker");
                        run.counters.errors.add(unexpected);
                    }
                    if let Err(error) = parsed {
                        tracing::warn!(device = ctx.index, %error, "bad data from the broker");
                        break true;
                    }
                }
            },
            () = wake.as_mut(), if armed_at.is_some() => armed_at = None,
            changed = ctx.phase.changed() => if changed.is_err() { break false },
        }
    };
    // DISCONNECT, best effort: the broker drops the session either way (clean session).
    let _ = wr.write_all(&[0xe0, 0x00]).await;
    let _ = wr.shutdown().await;
    ctx.finish(Some(&dev), failed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_skip_zero_and_wrap() {
        assert_eq!(packet_id(1), 1);
        assert_eq!(packet_id(65_535), 65_535);
        assert_eq!(packet_id(65_536), 1);
    }

    #[test]
    fn pubacks_are_read_across_partial_reads() {
        let mut wire = BytesMut::new();
        for id in [1, 2, 300] {
            rumqttc::mqttbytes::v4::PubAck::new(id).write(&mut wire).expect("encode");
        }
        let mut buf = BytesMut::from(&wire[..5]);
        let mut ids = Vec::new();
        let mut take = |p: Packet| {
            if let Packet::PubAck(a) = p {
                ids.push(a.pkid);
            }
        };
        packets(&mut buf, &mut take).expect("valid");
        buf.extend_from_slice(&wire[5..]);
        packets(&mut buf, &mut take).expect("valid");
        assert_eq!(ids, [1, 2, 300]);
        let mut bad = BytesMut::from(&[0x00u8, 0x00][..]);
        assert!(packets(&mut bad, |_| {}).is_err(), "packet type 0 is reserved");
    }
}
