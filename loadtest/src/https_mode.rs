//! The HTTPS transport of the load tester (ING-10): every device posts its frames to
//! `POST /ingest/v1/frames` (its `Hello` first, then the frames it owes) over a keep-alive
//! HTTPS/1.1 connection of its own, and takes the answer's `Ack` and `Rejected` notes as a QUIC
//! device takes them, through the same [`DeviceSession`] state machine. Verification is the same
//! end-to-end loss check as QUIC runs (missing and duplicated against the stored sequences).
//!
//! With `--transport relayed` the same devices reach HTTPS ingest as `fleetpulse relay` carries
//! them (ING-9): `--relays` simulated relays, one HTTP/2 connection each with the relay
//! credential, carry every device's exchanges as streams. A device "connects" (an exchange with
//! its `Hello` alone, as a relay sends when a device connects to it; paced by `--connect-rate`)
//! and then exchanges only when it has frames. The server cannot tell it from real relays; this
//! machine is spared a QUIC connection per device, so a million relayed devices fit.
//!
//! A request that fails (a status other than 200, a lost connection) acknowledges nothing: the
//! device reconnects and resends every pending frame with its seq; the server drops the ones it
//! already holds. A device's first request and its retries carry the resend header, so that
//! commands whose answer was lost are sent again.
//!
//! Commands riding on an answer are answered as a QUIC device answers them ([`commands`]).

mod commands;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use fleetpulse_proto::wire::{DataFrame, Downlink, Message, Uplink};
use fleetpulse_proto::{DeviceId, EnterpriseId, FrameDecoder, FrameEncoder, UnixMillis};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1::SendRequest, http2};
use hyper::header::{self, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;

use crate::api::ApiClient;
use crate::config::{LoadConfig, MessageKind, Transport};
use crate::device::DeviceSession;
use crate::identity::MacPlan;
use crate::messages::DeviceProfile;
use crate::report::{Connections, Latency, Report};
use crate::stats::{Counters, new_histogram};
use crate::verify::{self, AckedDevice};

/// Frames one request carries at most (the rest wait for the next request).
pub const MAX_FRAMES_PER_REQUEST: usize = 512;

/// A keep-alive HTTPS/1.1 connection to HTTPS ingest.
#[derive(Debug)]
pub struct HttpsIngestClient {
    sender: SendRequest<Full<Bytes>>,
}

impl HttpsIngestClient {
    /// Connects to `addr`, verifying the certificate for `server_name` with `tls`.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<HttpsIngestClient> {
        let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true).ok();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).context("server name")?;
        let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.context("TLS handshake")?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context("HTTP handshake")?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTPS ingest connection ended");
            }
        });
        Ok(HttpsIngestClient { sender })
    }

    /// Posts `body` to `path`; the status and the body of the answer.
    pub async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        bearer: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        self.post_with(path, content_type, bearer, false, body).await
    }

    /// [`HttpsIngestClient::post`], marked as a resend (the device's first request, or a retry)
    /// when `resend` is true.
    pub async fn post_with(
        &mut self,
        path: &str,
        content_type: &str,
        bearer: Option<&str>,
        resend: bool,
        body: Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await.context("connection closed")?;
        let mut request = hyper::Request::post(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, content_type);
        if let Some(token) = bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if resend {
            request = request.header(RESEND_HEADER, "1");
        }
        let request = request.body(Full::new(body)).context("building the request")?;
        let response = self.sender.send_request(request).await.context("sending the request")?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.context("reading the answer")?.to_bytes();
        Ok((status, body))
    }
}

/// The header a relay presents its credential in (the server's `RELAY_HEADER`).
const RELAY_HEADER: &str = "x-fleetpulse-relay";

/// The header marking a request as a resend (the server's `RESEND_HEADER`).
const RESEND_HEADER: &str = "x-fleetpulse-resend";

/// One simulated relay: an HTTP/2 connection to HTTPS ingest, reconnected when it drops.
#[derive(Default)]
struct RelayLink {
    sender: tokio::sync::Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
}

