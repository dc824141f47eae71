//! Tests of the spool on real files: recovery, acks, rotation, backpressure, and a model check.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::timeout;

use super::*;

const SHORT: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(10);

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig { dir: dir.to_path_buf(), max_bytes: 1 << 20, segment_bytes: 1 << 16, fsync: true }
}

fn open(config: &SpoolConfig) -> Spool {
    Spool::open(config.clone()).unwrap()
}

/// Segment files in the directory, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

fn first_id_of(path: &Path) -> u64 {
    let name = path.file_name().unwrap().to_str().unwrap();
    name.trim_start_matches("spool-").trim_end_matches(".seg").parse().unwrap()
}

fn payload(tag: u64, len: usize) -> Vec<u8> {
    // Never 0xF5, so no payload holds a false magic.
    (0..len).map(|i| b'a' + ((tag as usize * 7 + i) % 26) as u8).collect()
}

async fn append_all(spool: &Spool, records: &[&[u8]]) -> Vec<RecordId> {
    let mut ids = Vec::new();
    for r in records {
        ids.push(timeout(LONG, spool.append(r.to_vec())).await.unwrap().unwrap());
    }
    ids
}

/// Every pending record, read in one call (so nothing extra can hide) and checked against a
/// chunked read from the oldest.
async fn pending(spool: &Spool) -> Vec<(RecordId, Vec<u8>)> {
    let n = spool.stats().pending_records;
    if n == 0 {
        assert_eq!(spool.first_unacked(), None);
        assert!(timeout(Duration::from_millis(1), spool.read_after(None, 10, 10)).await.is_err());
        return Vec::new();
    }
    let all = timeout(LONG, spool.read_after(None, usize::MAX, usize::MAX)).await.unwrap().unwrap();
    let mut chunked = Vec::new();
    let mut after = None;
    while (chunked.len() as u64) < n {
        let chunk = timeout(LONG, spool.read_after(after, 3, 200)).await.unwrap().unwrap();
        assert!(!chunk.is_empty() && chunk.len() <= 3);
        after = chunk.last().map(|r| r.0);
        chunked.extend(chunk);
    }
    assert_eq!(all, chunked);
    assert_eq!(all.len() as u64, n);
    assert_eq!(spool.first_unacked(), all.first().map(|r| r.0));
    all
}

fn payloads(records: &[(RecordId, Vec<u8>)]) -> Vec<&[u8]> {
    records.iter().map(|(_, p)| p.as_slice()).collect()
}

#[tokio::test]
async fn appended_records_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let spool = open(&cfg);
    let ids = append_all(&spool, &[b"one", b"two", b"three"]).await;
    assert_eq!(ids, vec![RecordId(1), RecordId(2), RecordId(3)]);
    assert_eq!(payloads(&pending(&spool).await), vec![&b"one"[..], b"two", b"three"]);
    drop(spool);

    let spool = open(&cfg);
    let records = pending(&spool).await;
    assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), ids);
    assert_eq!(payloads(&records), vec![&b"one"[..], b"two", b"three"]);
    let stats = spool.stats();
    assert_eq!((stats.pending_records, stats.pending_bytes), (3, 3 * 20 + 3 + 3 + 5));
    assert_eq!((stats.appended_records, stats.corrupt_records, stats.torn_tails), (0, 0, 0));
}

#[tokio::test]
async fn acked_records_do_not_come_back_and_ids_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let spool = open(&cfg);
    let ids = append_all(&spool, &[b"one", b"two", b"three"]).await;
    spool.ack(ids[1]).unwrap();
    assert_eq!(spool.first_unacked(), Some(ids[2]));
    assert_eq!(spool.stats().acked_records, 2);
    // Acking again, or less, does nothing.
    spool.ack(ids[0]).unwrap();
    assert_eq!(spool.stats().acked_records, 2);
    drop(spool);

    let spool = open(&cfg);
    let records = pending(&spool).await;
    assert_eq!(records, vec![(ids[2], b"three".to_vec())]);
    let next = append_all(&spool, &[b"four"]).await;
    assert_eq!(next, vec![RecordId(4)]);
    spool.ack(RecordId(4)).unwrap();
    assert!(pending(&spool).await.is_empty());
    drop(spool);

    // Everything acked: ids still continue after the highest acked one.
    let spool = open(&cfg);
    assert!(pending(&spool).await.is_empty());
    assert_eq!(append_all(&spool, &[b"five"]).await, vec![RecordId(5)]);
}

