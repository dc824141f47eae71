//! Starts a throwaway ClickHouse server (the `clickhouse-server` binary) for tests.
//!
//! The server runs in a temporary directory with a minimal configuration on free loopback ports.
//! It is started under a small `sh` watchdog that holds the read end of a pipe whose write end
//! only this process holds: when the test process exits (even without running destructors, as
//! with the shared instance in a `static`), the pipe closes and the watchdog kills the server and
//! removes its directory. No server outlives the tests that started it.
//!
//! The directory is made in `/dev/shm` (a tmpfs) when there is one, else in the temporary
//! directory; `FLEETPULSE_CLICKHOUSE_DIR` names another parent. ClickHouse writes a directory of
//! about 40 files per insert and table (the wide parts of the 18.x server), and on this disk
//! (ext4 mounted with `discard`) removing them ran at about 270 files a second: the 140,000 files
//! of a three-node test took over ten minutes to delete. On a tmpfs they go at once, and merged
//! parts are removed by the server after 5 s instead of 8 minutes, so few remain.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::free_port;

/// How long [`ClickHouseServer::start`] waits for `/ping` to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where Debian and the upstream packages install the server: a program and its leading arguments.
const CANDIDATES: &[(&str, &[&str])] = &[
    ("/usr/bin/clickhouse-server", &[]),
    ("/usr/sbin/clickhouse-server", &[]),
    ("/usr/bin/clickhouse", &["server"]),
    ("/usr/local/bin/clickhouse-server", &[]),
    ("/usr/local/bin/clickhouse", &["server"]),
];

/// The watchdog. `$1` is the data directory, the rest the server command line. A line on stdin
/// means "stop, keep the data" (for [`ClickHouseServer::stop`]); end of file means "stop and
/// remove the directory". The script exits with the server.
const WATCHDOG: &str = r#"
dir=$1
shift
exec 3<&0 </dev/null
"$@" 3<&- >>"$dir/server.stdout" 2>&1 &
pid=$!
( if ! read -r _line <&3; then : >"$dir/.remove"; fi; kill -9 "$pid" 2>/dev/null ) &
watcher=$!
exec 3<&-
wait "$pid"
status=$?
kill "$watcher" 2>/dev/null
if [ -e "$dir/.remove" ]; then rm -rf "$dir"; fi
exit "$status"
"#;

/// A ClickHouse server for tests, killed (and its directory removed) when dropped or when the
/// test process exits.
#[derive(Debug)]
pub struct ClickHouseServer {
    dir: PathBuf,
    http_port: u16,
    tcp_port: u16,
    program: PathBuf,
    leading_args: Vec<String>,
    child: Option<Child>,
    control: Option<ChildStdin>,
}

impl ClickHouseServer {
    /// Starts a server on free loopback ports in a fresh temporary directory and waits until it
    /// answers `/ping`.
    ///
    /// # Panics
    /// If the binary is not installed, or the server does not answer within 20 s (the message
    /// carries the tail of its log).
    pub fn start() -> ClickHouseServer {
        let (program, leading_args) = find_binary();
        let dir = tempfile::Builder::new()
            .prefix("fleetpulse-clickhouse-")
            .tempdir_in(parent_dir())
            .expect("a temporary directory for ClickHouse")
            .keep();
        let http_port = free_port();
        let mut tcp_port = free_port();
        while tcp_port == http_port {
            tcp_port = free_port();
        }
        write_config(&dir, http_port, tcp_port);
        let mut server = ClickHouseServer {
            dir,
            http_port,
            tcp_port,
            program,
            leading_args: leading_args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
            control: None,
        };
        server.spawn();
        server
    }

