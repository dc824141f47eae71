//! End-to-end: damaged data is detected instead of served (a changed MAC address, a flipped page
//! header, bytes flipped mid-file, a WAL cut in half after acknowledged writes), `check` and
//! `repair` answer with exit codes and reports, and a full disk answers 503 instead of hanging
//! and recovers by itself (issue 19, items 1 and 2). Real binary, real files.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN_EMAIL, ADMIN_PASSWORD, Api, RawDevice, TestServer, metric};
use fleetpulse_proto::wire::{Downlink, Message, ResourceReport};

/// Runs of the server share two cores: one at a time.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Exit status, stdout and stderr of `fleetpulse <args> --data-dir <dir>`; panics if it runs
/// longer than `limit` (a start that hangs or serves instead of refusing).
fn run(args: &[&str], dir: &Path, limit: Duration) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .args(["--quic-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--config"])
        .arg(dir.join("test-config.toml"))
        .env("FLEETPULSE_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("FLEETPULSE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("FLEETPULSE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut out = String::new();
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            panic!("`fleetpulse {}` still running after {limit:?} (served or hung); stdout: {out}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code().unwrap_or(-1), out, err)
}

fn db(dir: &Path) -> PathBuf {
    dir.join("fleetpulse.db")
}

fn wal_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("fleetpulse.db-wal")).map(|m| m.len()).unwrap_or(0)
}

/// Waits until the idle checkpoint has folded the WAL into the database and truncated it (the
/// server's background writes add a few KiB right after).
fn wait_for_truncated_wal(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while wal_len(dir) > 64 << 10 {
        assert!(Instant::now() < deadline, "the WAL was not truncated when idle: {} bytes", wal_len(dir));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A device that says Hello and returns the Welcome's last stored sequence.
async fn device(server: &TestServer, credential: &str, mac: &str) -> (RawDevice, u64) {
    let mut dev = RawDevice::connect(server).await;
    dev.send(&[RawDevice::hello(mac, credential, 30)]).await;
    match dev.next().await {
        Some(Downlink::Welcome(w)) => (dev, w.last_seq),
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// A resource report: a persisted kind, so its ack means it is committed.
fn report(seq: u64) -> fleetpulse_proto::wire::Uplink {
    RawDevice::data(
        seq,
        Message::ResourceReport(ResourceReport { cpu_centi_pct: 1234, mem_used_bytes: 1, mem_total_bytes: 2 }),
    )
}

/// Sends resource reports `seqs` and waits for the ack of the last.
async fn send_acked(dev: &mut RawDevice, seqs: std::ops::RangeInclusive<u64>) {
    let last = *seqs.end();
    let frames: Vec<_> = seqs.map(report).collect();
    dev.send(&frames).await;
    loop {
        match dev.next().await {
            Some(Downlink::Ack(a)) if a.seq == last => return,
            Some(Downlink::Ack(_)) => {}
            other => panic!("expected the ack of {last}, got {other:?}"),
        }
    }
}

/// A data directory with two devices (MACs `001565aabb01` and `…02`) and `enterprises`
/// enterprises, its WAL folded into the database, the server stopped.
async fn populated(dir: &Path, enterprises: u32) {
    let mut server = TestServer::start(dir, None, "");
    let api = Api::login(&server.api()).await;
    let (_, credential) = api.enterprise("devices").await;
    for mac in ["001565aabb01", "001565aabb02"] {
        let (mut dev, _) = device(&server, &credential, mac).await;
        send_acked(&mut dev, 1..=3).await;
    }
    for i in 0..enterprises {
        api.post(
            "/api/v1/enterprises",
            serde_json::json!({ "name": format!("enterprise number {i:05} {}", "x".repeat(60)) }),
        )
        .await;
    }
    wait_for_truncated_wal(dir);
    assert!(server.terminate().success());
    // Everything in the database file, so that the damage below hits committed data.
    let conn = rusqlite::Connection::open(db(dir)).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)).unwrap();
}

/// A copy of a stopped data directory's database, mark and config.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in ["fleetpulse.db", "fleetpulse.db.mark", "test-config.toml"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

fn flip(path: &Path, offset: usize, len: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    for b in &mut bytes[offset..offset + len] {
        *b ^= 0xFF;
    }
    std::fs::write(path, bytes).unwrap();
}

fn page_size(dir: &Path) -> usize {
    let conn = rusqlite::Connection::open(db(dir)).unwrap();
    conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0)).unwrap() as usize
}

