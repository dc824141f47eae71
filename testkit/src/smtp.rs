//! Starts a real SMTP server (Python's aiosmtpd, Debian's `python3-aiosmtpd`) on a free loopback
//! port, saving every accepted message as a file; optionally scripted to refuse messages.
//!
//! The server runs with `/usr/bin/python3` (the system interpreter the Debian package installs
//! for), not whatever `python3` comes first on `PATH`. It is killed when the [`SmtpServer`] is
//! dropped.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The interpreter Debian's `python3-aiosmtpd` is installed for.
const PYTHON: &str = "/usr/bin/python3";
/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The server's stderr, in its temporary directory.
const STDERR_LOG: &str = "stderr.log";
/// Attempts at finding a free port (another process may take it before the server binds it).
const START_ATTEMPTS: usize = 5;

/// The handler of [`SmtpServer::start_failing`]: refuses the first `times` messages with `code`,
/// then saves messages like aiosmtpd's `Mailbox` (one file per message under `DIR/new`).
const FAILING_HANDLER: &str = r#""""aiosmtpd handler for fleetpulse tests: refuse N messages, then save them."""
import os


class Handler:
    def __init__(self, mail_dir, code, times):
        self.new_dir = os.path.join(mail_dir, "new")
        os.makedirs(self.new_dir, exist_ok=True)
        self.code = int(code)
        self.times = int(times)
        self.received = 0

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 3:
            parser.error("usage: Handler MAIL_DIR CODE TIMES")
        return cls(*args)

    async def handle_DATA(self, server, session, envelope):
        self.received += 1
        if self.received <= self.times:
            if self.code >= 500:
                return "%d 5.7.1 rejected" % self.code
            return "%d 4.3.0 try again" % self.code
        name = os.path.join(self.new_dir, "%09d.eml" % self.received)
        with open(name + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(name + ".tmp", name)
        return "250 OK"
"#;

/// A running aiosmtpd; killed when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    child: Child,
    port: u16,
    mail_dir: PathBuf,
    ca_pem: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

/// How a TLS test server is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain connection that must be upgraded with `STARTTLS` (aiosmtpd `--tlscert`, TLS required).
    StartTls,
    /// TLS from the first byte (aiosmtpd `--smtpscert`).
    Implicit,
}

/// Writes a fresh CA and a `localhost` / `127.0.0.1` server certificate signed by it into `dir`:
/// `ca.pem`, `server.pem`, `server.key`.
fn write_test_pki(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "fleetpulse SMTP test CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server certificate names");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
    fs::write(dir.join("server.pem"), cert.pem()).expect("write server.pem");
    fs::write(dir.join("server.key"), key.serialize_pem()).expect("write server.key");
}

impl SmtpServer {
    /// Starts a server that accepts every message and saves it (aiosmtpd's `Mailbox` handler).
    ///
    /// # Panics
    ///
    /// If aiosmtpd is not installed (the message says how to install it) or the server does not
    /// accept connections within 10 s (the message includes its stderr).
    pub fn start() -> SmtpServer {
        SmtpServer::launch(|_dir, mail_dir, cmd| {
            cmd.args(["-c", "aiosmtpd.handlers.Mailbox"]).arg(mail_dir);
        })
    }

    /// Starts a server that answers the first `times` messages with the reply `code` (a 4xx code
    /// gives `"<code> 4.3.0 try again"`, a 5xx code `"<code> 5.7.1 rejected"`) and then accepts
    /// and saves them. `usize::MAX` refuses every message.
    ///
    /// # Panics
    ///
    /// As [`SmtpServer::start`]; also if `code` is not a 4xx or 5xx code.
    pub fn start_failing(code: u16, times: usize) -> SmtpServer {
        assert!((400..600).contains(&code), "start_failing needs a 4xx or 5xx reply code, got {code}");
        SmtpServer::launch(|dir, mail_dir, cmd| {
            fs::write(dir.join("fleetpulse_smtp_handler.py"), FAILING_HANDLER).expect("write the aiosmtpd handler");
            cmd.env("PYTHONPATH", dir).args(["-c", "fleetpulse_smtp_handler.Handler"]).arg(mail_dir);
            cmd.arg(code.to_string()).arg(times.to_string());
        })
    }

