//! Starts a throwaway PostgreSQL cluster in a temporary directory on a free loopback port.
//!
//! The cluster uses the newest server binaries under `/usr/lib/postgresql/<version>/bin`
//! (Debian's `postgresql` package), trust authentication for the `postgres` user, and durability
//! switched off (`fsync=off`): it is for tests only. PostgreSQL refuses to run as root, so when
//! the tests run as root the server runs as the `postgres` user (through `runuser`) in a
//! directory handed over to it.
//!
//! # Lifetime
//!
//! Every server has a *watchdog*: a small `sh` process, in its own process group (so that a
//! Ctrl-C in the terminal does not reach it), that blocks reading a pipe whose only writer is
//! the test process. When the pipe closes it stops the server (`pg_ctl stop -m immediate`) and
//! removes the directory. The pipe closes when the [`PostgresServer`] is dropped (the drop waits
//! for the watchdog, so the server is gone when it returns) and also, by the kernel, whenever the
//! test process exits, however it exits. That is how the [`PostgresServer::shared`] instance,
//! held in a `static` and therefore never dropped, is stopped at the end of its test binary:
//! no pidfile polling and no `prctl`.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// Where Debian installs the server binaries, one directory per major version.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The database [`PostgresServer::url`] points at.
const DEFAULT_DATABASE: &str = "fleetpulse";

/// Attempts at finding a free port before giving up (another process may take the port between
/// [`crate::free_port`] and the server binding it).
const START_ATTEMPTS: usize = 5;

/// A running throwaway PostgreSQL cluster; stopped and deleted when dropped.
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    port: u16,
    watchdog: Option<Child>,
    dir: tempfile::TempDir,
}

impl PostgresServer {
    /// Initialises and starts a cluster (about a second) with an empty database `fleetpulse`.
    ///
    /// # Panics
    ///
    /// If the server binaries are not installed (the message says how to install them), or if
    /// the cluster cannot be created or started (the message includes the server log).
    pub fn start() -> PostgresServer {
        let bin = server_binaries();
        let dir = tempfile::Builder::new().prefix("fleetpulse-pg-").tempdir().expect("a temporary directory");
        let as_root = running_as_root();
        if as_root {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("hand the temporary directory over to the postgres user");
        }
        let data = dir.path().join("data");
        let mut initdb = server_command(&bin.join("initdb"));
        initdb.arg("-D").arg(&data).args(["-U", "postgres", "--auth=trust", "--no-sync", "--encoding=UTF8"]);
        initdb.arg("--locale=C");
        run(&mut initdb, "initdb");

        let mut stop = server_command(&bin.join("pg_ctl"));
        stop.arg("-D").arg(&data).args(["stop", "-m", "immediate", "-w"]);
        let watchdog = spawn_watchdog(dir.path(), &stop);
        // From here on, a panic drops `server`, whose watchdog stops whatever was started.
        let mut server = PostgresServer { bin, port: 0, watchdog: Some(watchdog), dir };
        server.port = server.start_postmaster();
        server.createdb(DEFAULT_DATABASE);
        server
    }

    /// One server for the whole test process, started on first use.
    ///
    /// It is never dropped; its watchdog stops it and removes its directory when the process
    /// exits (see the module documentation). Tests sharing it should each work in their own
    /// database ([`PostgresServer::create_database`]).
    pub fn shared() -> &'static PostgresServer {
        static SHARED: OnceLock<PostgresServer> = OnceLock::new();
        SHARED.get_or_init(PostgresServer::start)
    }

    /// URL of the `fleetpulse` database: `postgres://postgres@127.0.0.1:PORT/fleetpulse`.
    pub fn url(&self) -> String {
        self.database_url(DEFAULT_DATABASE)
    }

    /// The TCP port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates the empty database `name` and returns its URL.
    ///
    /// # Panics
    ///
    /// If the database cannot be created, for instance because `name` is taken.
    pub fn create_database(&self, name: &str) -> String {
        self.createdb(name);
        self.database_url(name)
    }

    fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Starts the postmaster on a free port, trying another port if that one was taken.
    fn start_postmaster(&self) -> u16 {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        let socket_dir = self.dir.path().display().to_string();
        for _ in 0..START_ATTEMPTS {
            let port = crate::free_port();
            let options = format!(
                "-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off"
            );
            let mut pg_ctl = server_command(&self.bin.join("pg_ctl"));
            pg_ctl.arg("-D").arg(&data).arg("-o").arg(options).arg("-l").arg(&log).args(["start", "-w", "-t", "30"]);
            let out = pg_ctl.stdin(Stdio::null()).output().expect("run pg_ctl");
            if out.status.success() {
                return port;
            }
        }
        panic!(
            "PostgreSQL did not start after {START_ATTEMPTS} attempts; server log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn createdb(&self, name: &str) {
        let mut createdb = Command::new(self.bin.join("createdb"));
        createdb.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "--", name]);
        run(&mut createdb, "createdb");
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // Closing its stdin tells the watchdog to stop the server and remove the directory.
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// The `bin` directory of the newest PostgreSQL installed under [`DEBIAN_ROOT`].
fn server_binaries() -> PathBuf {
    let newest = std::fs::read_dir(DEBIAN_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: Vec<u32> =
                entry.file_name().to_str()?.split('.').map(str::parse).collect::<Result<_, _>>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .max();
    match newest {
        Some((_, bin)) => bin,
        None => panic!("PostgreSQL server binaries not found: install them with `apt-get install -y postgresql`"),
    }
}

/// True if this process runs as root (the owner of `/proc/self` is the effective user).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// Uid and gid of the `postgres` user, from `/etc/passwd`.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .expect("a `postgres` user (created by the postgresql package) to run the server as, since we run as root")
}

/// A command running `program` as the user owning the cluster: `postgres` if we are root.
fn server_command(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs a command to completion; panics with its output if it fails.
fn run(command: &mut Command, what: &str) {
    let out = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Spawns the watchdog that runs `stop` and removes `dir` once its stdin closes.
fn spawn_watchdog(dir: &Path, stop: &Command) -> Child {
    // sh -c SCRIPT NAME DIR STOP...: "$1" is the directory, the rest the stop command.
    const SCRIPT: &str = r#"cat >/dev/null; dir=$1; shift; "$@"; rm -rf "$dir""#;
    Command::new("sh")
        .args(["-c", SCRIPT, "fleetpulse-pg-watchdog"])
        .arg(dir)
        .arg(stop.get_program())
        .args(stop.get_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn the PostgreSQL watchdog (sh)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_accepts_databases_and_is_gone_after_drop() {
        let started = std::time::Instant::now();
        let server = PostgresServer::start();
        let elapsed = started.elapsed();
        assert!(elapsed < std::time::Duration::from_secs(10), "start took {elapsed:?}");
        assert_eq!(server.url(), format!("postgres://postgres@127.0.0.1:{}/fleetpulse", server.port()));
        let url = server.create_database("second");
        assert!(url.ends_with("/second"));
        let dir = server.dir.path().to_path_buf();
        let port = server.port();
        drop(server);
        assert!(!dir.exists(), "the directory is removed");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the server is stopped");
    }

    #[test]
    fn the_shared_server_is_started_once() {
        assert_eq!(PostgresServer::shared().port(), PostgresServer::shared().port());
    }
}