impl RelayLink {
    /// The connection's sender, connecting if there is none (or it closed).
    async fn sender(&self, shared: &Shared) -> anyhow::Result<http2::SendRequest<Full<Bytes>>> {
        let mut slot = self.sender.lock().await;
        if let Some(sender) = slot.as_ref()
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        let tcp = tokio::net::TcpStream::connect(shared.addr)
            .await
            .with_context(|| format!("connecting to {}", shared.addr))?;
        tcp.set_nodelay(true).ok();
        let name = rustls::pki_types::ServerName::try_from(shared.cfg.server_name.clone()).context("server name")?;
        let stream =
            tokio_rustls::TlsConnector::from(shared.tls.clone()).connect(name, tcp).await.context("TLS handshake")?;
        let (sender, connection) =
            http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.context("HTTP/2 handshake")?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a relay's HTTP/2 connection ended");
            }
        });
        *slot = Some(sender.clone());
        Ok(sender)
    }

    /// Posts a device's exchange (`Hello` and frames) with the relay credential.
    async fn post(&self, shared: &Shared, resend: bool, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        let mut sender = self.sender(shared).await?;
        let credential = shared.relay_credential.clone().context("no relay credential")?;
        let mut request = hyper::Request::post(format!("https://{}/ingest/v1/frames", shared.addr));
        if resend {
            request = request.header(RESEND_HEADER, HeaderValue::from_static("1"));
        }
        let request = request
            .header(RELAY_HEADER, credential)
            .header(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))
            .header(header::CONTENT_LENGTH, HeaderValue::from(body.len()))
            .body(Full::new(body))
            .context("building the request")?;
        let answer = async {
            sender.ready().await.context("connection closed")?;
            let response = sender.send_request(request).await.context("sending the request")?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.context("reading the answer")?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        }
        .await;
        if answer.is_err() && sender.is_closed() {
            let mut slot = self.sender.lock().await;
            if slot.as_ref().is_some_and(http2::SendRequest::is_closed) {
                *slot = None;
            }
        }
        answer
    }
}