/// Asserts that `serve` refuses to start on `dir` saying the database is damaged and what to do,
/// and that `check` exits non-zero listing the damage.
fn assert_refused_as_damaged(dir: &Path, case: &str) {
    let (code, out, err) = run(&["serve"], dir, Duration::from_secs(60));
    assert_ne!(code, 0, "{case}: served a damaged database; stdout: {out}");
    assert!(!out.contains("fleetpulse listening"), "{case}: listened: {out}");
    assert!(err.contains("is damaged"), "{case}: the refusal does not say what is damaged: {err}");
    assert!(err.contains("fleetpulse repair --data-dir"), "{case}: the refusal does not say what to do: {err}");
    let (code, out, _) = run(&["check"], dir, Duration::from_secs(60));
    assert_eq!(code, 1, "{case}: check exit status; {out}");
    assert!(out.contains("DAMAGED:"), "{case}: check does not list the damage: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_database_files_are_refused_checked_and_repaired() {
    let _heavy = HEAVY.lock().await;
    let root = tempfile::tempdir().unwrap();
    let clean = root.path().join("clean");
    populated(&clean, 400).await;
    let (code, out, _) = run(&["check"], &clean, Duration::from_secs(60));
    assert_eq!(code, 0, "check of a healthy directory: {out}");
    assert!(out.contains("ok: no damage found"), "{out}");

    // Two digits of a MAC address changed in one place (now a duplicate of the other device).
    let mac = root.path().join("mac");
    copy_dir(&clean, &mac);
    let mut bytes = std::fs::read(db(&mac)).unwrap();
    let at = bytes.windows(12).position(|w| w == b"001565aabb01").expect("the MAC is in the file");
    bytes[at + 10..at + 12].copy_from_slice(b"02");
    std::fs::write(db(&mac), bytes).unwrap();
    assert_refused_as_damaged(&mac, "changed MAC digits");

    // A page header flipped: the root page of the enterprises table.
    let header = root.path().join("header");
    copy_dir(&clean, &header);
    let page = page_size(&header);
    let root_page: i64 = rusqlite::Connection::open(db(&header))
        .unwrap()
        .query_row("SELECT rootpage FROM sqlite_master WHERE name = 'enterprises'", [], |r| r.get(0))
        .unwrap();
    flip(&db(&header), (root_page as usize - 1) * page, 8);
    assert_refused_as_damaged(&header, "page header");

    // Eight bytes flipped in the middle of the file: the cell pointers of the b-tree page there.
    let middle = root.path().join("middle");
    copy_dir(&clean, &middle);
    let bytes = std::fs::read(db(&middle)).unwrap();
    // A free page's content is not data, and the schema's own pages (spread through the file as
    // migrations added to it) are not rows: take the first b-tree page of a table or index from
    // the middle on with at least four cells, and flip its first four cell pointers.
    let mut mid = bytes.len() / page / 2;
    let cells = |p: usize| u16::from_be_bytes([bytes[p * page + 3], bytes[p * page + 4]]);
    let schema = schema_pages(&bytes, page);
    while ![2u8, 5, 10, 13].contains(&bytes[mid * page]) || cells(mid) < 4 || schema.contains(&mid) {
        mid += 1;
    }
    let header = if bytes[mid * page] < 10 { 12 } else { 8 };
    flip(&db(&middle), mid * page + header, 8);
    assert_refused_as_damaged(&middle, "bytes in the middle");

    // Repair salvages what is readable, keeps the damaged file aside and reports the loss; the
    // repaired directory passes the check and serves what was salvaged.
    let (code, out, err) = run(&["repair"], &middle, Duration::from_secs(60));
    assert_eq!(code, 0, "repair: {out} {err}");
    assert!(out.contains("repaired:") && out.contains("rows salvaged"), "{out}");
    assert!(out.contains("lost"), "{out}");
    let aside = std::fs::read_dir(&middle)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("fleetpulse.db.damaged-"));
    assert!(aside, "the damaged file is kept aside");
    let (code, out, _) = run(&["check"], &middle, Duration::from_secs(60));
    assert_eq!(code, 0, "check after repair: {out}");
    let server = TestServer::start(&middle, None, "");
    let api = Api::login(&server.api()).await;
    let listed = api.get("/api/v1/enterprises?limit=1000").await;
    let salvaged = listed["items"].as_array().expect("items").len();
    assert!(salvaged > 0 && salvaged <= 401, "{salvaged} enterprises after repair");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_cut_in_half_after_acknowledged_writes_refuses_to_start_saying_data_was_lost() {
    let _heavy = HEAVY.lock().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let mut server = TestServer::start(&dir, None, "");
    let api = Api::login(&server.api()).await;
    let (_, credential) = api.enterprise("wal").await;
    let (mut dev, _) = device(&server, &credential, "001565ccdd01").await;
    // Acknowledged writes, then a SIGKILL before the idle checkpoint: they live in the WAL only.
    send_acked(&mut dev, 1..=50).await;
    for i in 0..40 {
        api.post("/api/v1/enterprises", serde_json::json!({ "name": format!("acknowledged {i}") })).await;
    }
    server.kill9();
    let wal = dir.join("fleetpulse.db-wal");
    let len = std::fs::metadata(&wal).unwrap().len();
    assert!(len > 0, "the acknowledged writes are in the WAL");
    std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(len / 2).unwrap();

    let (code, out, err) = run(&["serve"], &dir, Duration::from_secs(60));
    assert_ne!(code, 0, "served after losing acknowledged data; stdout: {out}");
    assert!(err.contains("acknowledged data was lost"), "{err}");
    assert!(err.contains("commits and about"), "the refusal says how much: {err}");
    assert!(err.contains("--accept-loss") && err.contains("fleetpulse repair"), "the refusal says what to do: {err}");
    let (code, out, _) = run(&["check"], &dir, Duration::from_secs(60));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("acknowledged data was lost"), "{out}");

    // Accepting the loss explicitly starts the server; the next start is in step again.
    let (code, out, err) = run(&["repair"], &dir, Duration::from_secs(60));
    assert_eq!(code, 0, "repair: {out} {err}");
    assert!(out.contains("repaired:"), "{out}");
    let server = TestServer::start(&dir, None, "");
    let api = Api::login(&server.api()).await;
    let kept = api.get("/api/v1/enterprises?limit=1000").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"].as_str().unwrap().starts_with("acknowledged "))
        .count();
    assert!(kept < 40, "the loss was real ({kept} of 40 kept) and is now accepted");
}

