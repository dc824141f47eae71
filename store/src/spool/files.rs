//! The spool's files: segment naming, positional reads, the ack cursor, the directory lock, and
//! recovery of the segments on open.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{self, HEADER_LEN, Header};

/// Name of the ack cursor file.
const CURSOR: &str = "cursor";
/// Name of the cursor file while it is being replaced.
const CURSOR_TMP: &str = "cursor.tmp";
/// Name of the file locked while a spool has the directory open.
const LOCK: &str = "lock";
/// Size of the cursor file: the acked id and its CRC.
const CURSOR_LEN: usize = 12;

/// One segment file as the spool knows it: only its durable, valid bytes.
#[derive(Debug)]
pub(super) struct Segment {
    /// Id in the file name: no record in it has a lower id, every record in earlier segments has.
    pub first_id: u64,
    /// Path of the file.
    pub path: PathBuf,
    /// Read handle (positional reads only); keeps working after the file is deleted.
    pub file: Arc<File>,
    /// Durable length: readers never look past it.
    pub len: u64,
    /// Corrupt regions found on open, sorted, each ending where a valid record starts.
    pub holes: Arc<[Range<u64>]>,
}

/// The path of the segment whose first record is `first_id`.
pub(super) fn segment_path(dir: &Path, first_id: u64) -> PathBuf {
    dir.join(format!("spool-{first_id:020}.seg"))
}

/// The first id of a segment file name, if it is one.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("spool-")?.strip_suffix(".seg")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Reads exactly `buf.len()` bytes at `offset`, without moving any file cursor that matters.
pub(super) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            match std::os::windows::fs::FileExt::seek_read(file, &mut buf[done..], offset + done as u64) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Where the next record starts if `offset` is the start of a corrupt region.
pub(super) fn skip_holes(holes: &[Range<u64>], offset: u64) -> u64 {
    match holes.binary_search_by_key(&offset, |h| h.start) {
        Ok(i) => holes[i].end,
        Err(_) => offset,
    }
}

/// Reads and checks the header of the record at `offset`, which the spool knows to be a record
/// boundary inside the segment's durable bytes. The whole record must lie inside them too, which
/// bounds the payload length before anyone allocates for it.
pub(super) fn read_header(file: &File, segment_len: u64, offset: u64) -> io::Result<Header> {
    let invalid = |what: &str| {
        io::Error::new(io::ErrorKind::InvalidData, format!("spool segment changed under the spool: {what} at {offset}"))
    };
    if offset.saturating_add(HEADER_LEN as u64) > segment_len {
        return Err(invalid("header past the end"));
    }
    let mut bytes = [0; HEADER_LEN];
    read_exact_at(file, &mut bytes, offset)?;
    let header = Header::parse(&bytes).map_err(|_| invalid("bad magic"))?;
    if offset + header.record_len() > segment_len {
        return Err(invalid("record past the end"));
    }
    Ok(header)
}