#[tokio::test]
async fn torn_tail_is_cut_and_earlier_records_remain() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let spool = open(&cfg);
    append_all(&spool, &[b"one", b"two", b"three"]).await;
    drop(spool);
    let segment = segment_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&segment).unwrap().len();
    OpenOptions::new().write(true).open(&segment).unwrap().set_len(len - 3).unwrap();

    let spool = open(&cfg);
    assert_eq!(payloads(&pending(&spool).await), vec![&b"one"[..], b"two"]);
    let stats = spool.stats();
    assert_eq!((stats.torn_tails, stats.corrupt_records), (1, 0));
    assert_eq!(fs::metadata(&segment).unwrap().len(), 2 * 20 + 6, "the tail is cut off the file");
    // Appends continue after the cut, and a clean reopen finds nothing torn.
    let id = append_all(&spool, &[b"four"]).await[0];
    assert!(id > RecordId(2));
    drop(spool);
    let spool = open(&cfg);
    assert_eq!(payloads(&pending(&spool).await), vec![&b"one"[..], b"two", b"four"]);
    assert_eq!(spool.stats().torn_tails, 0);
}

#[tokio::test]
async fn corrupt_middle_record_is_skipped_and_counted() {
    for (what, at) in [("payload", 20 + 2), ("length", 4), ("magic", 0)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let spool = open(&cfg);
        append_all(&spool, &[b"first", b"second", b"third"]).await;
        drop(spool);
        let segment = segment_files(dir.path()).pop().unwrap();
        let mut bytes = fs::read(&segment).unwrap();
        let second = 20 + 5;
        bytes[second + at] ^= 0x40;
        fs::write(&segment, &bytes).unwrap();

        let spool = open(&cfg);
        let records = pending(&spool).await;
        assert_eq!(payloads(&records), vec![&b"first"[..], b"third"], "{what}");
        assert_eq!(records[1].0, RecordId(3), "{what}");
        assert_eq!((spool.stats().corrupt_records, spool.stats().torn_tails), (1, 0), "{what}");
        // Acks walk over the corrupt region.
        spool.ack(RecordId(3)).unwrap();
        assert!(pending(&spool).await.is_empty(), "{what}");
        assert_eq!(spool.stats().pending_bytes, 0, "{what}");
        drop(spool);
        let spool = open(&cfg);
        assert!(pending(&spool).await.is_empty(), "{what}");
    }
}

#[tokio::test]
async fn segments_rotate_and_acked_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig { segment_bytes: 100, ..config(dir.path()) };
    let spool = open(&cfg);
    // 40-byte records: two per 100-byte segment.
    let records: Vec<Vec<u8>> = (0..9).map(|i| payload(i, 20)).collect();
    let refs: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
    let ids = append_all(&spool, &refs).await;
    let files = segment_files(dir.path());
    assert_eq!(files.iter().map(|f| first_id_of(f)).collect::<Vec<_>>(), vec![1, 3, 5, 7, 9]);
    assert!(files.iter().all(|f| fs::metadata(f).unwrap().len() <= 100));
    assert_eq!(spool.stats().segments, 5);

    spool.ack(ids[4]).unwrap(); // 1..=5: segments 1 and 3 are done, 5 is half acked
    assert_eq!(segment_files(dir.path()).iter().map(|f| first_id_of(f)).collect::<Vec<_>>(), vec![5, 7, 9]);
    assert_eq!(spool.stats().segments, 3);
    assert_eq!(pending(&spool).await.iter().map(|r| r.0).collect::<Vec<_>>(), ids[5..].to_vec());
    assert_eq!(spool.stats().pending_bytes, 4 * 40);

    spool.ack(ids[8]).unwrap(); // everything: the newest segment stays for appending
    assert_eq!(segment_files(dir.path()).iter().map(|f| first_id_of(f)).collect::<Vec<_>>(), vec![9]);
    let next = append_all(&spool, &[&payload(9, 20), &payload(10, 20)]).await;
    assert_eq!(next, vec![RecordId(10), RecordId(11)]);
    // Record 10 went into segment 9, which still had room; 11 started segment 11.
    assert_eq!(segment_files(dir.path()).iter().map(|f| first_id_of(f)).collect::<Vec<_>>(), vec![9, 11]);
    spool.ack(RecordId(10)).unwrap();
    assert_eq!(segment_files(dir.path()).iter().map(|f| first_id_of(f)).collect::<Vec<_>>(), vec![11]);
    drop(spool);

    let spool = open(&cfg);
    assert_eq!(pending(&spool).await, vec![(RecordId(11), payload(10, 20))]);
}

