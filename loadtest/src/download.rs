//! A simulated device's firmware download (PRV-4): `GET` of the `upgrade_firmware` command's
//! HTTPS URL, trusting the run's CA as the QUIC connections do, hashing as the bytes arrive
//! (nothing is kept but the count and the SHA-256 state), resuming with `Range: bytes=<n>-`
//! after an interrupted attempt, and checking size and SHA-256 at the end. Progress goes out as
//! [`DownloadEvent::Progress`] at every tenth.
//!
//! HTTP/1.1 is spoken by hand (one request per connection, `Connection: close`): a status line,
//! headers up to [`MAX_HEADER_BYTES`], and a body of exactly `Content-Length` bytes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use ring::digest;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Longest response header.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Attempts of one download (each resumes where the previous one stopped).
pub const ATTEMPTS: u32 = 3;

/// Longest wait for any progress (connect, header, a body read).
const STALL: Duration = Duration::from_secs(30);

/// What the device is told to download (an `upgrade_firmware` command's arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// The command.
    pub command_id: u64,
    /// `https://host[:port]/path?query`.
    pub url: String,
    /// Expected SHA-256, lowercase hex.
    pub sha256: String,
    /// Expected length, bytes.
    pub size: u64,
    /// The version it installs.
    pub version: String,
}

/// What a running download reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadEvent {
    /// This share of the image arrived, percent (10, 20, …).
    Progress(u8),
    /// It ended: the version installed, or why it failed.
    Done(Result<String, String>),
}

/// The TLS client configuration of downloads: TLS 1.2 or 1.3, trusting only `ca_cert` (PEM).
pub fn client_config(ca_cert: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_cert).with_context(|| format!("reading {}", ca_cert.display()))? {
        roots.add(cert.with_context(|| format!("parsing {}", ca_cert.display()))?).context("trusting the CA")?;
    }
    ensure!(!roots.is_empty(), "{} holds no certificate", ca_cert.display());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// The parts of an `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (443 when absent).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

/// Splits an `https://` URL; `None` for anything else.
pub fn parse_url(url: &str) -> Option<HttpsUrl> {
    let rest = url.strip_prefix("https://")?;
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 443,
    };
    (!host.is_empty()).then(|| HttpsUrl { host: host.to_owned(), port, target: target.to_owned() })
}

/// What the device has of the image so far.
struct Progress {
    received: u64,
    hash: digest::Context,
    reported: u8,
}