/// Makes renames, creations and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Persists the ack cursor atomically: write a temporary file, fsync it, rename it over the
/// cursor, fsync the directory.
pub(super) fn write_cursor(dir: &Path, acked: u64, fsync: bool) -> io::Result<()> {
    let mut bytes = [0; CURSOR_LEN];
    bytes[..8].copy_from_slice(&acked.to_le_bytes());
    bytes[8..].copy_from_slice(&crc32fast::hash(&acked.to_le_bytes()).to_le_bytes());
    let tmp = dir.join(CURSOR_TMP);
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    if fsync {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&tmp, dir.join(CURSOR))?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The persisted ack cursor: 0 if there is none. An unreadable cursor is logged and taken as 0:
/// every record still on disk is delivered again (at least once) rather than lost.
fn read_cursor(dir: &Path) -> io::Result<u64> {
    let bytes = match fs::read(dir.join(CURSOR)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let parsed = parse_cursor(&bytes);
    match parsed {
        Some(acked) => Ok(acked),
        None => {
            tracing::error!(
                message = "The spool's ack cursor is corrupt; every record on disk will be delivered again.",
                dir = %dir.display(),
                len = bytes.len(),
            );
            Ok(0)
        }
    }
}

/// The acked id in a cursor file's bytes, if they are intact.
fn parse_cursor(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != CURSOR_LEN {
        return None;
    }
    let (id, crc) = bytes.split_first_chunk::<8>()?;
    let crc: [u8; 4] = crc.try_into().ok()?;
    (crc32fast::hash(id) == u32::from_le_bytes(crc)).then_some(u64::from_le_bytes(*id))
}

/// Takes an exclusive lock on the directory, held as long as the returned file is open, so two
/// spools (in one process or two) never write the same segments.
pub(super) fn lock_dir(dir: &Path) -> io::Result<File> {
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("spool directory {} is in use by another spool", dir.display()),
        )),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// What recovery found.
#[derive(Debug)]
pub(super) struct Recovered {
    /// Segments kept, oldest first: from the one holding the first un-acked record (or the last
    /// one, if every record is acked) to the newest.
    pub segments: VecDeque<Segment>,
    /// The persisted ack cursor: every id up to it is acked.
    pub cursor: u64,
    /// Offset of the first un-acked record in the first kept segment (its length if none).
    pub head_offset: u64,
    /// Id of the first un-acked record.
    pub head_id: Option<u64>,
    /// The highest valid record id on disk (0 if none).
    pub last_id: u64,
    /// The highest first id in any segment file name seen, kept or not.
    pub max_segment_name: u64,
    /// Valid un-acked records.
    pub pending_records: u64,
    /// Their bytes on disk.
    pub pending_bytes: u64,
    /// Corrupt regions skipped between valid records.
    pub corrupt: u64,
    /// Torn or corrupt tails cut off (including segments without any valid record).
    pub torn: u64,
}

/// A scanned segment, before deciding whether to keep it.
struct Scanned {
    first_id: u64,
    path: PathBuf,
    len: u64,
    holes: Vec<Range<u64>>,
    /// Offset and id of its first un-acked record.
    head: Option<(u64, u64)>,
}

/// Scans every segment in `dir` in order of first id: keeps the valid records, cuts torn tails,
/// counts and logs corrupt regions, deletes segments with no valid record and segments whose
/// records are all acked (except the newest).
///
/// Each segment is read whole: memory is bounded by the largest segment, which is at most
/// `segment_bytes` or a single record.
pub(super) fn recover(dir: &Path, fsync: bool) -> io::Result<Recovered> {
    let _ = fs::remove_file(dir.join(CURSOR_TMP));
    let cursor = read_cursor(dir)?;
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(first_id) = entry.file_name().to_str().and_then(parse_segment_name) {
            names.push((first_id, entry.path()));
        }
    }
    names.sort();

    let mut rec = Recovered {
        segments: VecDeque::new(),
        cursor,
        head_offset: 0,
        head_id: None,
        last_id: 0,
        max_segment_name: names.last().map_or(0, |(first_id, _)| *first_id),
        pending_records: 0,
        pending_bytes: 0,
        corrupt: 0,
        torn: 0,
    };
    let mut scanned = Vec::new();
    let mut dir_changed = false;
    for (first_id, path) in names {
        let buf = fs::read(&path)?;
        let mut head = None;
        let mut pending = (0u64, 0u64);
        let summary = format::scan(&buf, rec.last_id, |id, offset, len| {
            if id > cursor {
                head.get_or_insert((offset as u64, id));
                pending.0 += 1;
                pending.1 += len as u64;
            }
        });
        for hole in &summary.holes {
            tracing::warn!(
                message = "Skipping a corrupt spool record.",
                segment = %path.display(),
                offset = hole.start,
                len = hole.end - hole.start,
            );
        }
        rec.corrupt += summary.holes.len() as u64;
        if summary.valid_len < buf.len() {
            rec.torn += 1;
            tracing::warn!(
                message = "Cutting a torn or corrupt tail off a spool segment.",
                segment = %path.display(),
                valid_len = summary.valid_len,
                cut = buf.len() - summary.valid_len,
            );
        }
        let Some(last_id) = summary.last_id else {
            fs::remove_file(&path)?;
            dir_changed = true;
            continue;
        };
        if summary.valid_len < buf.len() {
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(summary.valid_len as u64)?;
            if fsync {
                file.sync_all()?;
            }
        }
        rec.last_id = last_id;
        rec.pending_records += pending.0;
        rec.pending_bytes += pending.1;
        let holes = summary.holes.iter().map(|h| h.start as u64..h.end as u64).collect();
        scanned.push(Scanned { first_id, path, len: summary.valid_len as u64, holes, head });
    }

    // Records are in id order across segments, so the fully acked segments come first.
    let keep_from = scanned.iter().position(|s| s.head.is_some()).unwrap_or(scanned.len().saturating_sub(1));
    for acked in scanned.drain(..keep_from) {
        fs::remove_file(&acked.path)?;
        dir_changed = true;
    }
    if let Some(front) = scanned.first() {
        (rec.head_offset, rec.head_id) = match front.head {
            Some((offset, id)) => (offset, Some(id)),
            None => (front.len, None),
        };
    }
    for s in scanned {
        let file = Arc::new(File::open(&s.path)?);
        rec.segments.push_back(Segment { first_id: s.first_id, path: s.path, file, len: s.len, holes: s.holes.into() });
    }
    if dir_changed && fsync {
        sync_dir(dir)?;
    }
    Ok(rec)
}

