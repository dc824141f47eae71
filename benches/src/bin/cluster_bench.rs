//! `cluster_bench`: throughput and CPU per message of 1, 2 or 3 fleetpulse nodes sharing one
//! PostgreSQL and one ClickHouse (issue 16's numbers), on this machine.
//!
//! `cluster_bench NODES DEVICES RATE SECONDS` starts a throwaway PostgreSQL and ClickHouse
//! (`fleetpulse-testkit`), `NODES` release `fleetpulse serve` processes on the scale-out store
//! (`[cluster]`, one shared certificate), and the load tester (`fleetpulse-loadtest`) with
//! `DEVICES` devices spread over every node's address, each sending `RATE` frames per second for
//! `SECONDS`. It reads each process's CPU time from `/proc` before and after the load test and
//! prints one JSON line: acknowledged messages per second, ack latency, missing and duplicated,
//! and CPU per acknowledged message of the nodes together, of PostgreSQL, of ClickHouse and of the
//! load tester. The binaries are looked up beside this one (`target/release/`), or in
//! `FLEETPULSE_BIN` / `LOADTEST_BIN`. `scripts/perf.sh cluster` builds and runs it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use fleetpulse_testkit::clickhouse::ClickHouseServer;
use fleetpulse_testkit::postgres::PostgresServer;

const ADMIN_EMAIL: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "cluster-bench-password";

/// A running node: the child process and its addresses.
struct Node {
    child: Child,
    quic: SocketAddr,
    http: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `fleetpulse` or `fleetpulse-loadtest`: `$VAR`, else beside this executable.
fn binary(var: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var(var) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("this executable's path")?;
    let path = exe.parent().context("this executable's directory")?.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p fleetpulse -p fleetpulse-loadtest) or set {var}",
            path.display()
        );
    }
    Ok(path)
}

/// Starts node `n` with `store` as its `[store]` table; nodes after the first share `tls`.
fn start_node(bin: &Path, n: usize, store: &str, tls: Option<&Path>) -> anyhow::Result<Node> {
    let dir = tempfile::Builder::new().prefix("fleetpulse-node-").tempdir()?;
    let tls = tls.map_or(String::new(), |d| {
        format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", d.join("server.pem").display(), d.join("server.key").display())
    });
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("[store]\n{store}[cluster]\nnode_id = \"n{n}\"\n{tls}"))?;
    let mut child = Command::new(bin)
        .args(["serve", "--quic-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .env("FLEETPULSE_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("FLEETPULSE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("FLEETPULSE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("the node's stdout")?).lines();
    let (quic, http) = loop {
        let Some(line) = lines.next() else { bail!("node {n} exited before listening") };
        let line = line?;
        if let Some(rest) = line.strip_prefix("fleetpulse listening ") {
            let field = |name: &str| {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(name))
                    .and_then(|v| v.parse::<SocketAddr>().ok())
                    .with_context(|| format!("{name} in {line:?}"))
            };
            break (field("quic=")?, field("http=")?);
        }
    };
    // Keep draining stdout so that the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Node { child, quic, http, dir })
}

/// Clock ticks per second of `/proc/*/stat` times (100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// (utime + stime + cutime + cstime) of `pid`, clock ticks, and its parent.
fn cpu_ticks(pid: u32) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let parent = fields.get(1)?.parse().ok()?;
    let ticks = (11..=14).filter_map(|i| fields.get(i)?.parse::<u64>().ok()).sum();
    Some((ticks, parent))
}

/// Every process on the machine: (pid, command line with NULs as spaces).
fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
        .collect()
}

/// CPU ticks of the process whose command line contains `needle` and of all its children.
fn tree_ticks(needle: &str) -> u64 {
    let all = processes();
    let Some(root) = all.iter().find(|(_, cmd)| cmd.contains(needle)).map(|(pid, _)| *pid) else { return 0 };
    all.iter()
        .filter_map(|(pid, _)| {
            let (ticks, parent) = cpu_ticks(*pid)?;
            (*pid == root || parent == root).then_some(ticks)
        })
        .sum()
}