/// What the fleet shares.
struct Shared {
    /// The simulated relays (`--transport relayed`), empty otherwise.
    relays: Vec<RelayLink>,
    relay_credential: Option<HeaderValue>,
    cfg: LoadConfig,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    credential: String,
    macs: MacPlan,
    run_seed: u64,
    run_start: Instant,
    run_start_ms: i64,
    counters: Counters,
    latency: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.run_start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Runs the HTTPS load test against `addr` for `cfg.duration` (or until `stop`), drains,
/// verifies and reports.
pub async fn run(
    cfg: LoadConfig,
    addr: SocketAddr,
    stop: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<Report> {
    cfg.validate()?;
    let relayed = matches!(cfg.transport, Transport::Relayed(_));
    let tls = {
        let mut tls = (*crate::download::client_config(&cfg.ca_cert)?).clone();
        tls.alpn_protocols = vec![if relayed { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
        Arc::new(tls)
    };
    let relay_credential = match (&cfg.relay_credential, relayed) {
        (Some(c), true) => Some(HeaderValue::from_str(c).context("the relay credential")?),
        _ => None,
    };
    let relays = if relayed { (0..cfg.relays).map(|_| RelayLink::default()).collect() } else { Vec::new() };
    let api = ApiClient::login(&cfg.api, &cfg.admin_email, &cfg.admin_password).await?;
    let (enterprise, credential) = match &cfg.credential {
        Some((id, credential)) => (EnterpriseId(*id), credential.clone()),
        None => {
            let created = api.create_enterprise(&format!("loadtest-https-{}", UnixMillis::now().0)).await?;
            (created.id, created.credential)
        }
    };
    let macs = cfg.mac_prefix.map_or_else(|| MacPlan::random(&mut rand::rng()), MacPlan::new);
    let run_seed = macs.traits_seed();
    let shared = Arc::new(Shared {
        relays,
        relay_credential,
        addr,
        tls,
        credential,
        macs,
        run_seed,
        run_start: Instant::now(),
        run_start_ms: UnixMillis::now().0,
        counters: Counters::default(),
        latency: std::sync::Mutex::new(new_histogram()),
        cfg,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut devices = JoinSet::new();
    for index in 0..shared.cfg.devices {
        devices.spawn(device_task(shared.clone(), index, stop_rx.clone()));
    }
    tokio::select! {
        () = tokio::time::sleep(shared.cfg.duration) => {}
        () = stop => {}
    }
    let gen_end_us = shared.now_us();
    let acked_while_sending = shared.counters.acked.get();
    stop_tx.send_replace(true);
    let mut acked = Vec::with_capacity(devices.len());
    let mut drained = true;
    while let Some(result) = devices.join_next().await {
        match result {
            Ok((device, idle)) => {
                drained &= idle;
                acked.push(device);
            }
            Err(error) => {
                tracing::warn!(%error, "a device task failed");
                shared.counters.errors.incr();
            }
        }
    }
    let stored = api.stored_sequences(enterprise).await.context("verification")?;
    let verified = verify::verify(&acked, &stored);
    let c = &shared.counters;
    let histogram = shared.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let per_second = |count: u64, us: u64| if us == 0 { 0.0 } else { count as f64 * 1e6 / us as f64 };
    let report = Report {
        devices: shared.cfg.devices,
        duration_s: gen_end_us as f64 / 1e6,
        sent: c.sent.get(),
        acked: c.acked.get(),
        errors: c.errors.get(),
        rate_msgs_per_s: per_second(acked_while_sending, gen_end_us),
        ack_latency_us: Latency::from_histogram(&histogram),
        verified,
        connections: Connections {
            established: c.established.get(),
            reconnects: c.reconnects.get(),
            rejected_connections: c.rejected_connections.get(),
            failed_attempts: c.failed_attempts.get(),
            setup_rate_per_s: 0.0,
            setup_latency_us: Latency::from_histogram(&new_histogram()),
        },
        rejected_frames: c.rejected_frames.get(),
        enterprise_id: enterprise.0,
        mac_prefix: shared.macs.to_string(),
        resent: c.resent.get(),
        not_sent: c.not_sent.get(),
        drained,
        alarm_email: None,
        device_commands: commands::report(&shared.counters),
        command_run: None,
        sink: false,
        alarm_stages: Vec::new(),
    };
    if let Some(path) = &shared.cfg.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    Ok(report)
}

/// One device: generates frames at its rate, posts what it owes, resends after failures; after
/// `stop`, posts until everything is acknowledged (or the drain timeout). Returns what it got
/// acknowledged and whether it drained.
async fn device_task(
    shared: Arc<Shared>,
    index: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (AckedDevice, bool) {
    let cfg = &shared.cfg;
    let mac = shared.macs.mac(index);
    let profile = DeviceProfile::new(mac, shared.run_seed ^ u64::from(index));
    let hello = Uplink::Hello(profile.hello(&shared.credential, cfg.heartbeat_interval_s));
    let mut rng = rand::rngs::SmallRng::seed_from_u64(shared.run_seed.wrapping_add(u64::from(index)));
    let mut session = DeviceSession::new();
    let mut commands = commands::HttpsCommands::new(cfg);
    // The first request of a device is a resend, as a relay marks a device's connect.
    let mut resend = true;
    let mut device_id = None;
    let mut client: Option<HttpsIngestClient> = None;
    let mut mark = 0u64;
    let mut failures = 0u32;
    // One tick sends `burst` frames: the tick period keeps the per-device rate.
    let period = if cfg.rate_per_device > 0.0 {
        Duration::from_secs_f64(f64::from(cfg.burst) / cfg.rate_per_device)
    } else {
        Duration::from_secs(u64::from(cfg.heartbeat_interval_s))
    };
    // Behind a (simulated) relay a device connects first: its `Hello` alone, at its turn.
    let relay = (!shared.relays.is_empty()).then(|| index as usize % shared.relays.len());
    let mut need_hello = relay.is_some();
    if relay.is_some() && cfg.connect_rate > 0 {
        let turn = Duration::from_secs_f64(f64::from(index) / f64::from(cfg.connect_rate));
        tokio::select! {
            () = tokio::time::sleep(turn) => {}
            _ = stop.wait_for(|s| *s) => need_hello = false,
        }
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period.mul_f64(rng.random::<f64>()), period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut drain_deadline = None;
    loop {
        if drain_deadline.is_none() && !need_hello {
            // A command's answer or result is due: the device exchanges for it.
            let wake = commands.next_wake_us().map(|due| Duration::from_micros(due.saturating_sub(shared.now_us())));
            tokio::select! {
                () = tokio::time::sleep(wake.unwrap_or_default()), if wake.is_some() => {}
                _ = tick.tick() => {
                    let now = shared.now_us();
                    for _ in 0..cfg.burst {
                        let kind = if cfg.rate_per_device > 0.0 { cfg.mix.draw(&mut rng) } else { MessageKind::Heartbeat };
                        if session.push(kind, now).is_none() {
                            shared.counters.not_sent.incr();
                        }
                    }
                }
                _ = stop.wait_for(|s| *s) => {
                    drain_deadline = Some(Instant::now() + cfg.drain_timeout);
                }
            }
        }
        commands.pump(&mut session, shared.now_us());
        if let Some(deadline) = drain_deadline
            && ((session.is_idle() && !commands.is_busy() && !need_hello) || Instant::now() >= deadline)
        {
            break;
        }
        if session.is_idle() && !need_hello {
            if drain_deadline.is_some() {
                // Draining with a command still running: its answer is due soon.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            continue;
        }
        if failures > 0 {
            let backoff = Duration::from_millis(100 << failures.min(4));
            tokio::time::sleep(backoff).await;
        }
        if client.is_none() && relay.is_none() {
            match HttpsIngestClient::connect(shared.addr, &cfg.server_name, shared.tls.clone()).await {
                Ok(c) => {
                    shared.counters.established.incr();
                    client = Some(c);
                }
                Err(error) => {
                    tracing::debug!(error = %format!("{error:#}"), "HTTPS connect failed");
                    shared.counters.failed_attempts.incr();
                    failures += 1;
                    continue;
                }
            }
        }
        // Every pending frame is (re)sent from the start of the window (the server holds up to `mark`).
        session.handle_welcome(mark, shared.now_us(), |_| {});
        let mut encoder = FrameEncoder::default();
        let mut body = BytesMut::new();
        if encoder.encode(&hello, &mut body).is_err() {
            shared.counters.errors.incr();
            break;
        }
        let mut n = 0;
        while n < MAX_FRAMES_PER_REQUEST {
            let Some(t) = session.poll_transmit() else { break };
            let f = t.frame;
            let message = match f.kind {
                MessageKind::CommandResult(answer) => Message::CommandResult(commands.result(answer)),
                kind => profile.message(kind, f.seq, f.intended_us, shared.run_start_ms),
            };
            let frame = Uplink::Data(DataFrame { seq: f.seq, sent_at_ms: UnixMillis::now().0, body: message });
            if encoder.encode(&frame, &mut body).is_err() {
                shared.counters.errors.incr();
            }
            if t.resend {
                shared.counters.resent.incr();
            } else {
                shared.counters.sent.incr();
            }
            n += 1;
        }
        let answer = match (relay, client.as_mut()) {
            (Some(r), _) => shared.relays[r].post(&shared, resend, body.freeze()).await,
            (None, Some(c)) => {
                c.post_with("/ingest/v1/frames", "application/octet-stream", None, resend, body.freeze()).await
            }
            (None, None) => continue,
        };
        match answer {
            Ok((200, bytes)) => {
                failures = 0;
                resend = false;
                if std::mem::take(&mut need_hello) {
                    shared.counters.established.incr();
                }
                match apply_answer(&shared, &mut session, &mut commands, &bytes) {
                    Ok((id, acked_to)) => {
                        device_id = Some(id);
                        mark = mark.max(acked_to);
                    }
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "an impossible HTTPS answer");
                        shared.counters.errors.incr();
                    }
                }
            }
            Ok((status, bytes)) => {
                tracing::debug!(status, body = %String::from_utf8_lossy(&bytes), "HTTPS ingest refused a request");
                shared.counters.errors.incr();
                shared.counters.reconnects.incr();
                session.handle_disconnect();
                failures += 1;
                resend = true;
                if status == 401 || status == 403 {
                    shared.counters.rejected_connections.incr();
                    break;
                }
            }
            Err(error) => {
                tracing::debug!(error = %format!("{error:#}"), "HTTPS ingest request failed");
                shared.counters.reconnects.incr();
                session.handle_disconnect();
                client = None;
                failures += 1;
                resend = true;
            }
        }
    }
    let idle = session.is_idle();
    (AckedDevice { mac, device_id, acked_persisted: session.into_acked_persisted() }, idle)
}

/// Takes an answer's `Welcome`, `Rejected` notes, `Ack` and `Command`s; the device id and the
/// acked seq.
fn apply_answer(
    shared: &Shared,
    session: &mut DeviceSession,
    commands: &mut commands::HttpsCommands,
    bytes: &[u8],
) -> anyhow::Result<(DeviceId, u64)> {
    let mut decoder = FrameDecoder::default();
    decoder.push(bytes);
    let mut device = None;
    let mut acked = 0;
    let now = shared.now_us();
    let record = |latency_us: u64| {
        let mut h = shared.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        h.saturating_record(latency_us.max(1));
    };
    while let Some(frame) = decoder.next_frame::<Downlink>().context("decoding the answer")? {
        match frame {
            Downlink::Welcome(w) => device = Some(DeviceId(w.device_id)),
            Downlink::Rejected(r) => shared.counters.resolved(session.handle_rejected(r.seq, now, record)),
            Downlink::Ack(a) => {
                acked = a.seq;
                shared.counters.resolved(session.handle_ack(a.seq, now, record));
            }
            Downlink::Command(command) => commands.handle_command(&command, now, &shared.counters),
            other => bail!("unexpected {other:?}"),
        }
    }
    commands.after_acks(session, &shared.counters);
    session.handle_disconnect();
    match device {
        Some(id) => Ok((id, acked)),
        None => bail!("no Welcome"),
    }
}