#[tokio::test]
async fn a_record_larger_than_a_segment_gets_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig { segment_bytes: 100, ..config(dir.path()) };
    let spool = open(&cfg);
    append_all(&spool, &[b"small", &payload(1, 500), b"after"]).await;
    assert_eq!(segment_files(dir.path()).iter().map(|f| first_id_of(f)).collect::<Vec<_>>(), vec![1, 2, 3]);
    drop(spool);
    let spool = open(&cfg);
    assert_eq!(pending(&spool).await.len(), 3);
}

#[tokio::test]
async fn full_spool_makes_appends_wait_until_an_ack() {
    let dir = tempfile::tempdir().unwrap();
    // Room for three 30-byte records (10-byte payloads).
    let cfg = SpoolConfig { max_bytes: 90, ..config(dir.path()) };
    let spool = open(&cfg);
    let ids = append_all(&spool, &[&[b'x'; 10], &[b'y'; 10], &[b'z'; 10]]).await;
    let waiting = tokio::spawn({
        let spool = spool.clone();
        async move { spool.append(vec![b'w'; 10]).await }
    });
    tokio::pin!(waiting);
    assert!(timeout(SHORT, &mut waiting).await.is_err(), "the fourth append must wait");
    assert_eq!(spool.stats().pending_records, 3);

    spool.ack(ids[0]).unwrap();
    let id = timeout(LONG, &mut waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(id, RecordId(4));
    assert_eq!(spool.stats().pending_bytes, 90);
    drop(spool);

    // The bound holds across a reopen, and a lower bound is paid back before space is given.
    let spool = open(&SpoolConfig { max_bytes: 60, ..cfg });
    let next = tokio::spawn({
        let spool = spool.clone();
        async move { spool.append(vec![b'v'; 10]).await }
    });
    tokio::pin!(next);
    spool.ack(RecordId(2)).unwrap(); // frees 30 bytes of a 30-byte debt
    assert!(timeout(SHORT, &mut next).await.is_err());
    spool.ack(RecordId(3)).unwrap();
    assert_eq!(timeout(LONG, &mut next).await.unwrap().unwrap().unwrap(), RecordId(5));
}

#[tokio::test]
async fn oversized_records_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&SpoolConfig { max_bytes: 100, ..config(dir.path()) });
    assert!(matches!(spool.append(vec![0; 81]).await, Err(SpoolError::TooLarge { len: 81, max: 80 })));
    assert_eq!(spool.append(vec![0; 80]).await.unwrap(), RecordId(1));
    let too_small = SpoolConfig { max_bytes: 19, dir: dir.path().join("other"), ..config(dir.path()) };
    assert!(matches!(Spool::open(too_small), Err(SpoolError::Io(_))));
}

#[tokio::test]
async fn reads_respect_limits_and_wait_for_appends() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&config(dir.path()));
    let reader = tokio::spawn({
        let spool = spool.clone();
        async move { spool.read_after(None, 10, 10).await }
    });
    tokio::pin!(reader);
    assert!(timeout(SHORT, &mut reader).await.is_err(), "nothing to read yet");
    append_all(&spool, &[&[1; 8], &[2; 8], &[3; 8], &[4; 8]]).await;
    let first = timeout(LONG, &mut reader).await.unwrap().unwrap().unwrap();
    assert_eq!(first.iter().map(|r| r.0).collect::<Vec<_>>(), vec![RecordId(1)], "10 bytes fit one 8-byte record");

    let two = spool.read_after(Some(RecordId(1)), 2, 1000).await.unwrap();
    assert_eq!(two.iter().map(|r| r.0).collect::<Vec<_>>(), vec![RecordId(2), RecordId(3)]);
    let big = spool.read_after(Some(RecordId(3)), 0, 0).await.unwrap();
    assert_eq!(big, vec![(RecordId(4), vec![4; 8])], "at least one record, whatever the limits");
    // Reading after an id that was acked starts at the oldest un-acked record.
    spool.ack(RecordId(2)).unwrap();
    let from_acked = spool.read_after(Some(RecordId(1)), 10, 1000).await.unwrap();
    assert_eq!(from_acked.iter().map(|r| r.0).collect::<Vec<_>>(), vec![RecordId(3), RecordId(4)]);
    // Beyond the last record: waits.
    assert!(timeout(SHORT, spool.read_after(Some(RecordId(4)), 10, 1000)).await.is_err());
}