/// A tmpfs volume mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output();
        match out {
            Ok(o) if o.status.success() => Tmpfs(dir.to_owned()),
            Ok(o) => panic!(
                "this test must mount a tmpfs volume (run it as root): mount failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("this test must mount a tmpfs volume (run it as root): cannot run mount: {e}"),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the volume holding `dir` until it is full.
fn fill(path: &Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5Au8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_keeps_reads_and_recovers_by_itself() {
    let _heavy = HEAVY.lock().await;
    let root = tempfile::tempdir().unwrap();
    let volume = Tmpfs::mount(&root.path().join("vol"), "30m");
    let dir = volume.0.join("data");
    let mut server = TestServer::start(&dir, None, "");
    let api = Api::login(&server.api()).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let (enterprise, credential) = api.enterprise("disk").await;
    let (mut dev, _) = device(&server, &credential, "001565eeff01").await;
    let mut acked = 0;
    for cycle in 0..2u64 {
        send_acked(&mut dev, acked + 1..=acked + 20).await;
        acked += 20;
        wait_for_truncated_wal(&dir);
        let filler = volume.0.join(format!("filler-{cycle}"));
        fill(&filler);

        // A write answers 503 storage_unavailable (not a hang: the client gives up after 20 s).
        let resp = http
            .post(format!("{}/api/v1/enterprises", api.base))
            .bearer_auth(&api.token)
            .json(&serde_json::json!({ "name": format!("on a full disk {cycle}") }))
            .send()
            .await
            .expect("a write on a full disk is answered");
        assert_eq!(resp.status(), 503);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
        let ready = http.get(format!("{}/readyz", api.base)).send().await.unwrap();
        assert_eq!(ready.status(), 503, "/readyz while the store cannot write");
        // Reads keep working, the failure is counted, and a frame is not acknowledged.
        let read = http
            .get(format!("{}/api/v1/enterprises/{enterprise}", api.base))
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
        let metrics = api.metrics().await;
        assert!(metric(&metrics, "fleetpulse_store_write_unavailable_total") >= 1.0, "counted");
        assert_eq!(metric(&metrics, "fleetpulse_store_writable"), 0.0);
        dev.send(&[report(acked + 1)]).await;
        loop {
            match dev.next().await {
                Some(Downlink::Ack(a)) => panic!("acknowledged {} on a full disk", a.seq),
                Some(_) => {}
                None => break, // the session is closed; the device resends after reconnecting
            }
        }

        // Space returns: the store finds out by itself, writes and readiness come back.
        std::fs::remove_file(&filler).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{}/readyz", api.base)).send().await.unwrap();
            if ready.status() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "/readyz did not come back after space returned");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        api.post("/api/v1/enterprises", serde_json::json!({ "name": format!("after the full disk {cycle}") })).await;
        let (again, last_seq) = device(&server, &credential, "001565eeff01").await;
        assert_eq!(last_seq, acked, "every acknowledged frame is stored, the unacknowledged one is not");
        dev = again;
    }
    send_acked(&mut dev, acked + 1..=acked + 1).await;
    acked += 1;

    // Nothing acknowledged is lost across a restart either.
    drop(dev);
    assert!(server.terminate().success());
    let server = TestServer::start(&dir, None, "");
    let (_, last_seq) = device(&server, &credential, "001565eeff01").await;
    assert_eq!(last_seq, acked);
    let api = Api::login(&server.api()).await;
    let names: Vec<String> = api.get("/api/v1/enterprises?limit=100").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.iter().any(|n| n == "after the full disk 1"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("on a full disk")), "{names:?}");
}

/// The pages (0-based) of the schema table's b-tree, walked from page 1 (its root; the file
/// header takes its first 100 bytes).
fn schema_pages(bytes: &[u8], page: usize) -> std::collections::HashSet<usize> {
    let be32 = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
    let be16 = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]) as usize;
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![0usize];
    while let Some(p) = todo.pop() {
        if !seen.insert(p) {
            continue;
        }
        let header = p * page + if p == 0 { 100 } else { 0 };
        // An interior table page: each cell starts with a child's page number, and the right-most
        // child follows the header's cell count.
        if bytes[header] == 5 {
            todo.push(be32(header + 8) - 1);
            for cell in 0..be16(header + 3) {
                todo.push(be32(p * page + be16(header + 12 + 2 * cell)) - 1);
            }
        }
    }
    seen
}