/// Downloads `job`, sending progress and the end to `events` (a closed receiver stops nothing:
/// the download completes as a device's would).
pub async fn run(tls: Arc<rustls::ClientConfig>, job: Download, events: mpsc::Sender<DownloadEvent>) {
    let mut progress = Progress { received: 0, hash: digest::Context::new(&digest::SHA256), reported: 0 };
    let mut last_error = String::new();
    for _ in 0..ATTEMPTS {
        match attempt(&tls, &job, &mut progress, &events).await {
            Ok(()) => {
                let end = finish(&job, &progress);
                let _ = events.send(DownloadEvent::Done(end)).await;
                return;
            }
            Err(error) => last_error = format!("{error:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = events.send(DownloadEvent::Done(Err(format!("download failed: {last_error}")))).await;
}

fn finish(job: &Download, progress: &Progress) -> Result<String, String> {
    if progress.received != job.size {
        return Err(format!("size mismatch: {} bytes, not {}", progress.received, job.size));
    }
    let sha: String = progress.hash.clone().finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
    if sha != job.sha256 {
        return Err(format!("sha256 mismatch: {sha}, not {}", job.sha256));
    }
    Ok(job.version.clone())
}

/// One connection: asks for the bytes not yet received and feeds them to `progress`.
async fn attempt(
    tls: &Arc<rustls::ClientConfig>,
    job: &Download,
    progress: &mut Progress,
    events: &mpsc::Sender<DownloadEvent>,
) -> anyhow::Result<()> {
    let url = parse_url(&job.url).context("not an https:// URL")?;
    let name = ServerName::try_from(url.host.clone()).context("server name")?;
    let stalled = || anyhow::anyhow!("no progress for {} s", STALL.as_secs());
    let tcp = tokio::time::timeout(STALL, tokio::net::TcpStream::connect((url.host.as_str(), url.port)))
        .await
        .map_err(|_| stalled())?
        .context("connecting")?;
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    let mut stream =
        tokio::time::timeout(STALL, connector.connect(name, tcp)).await.map_err(|_| stalled())?.context("TLS")?;
    let range = if progress.received > 0 { format!("Range: bytes={}-\r\n", progress.received) } else { String::new() };
    let host = if url.host.contains(':') { format!("[{}]", url.host) } else { url.host.clone() };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{}\r\n{range}Connection: close\r\nUser-Agent: fleetpulse-loadtest\r\n\r\n",
        url.target, url.port
    );
    stream.write_all(request.as_bytes()).await.context("sending the request")?;
    // The header, read in pieces until the blank line; what follows it is body.
    let mut buf = Vec::with_capacity(4096);
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        ensure!(buf.len() < MAX_HEADER_BYTES, "a response header over {MAX_HEADER_BYTES} bytes");
        let mut piece = [0u8; 4096];
        let n = tokio::time::timeout(STALL, stream.read(&mut piece)).await.map_err(|_| stalled())??;
        ensure!(n > 0, "the connection closed before the response header ended");
        buf.extend_from_slice(&piece[..n]);
    };
    let header = std::str::from_utf8(&buf[..header_end]).context("a response header that is not UTF-8")?;
    let status: u16 = header.split(' ').nth(1).and_then(|s| s.parse().ok()).context("no status code")?;
    let length: u64 = header
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())
        .context("no Content-Length")?;
    match status {
        206 if progress.received > 0 => {}
        200 => {
            // The whole image again: start over.
            progress.received = 0;
            progress.hash = digest::Context::new(&digest::SHA256);
        }
        other => anyhow::bail!("HTTP {other}: {}", header.lines().next().unwrap_or_default()),
    }
    ensure!(progress.received + length == job.size, "the server sends {length} bytes from {}", progress.received);
    let mut body_left = length;
    let mut pending = feed(&buf[header_end..], &mut body_left, job.size, progress);
    let mut piece = vec![0u8; 64 * 1024];
    loop {
        if let Some(p) = pending.take() {
            // Progress is best effort: a full channel skips a report.
            let _ = events.try_send(DownloadEvent::Progress(p));
        }
        if body_left == 0 {
            return Ok(());
        }
        let n = tokio::time::timeout(STALL, stream.read(&mut piece)).await.map_err(|_| stalled())??;
        ensure!(n > 0, "the connection closed {body_left} bytes before the end");
        pending = feed(&piece[..n], &mut body_left, job.size, progress);
    }
}

/// Takes body bytes (at most `body_left` of them) into `progress`; answers a new tenth reached.
fn feed(bytes: &[u8], body_left: &mut u64, size: u64, progress: &mut Progress) -> Option<u8> {
    let take = bytes.len().min(usize::try_from(*body_left).unwrap_or(usize::MAX));
    progress.hash.update(&bytes[..take]);
    progress.received += take as u64;
    *body_left -= take as u64;
    let percent = u8::try_from(progress.received.saturating_mul(100) / size.max(1)).unwrap_or(100);
    (percent / 10 > progress.reported / 10).then(|| {
        progress.reported = percent / 10 * 10;
        progress.reported
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("https://127.0.0.1:8444/firmware/3/7?token=1.ab").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.target.as_str()), ("127.0.0.1", 8444, "/firmware/3/7?token=1.ab"));
        let u = parse_url("https://fleet.example.com/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fleet.example.com", 443));
        let u = parse_url("https://[::1]:9/y").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.target.as_str()), ("::1", 9, "/y"));
        for bad in ["http://x/y", "https://", "https://:1/", "https://x:port/"] {
            assert_eq!(parse_url(bad), None, "{bad}");
        }
    }
}