#[tokio::test]
async fn close_wakes_waiters() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&SpoolConfig { max_bytes: 40, ..config(dir.path()) });
    spool.append(vec![0; 20]).await.unwrap();
    let appender = tokio::spawn({
        let spool = spool.clone();
        async move { spool.append(vec![0; 20]).await }
    });
    let reader = tokio::spawn({
        let spool = spool.clone();
        async move { spool.read_after(Some(RecordId(1)), 1, 1).await }
    });
    tokio::time::sleep(SHORT).await;
    spool.close();
    assert!(matches!(timeout(LONG, appender).await.unwrap().unwrap(), Err(SpoolError::Closed)));
    assert!(matches!(timeout(LONG, reader).await.unwrap().unwrap(), Err(SpoolError::Closed)));
    assert!(matches!(spool.append(vec![1]).await, Err(SpoolError::Closed)));
    spool.ack(RecordId(1)).unwrap();
}

#[tokio::test]
async fn a_directory_is_used_by_one_spool_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let spool = open(&cfg);
    match Spool::open(cfg.clone()) {
        Err(SpoolError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        other => panic!("expected the directory to be locked, got {other:?}"),
    }
    drop(spool);
    open(&cfg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs_and_keep_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let spool = open(&cfg);
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let spool = spool.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..20 {
                    let id = spool.append(payload(t * 100 + i, 50)).await.unwrap();
                    ids.push((id, t * 100 + i));
                }
                ids
            })
        })
        .collect();
    let mut expected = Vec::new();
    for task in tasks {
        let ids = task.await.unwrap();
        assert!(ids.windows(2).all(|w| w[0].0 < w[1].0), "one task's appends keep their order");
        expected.extend(ids);
    }
    expected.sort();
    assert_eq!(expected.iter().map(|e| e.0).collect::<Vec<_>>(), (1..=1280).map(RecordId).collect::<Vec<_>>());
    drop(spool);
    let spool = open(&cfg);
    let records = pending(&spool).await;
    assert_eq!(records, expected.iter().map(|(id, tag)| (*id, payload(*tag, 50))).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drainer_keeps_up_with_appenders_through_a_small_spool() {
    let dir = tempfile::tempdir().unwrap();
    // Room for about 25 records, 4 per segment: appenders wait on the drainer all the time.
    let cfg = SpoolConfig { max_bytes: 2000, segment_bytes: 300, fsync: false, ..config(dir.path()) };
    let spool = open(&cfg);
    let appenders: Vec<_> = (0..8u64)
        .map(|t| {
            let spool = spool.clone();
            tokio::spawn(async move {
                let mut appended = Vec::new();
                for i in 0..100 {
                    let tag = t * 1000 + i;
                    appended.push((spool.append(payload(tag, 40 + (tag % 30) as usize)).await.unwrap(), tag));
                }
                appended
            })
        })
        .collect();
    let drainer = tokio::spawn({
        let spool = spool.clone();
        async move {
            let mut drained = Vec::new();
            let mut after = None;
            while drained.len() < 800 {
                let records = spool.read_after(after, 7, 300).await.unwrap();
                after = records.last().map(|r| r.0);
                spool.ack(after.unwrap()).unwrap();
                drained.extend(records);
            }
            drained
        }
    });
    let mut expected = Vec::new();
    for a in appenders {
        expected.extend(timeout(LONG, a).await.unwrap().unwrap());
    }
    expected.sort();
    let drained = timeout(LONG, drainer).await.unwrap().unwrap();
    let expected: Vec<_> = expected.into_iter().map(|(id, tag)| (id, payload(tag, 40 + (tag % 30) as usize))).collect();
    assert_eq!(drained, expected);
    let stats = spool.stats();
    assert_eq!((stats.pending_records, stats.pending_bytes, stats.acked_records), (0, 0, 800));
    assert_eq!(segment_files(dir.path()).len(), 1, "only the newest segment is left");
    drop(spool);
    assert!(pending(&open(&cfg)).await.is_empty());
}

// ---- Model check ----------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// Append a record with this payload length.
    Append(usize),
    /// Read every pending record (checked after every op anyway).
    ReadAll,
    /// Ack up to the k-th pending record (modulo their number).
    Ack(usize),
    /// Drop the spool and open it again.
    Reopen,
    /// Drop the spool, cut this many bytes off the newest segment, open it again.
    CorruptTail(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..120).prop_map(Op::Append),
        1 => Just(Op::ReadAll),
        2 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::Reopen),
        1 => (1u64..150).prop_map(Op::CorruptTail),
    ]
}