    /// Starts a server that accepts and saves every message over TLS, with a certificate for
    /// `localhost` and `127.0.0.1` from a CA made for it ([`SmtpServer::ca_pem`]).
    ///
    /// # Panics
    ///
    /// As [`SmtpServer::start`].
    pub fn start_tls(mode: TlsMode) -> SmtpServer {
        let mut server = SmtpServer::launch(|dir, mail_dir, cmd| {
            write_test_pki(dir);
            let (cert_flag, key_flag) = match mode {
                TlsMode::StartTls => ("--tlscert", "--tlskey"),
                TlsMode::Implicit => ("--smtpscert", "--smtpskey"),
            };
            cmd.arg(cert_flag).arg(dir.join("server.pem")).arg(key_flag).arg(dir.join("server.key"));
            cmd.args(["-c", "aiosmtpd.handlers.Mailbox"]).arg(mail_dir);
        });
        server.ca_pem = Some(server._dir.path().join("ca.pem"));
        server
    }

    /// The CA certificate (PEM) that signed a [`SmtpServer::start_tls`] server's certificate.
    pub fn ca_pem(&self) -> Option<&Path> {
        self.ca_pem.as_deref()
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The raw RFC 5322 text of every saved message, oldest first (by file time, then name).
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.mail_dir.join("new")) else {
            return Vec::new();
        };
        let mut files: Vec<(SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .map(|p| (fs::metadata(&p).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH), p))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| String::from_utf8_lossy(&fs::read(&p).expect("read a saved message")).into_owned())
            .collect()
    }

    fn launch(configure: impl Fn(&Path, &Path, &mut Command)) -> SmtpServer {
        check_aiosmtpd();
        let dir = tempfile::Builder::new().prefix("fleetpulse-smtp-").tempdir().expect("a temporary directory");
        let mail_dir = dir.path().join("maildir");
        let stderr_path = dir.path().join(STDERR_LOG);
        for _ in 0..START_ATTEMPTS {
            let port = crate::free_port();
            let stderr = fs::File::create(&stderr_path).expect("create the server's stderr log");
            let mut cmd = Command::new(PYTHON);
            cmd.env_remove("PYTHONHOME")
                .env_remove("PYTHONPATH")
                .args(["-m", "aiosmtpd", "-n", "-l"])
                .arg(format!("127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
            configure(dir.path(), &mail_dir, &mut cmd);
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {PYTHON} -m aiosmtpd: {e}"));
            let outcome = wait_until_listening(&mut child, port);
            if outcome == Startup::Listening {
                return SmtpServer { child, port, mail_dir, ca_pem: None, _dir: dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
            let port_taken = stderr.to_ascii_lowercase().contains("address already in use");
            if outcome == Startup::TimedOut || !port_taken {
                panic!("aiosmtpd did not accept connections on port {port} ({outcome:?}); stderr:\n{stderr}");
            }
        }
        panic!("aiosmtpd found no free port in {START_ATTEMPTS} attempts");
    }
}

impl Drop for SmtpServer {
    /// Kills the server; in a test that is failing, also prints what the server wrote to its
    /// stderr (a refused or dropped connection leaves its traceback there).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let stderr = fs::read_to_string(self._dir.path().join(STDERR_LOG)).unwrap_or_default();
            eprintln!("aiosmtpd on port {} wrote to stderr:\n{stderr}", self.port);
        }
    }
}

/// How a start attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Startup {
    /// The port accepts connections.
    Listening,
    /// The process exited.
    Exited,
    /// Neither within [`START_TIMEOUT`].
    TimedOut,
}

fn wait_until_listening(child: &mut Child, port: u16) -> Startup {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return Startup::Exited;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Startup::Listening;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Startup::TimedOut
}

/// Panics with installation instructions unless the system interpreter can import aiosmtpd.
fn check_aiosmtpd() {
    let found = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "aiosmtpd not found: install it with `apt-get install -y python3-aiosmtpd`");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_connections_until_dropped() {
        let server = SmtpServer::start();
        let port = server.port();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(server.messages().is_empty());
        drop(server);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