    /// The server shared by every test of this process (started on first use). Tests keep
    /// apart by using a database each.
    pub fn shared() -> &'static ClickHouseServer {
        static SHARED: OnceLock<ClickHouseServer> = OnceLock::new();
        SHARED.get_or_init(ClickHouseServer::start)
    }

    /// Base URL of the HTTP interface, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Port of the HTTP interface.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Port of the native TCP interface.
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// The server's directory (configuration, data, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server and waits for it to exit; its data stays for [`ClickHouseServer::restart`].
    /// Used by outage tests. Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut control) = self.control.take() {
            // The watchdog kills the server on this line; if it is already gone, so is the server.
            let _ = control.write_all(b"stop\n");
            let _ = control.flush();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports with the same data (stopping it first if it is
    /// running) and waits until it answers `/ping`.
    ///
    /// # Panics
    /// As [`ClickHouseServer::start`].
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("clickhouse-watchdog")
            .arg(&self.dir)
            .arg(&self.program)
            .args(&self.leading_args)
            .arg(format!("--config-file={}", self.dir.join("config.xml").display()))
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("`sh` starts (it runs the ClickHouse watchdog)");
        self.control = child.stdin.take();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(self.http_port) {
                self.child = Some(child);
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("ClickHouse server exited during start ({status}); log tail:\n{}", self.log_tail());
            }
            if Instant::now() >= deadline {
                self.child = Some(child);
                let tail = self.log_tail();
                self.stop();
                panic!(
                    "ClickHouse server did not answer /ping on port {} within {START_TIMEOUT:?}; log tail:\n{tail}",
                    self.http_port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the server's logs (error log, main log, stdout), for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["server.err.log", "server.log", "server.stdout"] {
            if let Ok(text) = std::fs::read_to_string(self.dir.join(name)) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(30)..];
                out.push_str(&format!("--- {name} ---\n{}\n", tail.join("\n")));
            }
        }
        out
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        // End of file on the watchdog's stdin: it kills the server and removes the directory.
        self.control = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        if self.dir.exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Where servers' directories are made: `FLEETPULSE_CLICKHOUSE_DIR`, else `/dev/shm` if it is a
/// writable directory, else the temporary directory.
fn parent_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLEETPULSE_CLICKHOUSE_DIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    let writable = shm.is_dir() && tempfile::tempdir_in(shm).is_ok();
    if writable { shm.to_path_buf() } else { std::env::temp_dir() }
}

fn find_binary() -> (PathBuf, &'static [&'static str]) {
    CANDIDATES
        .iter()
        .find(|(path, _)| Path::new(path).is_file())
        .map(|(path, args)| (PathBuf::from(path), *args))
        .unwrap_or_else(|| {
            panic!("ClickHouse server not found: install it with `apt-get install -y clickhouse-server`")
        })
}

fn write_config(dir: &Path, http_port: u16, tcp_port: u16) {
    let d = dir.display();
    let config = format!(
        r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{d}/server.log</log>
        <errorlog>{d}/server.err.log</errorlog>
        <size>10M</size>
        <count>1</count>
    </logger>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <merge_tree>
        <old_parts_lifetime>5</old_parts_lifetime>
        <cleanup_delay_period>1</cleanup_delay_period>
    </merge_tree>
</yandex>
"#
    );
    let users = r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <default></default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>::/0</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default></default>
    </quotas>
</yandex>
"#;
    std::fs::write(dir.join("config.xml"), config).expect("write ClickHouse config.xml");
    std::fs::write(dir.join("users.xml"), users).expect("write ClickHouse users.xml");
}

/// True if `GET /ping` on the port answers `Ok.`.
fn ping(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /ping HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let mut response = String::new();
    if stream.read_to_string(&mut response).is_err() {
        return false;
    }
    response.starts_with("HTTP/1.") && response.contains(" 200 ") && response.trim_end().ends_with("Ok.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stops_restarts_and_cleans_up() {
        let mut server = ClickHouseServer::start();
        assert!(ping(server.http_port()));
        let dir = server.dir().to_path_buf();
        server.stop();
        assert!(!ping(server.http_port()), "stopped server still answers");
        assert!(dir.join("config.xml").exists(), "stop keeps the data");
        server.restart();
        assert!(ping(server.http_port()));
        drop(server);
        assert!(!dir.exists(), "drop removes the directory");
    }
}