#[derive(Debug, Default)]
struct Model {
    /// Appended, not acked, not lost: what the spool must return.
    pending: VecDeque<(RecordId, Vec<u8>)>,
    /// Every record still in a segment file (acked ones too), in order: (id, bytes on disk).
    on_disk: Vec<(u64, u64)>,
    max_acked: u64,
}

impl Model {
    /// Cuts `n` bytes off the newest segment: exactly the records overlapping the cut are lost.
    /// Returns whether a record was cut in the middle (a torn tail).
    fn cut_tail(&mut self, dir: &Path, n: u64) -> bool {
        let Some(newest) = segment_files(dir).pop() else { return false };
        let first = first_id_of(&newest);
        let len = fs::metadata(&newest).unwrap().len();
        let in_newest: Vec<(u64, u64)> = self.on_disk.iter().copied().filter(|(id, _)| *id >= first).collect();
        assert_eq!(in_newest.iter().map(|r| r.1).sum::<u64>(), len, "the newest segment holds exactly these records");
        let keep = len.saturating_sub(n);
        OpenOptions::new().write(true).open(&newest).unwrap().set_len(keep).unwrap();
        let mut end = 0;
        let mut torn = false;
        let mut lost = Vec::new();
        for (id, size) in in_newest {
            if end + size > keep {
                torn |= end < keep;
                lost.push(id);
            }
            end += size;
        }
        self.on_disk.retain(|r| !lost.contains(&r.0));
        self.pending.retain(|r| !lost.contains(&r.0.0));
        torn
    }
}

async fn run_model(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig { dir: dir.path().to_path_buf(), max_bytes: 1 << 20, segment_bytes: 300, fsync: false };
    let mut spool = Some(open(&cfg));
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        let s = spool.as_ref().expect("the spool is open between ops");
        match op {
            Op::Append(len) => {
                let data = payload(step as u64, len);
                let id = s.append(data.clone()).await.unwrap();
                let highest = model.on_disk.last().map_or(0, |r| r.0).max(model.max_acked);
                assert!(id.0 > highest, "id {id:?} must exceed every acked id and every id on disk ({highest})");
                model.pending.push_back((id, data));
                model.on_disk.push((id.0, format::encoded_len(len)));
            }
            Op::ReadAll => {}
            Op::Ack(k) => {
                if !model.pending.is_empty() {
                    let upto = model.pending[k % model.pending.len()].0;
                    s.ack(upto).unwrap();
                    while model.pending.front().is_some_and(|r| r.0 <= upto) {
                        model.pending.pop_front();
                    }
                    model.max_acked = upto.0;
                }
            }
            Op::Reopen => {
                drop(spool.take());
                spool = Some(open(&cfg));
                let stats = spool.as_ref().map(Spool::stats).unwrap();
                assert_eq!((stats.corrupt_records, stats.torn_tails), (0, 0));
            }
            Op::CorruptTail(n) => {
                drop(spool.take());
                let torn = model.cut_tail(dir.path(), n);
                spool = Some(open(&cfg));
                let stats = spool.as_ref().map(Spool::stats).unwrap();
                assert_eq!((stats.corrupt_records, stats.torn_tails), (0, u64::from(torn)));
            }
        }
        let s = spool.as_ref().expect("the spool is open between ops");
        let records = pending(s).await;
        assert_eq!(records, Vec::from(model.pending.clone()), "after step {step}");
        let stats = s.stats();
        let bytes: u64 = model.pending.iter().map(|r| format::encoded_len(r.1.len())).sum();
        assert_eq!(stats.pending_bytes, bytes);
        assert_eq!(stats.segments, segment_files(dir.path()).len() as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn spool_matches_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run_model(ops));
    }
}