/// What [`check`] found in a spool directory, without changing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolCheck {
    /// Segment files.
    pub segments: u64,
    /// Valid records (acked or not).
    pub records: u64,
    /// Corrupt regions between valid records (each skipped, and counted, on open).
    pub corrupt: u64,
    /// Segments with a torn or corrupt tail (cut off on open).
    pub torn: u64,
}

/// Scans every segment of the spool in `dir` with the same codec as [`recover`], read-only
/// (`fleetpulse check`).
pub fn check(dir: &Path) -> io::Result<SpoolCheck> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(first_id) = entry.file_name().to_str().and_then(parse_segment_name) {
            names.push((first_id, entry.path()));
        }
    }
    names.sort();
    let mut found = SpoolCheck::default();
    let mut last_id = 0;
    for (_, path) in names {
        let buf = fs::read(&path)?;
        let mut records = 0u64;
        let summary = format::scan(&buf, last_id, |_, _, _| records += 1);
        found.segments += 1;
        found.records += records;
        found.corrupt += summary.holes.len() as u64;
        found.torn += u64::from(summary.valid_len < buf.len());
        last_id = summary.last_id.unwrap_or(last_id);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let dir = Path::new("/x");
        let path = segment_path(dir, 42);
        assert_eq!(path, Path::new("/x/spool-00000000000000000042.seg"));
        assert_eq!(parse_segment_name("spool-00000000000000000042.seg"), Some(42));
        assert_eq!(parse_segment_name("spool-7.seg"), Some(7));
        for bad in ["spool-.seg", "spool-+1.seg", "spool-1.seg.tmp", "cursor", "spool-99999999999999999999999.seg"] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn cursor_round_trips_and_tolerates_corruption() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_cursor(dir.path()).unwrap(), 0);
        write_cursor(dir.path(), 1234, true).unwrap();
        assert_eq!(read_cursor(dir.path()).unwrap(), 1234);
        assert!(!dir.path().join(CURSOR_TMP).exists());
        let mut bytes = fs::read(dir.path().join(CURSOR)).unwrap();
        bytes[0] ^= 1;
        fs::write(dir.path().join(CURSOR), bytes).unwrap();
        assert_eq!(read_cursor(dir.path()).unwrap(), 0);
    }

    #[test]
    fn holes_are_skipped_only_at_their_start() {
        let holes = [10..20, 40..45];
        assert_eq!(skip_holes(&holes, 10), 20);
        assert_eq!(skip_holes(&holes, 40), 45);
        assert_eq!(skip_holes(&holes, 0), 0);
        assert_eq!(skip_holes(&holes, 20), 20);
    }
}