/// CPU ticks of the nodes, PostgreSQL and ClickHouse, in that order.
fn sample(nodes: &[Node], pg_needle: &str, ch_needle: &str) -> [u64; 3] {
    let nodes = nodes.iter().filter_map(|n| cpu_ticks(n.child.id()).map(|(t, _)| t)).sum();
    [nodes, tree_ticks(pg_needle), tree_ticks(ch_needle)]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [nodes, devices, rate, secs] = args.as_slice() else {
        bail!("usage: cluster_bench NODES DEVICES RATE SECONDS");
    };
    let nodes: usize = nodes.parse().context("NODES")?;
    if !(1..=8).contains(&nodes) {
        bail!("NODES: 1 to 8");
    }
    let (devices, rate, secs): (u32, f64, u64) =
        (devices.parse().context("DEVICES")?, rate.parse().context("RATE")?, secs.parse().context("SECONDS")?);
    let (server_bin, loadtest_bin) =
        (binary("FLEETPULSE_BIN", "fleetpulse")?, binary("LOADTEST_BIN", "fleetpulse-loadtest")?);

    let pg = PostgresServer::start();
    let ch = ClickHouseServer::start();
    let store = format!(
        "backend = \"clickhouse\"\nclickhouse_url = \"{}\"\nclickhouse_database = \"bench\"\npostgres_url = \"{}\"\n",
        ch.url(),
        pg.create_database("bench")
    );
    let first = start_node(&server_bin, 1, &store, None)?;
    let tls = first.dir.path().join("tls");
    let mut running = vec![first];
    for n in 2..=nodes {
        running.push(start_node(&server_bin, n, &store, Some(&tls))?);
    }
    let (pg_needle, ch_needle) = (format!("-p {} ", pg.port()), ch.dir().display().to_string());

    let report_path = running[0].dir.path().join("report.json");
    let mut load = Command::new(&loadtest_bin);
    load.args(["--quic-addr", &running[0].quic.to_string(), "--api", &format!("http://{}", running[0].http)])
        .args(["--admin-email", ADMIN_EMAIL, "--admin-password", ADMIN_PASSWORD, "--ca-cert"])
        .arg(tls.join("ca.pem"))
        .args(["--devices", &devices.to_string(), "--rate", &rate.to_string(), "--duration", &format!("{secs}s")])
        .args(["--heartbeat-interval", "30", "--connect-rate", "500", "--no-progress", "--report"])
        .arg(&report_path);
    for node in &running[1..] {
        load.args(["--also-quic-addr", &node.quic.to_string()]);
    }
    let before = sample(&running, &pg_needle, &ch_needle);
    let mut child = load.stdout(Stdio::null()).spawn().context("starting the load tester")?;
    let load_pid = child.id();
    let mut load_ticks = 0;
    let status = loop {
        // The load tester's own time, read while it lives (a reaped child's /proc entry is gone).
        load_ticks = cpu_ticks(load_pid).map_or(load_ticks, |(t, _)| t);
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let after = sample(&running, &pg_needle, &ch_needle);
    // Exit code 3: the run finished and its verification found rows missing or duplicated;
    // that is a result to print, not a failure of the bench.
    if !status.success() && status.code() != Some(3) {
        bail!("the load tester failed: {status}");
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path)?)?;
    let acked = report["acked"].as_u64().unwrap_or(0).max(1) as f64;
    let us_per_msg = |ticks: u64| ticks as f64 / TICKS_PER_S * 1e6 / acked;
    let out = serde_json::json!({
        "nodes": nodes,
        "devices": devices,
        "offered_msgs_per_s": f64::from(devices) * rate,
        "acked": report["acked"],
        "rate_msgs_per_s": report["rate_msgs_per_s"],
        "ack_p50_ms": report["ack_latency_us"]["p50"].as_u64().unwrap_or(0) as f64 / 1000.0,
        "ack_p99_ms": report["ack_latency_us"]["p99"].as_u64().unwrap_or(0) as f64 / 1000.0,
        "missing": report["verified"]["missing"],
        "duplicated": report["verified"]["duplicated"],
        "errors": report["errors"],
        "reconnects": report["connections"]["reconnects"],
        "verified": status.success(),
        "cpu_us_per_msg": {
            "nodes": us_per_msg(after[0] - before[0]),
            "postgres": us_per_msg(after[1].saturating_sub(before[1])),
            "clickhouse": us_per_msg(after[2].saturating_sub(before[2])),
            "loadtest": us_per_msg(load_ticks),
        },
    });
    println!("{out}");
    Ok(())
}
