//! The spool's record format, sans I/O: encoding, decoding, resynchronisation and segment scans.
//!
//! A record on disk is a 20-byte header followed by its payload, all integers little-endian:
//!
//! | offset | size | field                                             |
//! |--------|------|---------------------------------------------------|
//! | 0      | 4    | magic, the bytes `F5 53 50 4C` (`\xF5SPL`)        |
//! | 4      | 4    | payload length `n` (u32)                          |
//! | 8      | 8    | record id (u64)                                   |
//! | 16     | 4    | CRC-32 (IEEE, `crc32fast`) over the id bytes then the payload |
//! | 20     | n    | payload                                           |
//!
//! The magic's first byte, `0xF5`, never occurs in UTF-8 text, so a JSON payload cannot contain
//! a false magic. The length is not covered by the CRC, but a wrong length makes the CRC cover the
//! wrong bytes, so it is detected all the same (or the record runs past the end of the input).
//!
//! *Architecture invariant*: nothing here touches a file, a clock or an allocator beyond the
//! caller's buffer; every function is total (no panics on any input).

use std::ops::Range;

/// The four bytes every record starts with.
pub const MAGIC: [u8; 4] = [0xF5, b'S', b'P', b'L'];

/// Size of a record header: magic, length, id, CRC.
pub const HEADER_LEN: usize = 20;

/// The longest payload the format can carry: the length field is a u32 and a whole record must
/// also fit in a u32.
pub const MAX_PAYLOAD: usize = u32::MAX as usize - HEADER_LEN;

/// Why the bytes at the start of an input are not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// The input does not start with [`MAGIC`].
    BadMagic,
    /// The length field exceeds the maximum the caller allows.
    TooLong {
        /// The length field.
        len: u64,
        /// The caller's maximum.
        max: u64,
    },
    /// The CRC does not match the id and payload.
    BadChecksum,
}

/// A parsed record header (magic already checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The record id.
    pub id: u64,
    /// The payload length.
    pub len: u32,
    /// The CRC-32 over the id bytes and the payload.
    pub crc: u32,
}

impl Header {
    /// Parses a header; checks only the magic (the length is the caller's to bound).
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Header, Corruption> {
        let (magic, rest) = bytes.split_at(4);
        if magic != MAGIC {
            return Err(Corruption::BadMagic);
        }
        let (len, rest) = rest.split_at(4);
        let (id, crc) = rest.split_at(8);
        Ok(Header { len: le_u32(len), id: le_u64(id), crc: le_u32(crc) })
    }

    /// Size of the whole record on disk: header and payload.
    pub fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }

    /// Whether `payload` is the one this header was written for (length and CRC).
    pub fn matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize && checksum(self.id, payload) == self.crc
    }
}

/// The result of decoding the start of an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, valid record.
    Record {
        /// The record id.
        id: u64,
        /// The payload, borrowed from the input.
        payload: &'a [u8],
        /// Bytes the record occupies (header and payload): the next record starts there.
        len: usize,
    },
    /// The input ends inside a record that looks valid so far: more bytes are needed, or, if
    /// the input is the whole file, this is a torn tail (or a corrupt length, see [`scan`]).
    Truncated {
        /// Bytes needed from the start of the input to know more.
        needed: usize,
    },
    /// The start of the input is not a valid record.
    Corrupt {
        /// What is wrong.
        reason: Corruption,
        /// Bytes to skip to reach the next possible record start (the next magic, or a prefix of
        /// it at the very end, or the end of the input). Always at least 1.
        skip: usize,
    },
}

/// CRC-32 over the id bytes then the payload.
pub fn checksum(id: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&id.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Bytes a record with this payload length occupies on disk.
pub fn encoded_len(payload_len: usize) -> u64 {
    HEADER_LEN as u64 + payload_len as u64
}

/// The payload is longer than [`MAX_PAYLOAD`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadTooLong;

/// Appends the encoded record to `out`.
pub fn encode(id: u64, payload: &[u8], out: &mut Vec<u8>) -> Result<(), PayloadTooLong> {
    if payload.len() > MAX_PAYLOAD {
        return Err(PayloadTooLong);
    }
    let len = u32::try_from(payload.len()).map_err(|_| PayloadTooLong)?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&checksum(id, payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Decodes the record at the start of `buf`; lengths above `max_len` are [`Corruption::TooLong`]
/// (checked before the payload is looked at).
pub fn decode(buf: &[u8], max_len: usize) -> Decoded<'_> {
    let magic_part = buf.len().min(MAGIC.len());
    if buf[..magic_part] != MAGIC[..magic_part] {
        return Decoded::Corrupt { reason: Corruption::BadMagic, skip: resync_offset(buf) };
    }
    let Some(header_bytes) = buf.first_chunk::<HEADER_LEN>() else {
        return Decoded::Truncated { needed: HEADER_LEN };
    };
    let header = match Header::parse(header_bytes) {
        Ok(header) => header,
        Err(reason) => return Decoded::Corrupt { reason, skip: resync_offset(buf) },
    };
    let max = max_len.min(MAX_PAYLOAD);
    if header.len as usize > max {
        return Decoded::Corrupt {
            reason: Corruption::TooLong { len: header.len.into(), max: max as u64 },
            skip: resync_offset(buf),
        };
    }
    let total = HEADER_LEN + header.len as usize;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Decoded::Truncated { needed: total };
    };
    if !header.matches(payload) {
        return Decoded::Corrupt { reason: Corruption::BadChecksum, skip: resync_offset(buf) };
    }
    Decoded::Record { id: header.id, payload, len: total }
}

/// Offset of the next possible record start after the first byte of `buf`: the next full magic,
/// or a prefix of the magic that reaches the end of `buf`, or `buf.len()`. At least 1 unless
/// `buf` is empty.
pub fn resync_offset(buf: &[u8]) -> usize {
    let mut from = 1;
    while from < buf.len() {
        let Some(found) = buf[from..].iter().position(|&b| b == MAGIC[0]) else {
            return buf.len();
        };
        let at = from + found;
        let rest = &buf[at..];
        let n = rest.len().min(MAGIC.len());
        if rest[..n] == MAGIC[..n] {
            return at;
        }
        from = at + 1;
    }
    buf.len()
}

/// What [`scan`] found in a segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanSummary {
    /// Corrupt regions between (or before) valid records, in order; each is one corrupt record
    /// as far as anyone can tell.
    pub holes: Vec<Range<usize>>,
    /// End of the last valid record. Bytes after it (a torn or corrupt tail) are garbage.
    pub valid_len: usize,
    /// Number of valid records.
    pub records: u64,
    /// Id of the last valid record.
    pub last_id: Option<u64>,
}

/// Scans a whole segment: calls `on_record(id, offset, len)` for every valid record in order,
/// and reports the corrupt regions and the torn tail.
///
/// A record is valid when it decodes and its id is above every id before it (above `after_id`
/// for the first). Where the bytes are not a valid record, the scan resynchronises on the next
/// magic from which a valid record decodes: the region skipped is a hole. A region with no valid
/// record after it is the tail, cut at `valid_len`; this also covers a corrupt length field that
/// points past the end of the segment.
pub fn scan(buf: &[u8], after_id: u64, mut on_record: impl FnMut(u64, usize, usize)) -> ScanSummary {
    let mut summary = ScanSummary::default();
    let mut prev = after_id;
    let mut pos = 0;
    while pos < buf.len() {
        if let Some((id, len)) = valid_at(buf, pos, prev) {
            on_record(id, pos, len);
            prev = id;
            pos += len;
            summary.valid_len = pos;
            summary.records += 1;
            summary.last_id = Some(id);
            continue;
        }
        let mut next = pos + resync_offset(&buf[pos..]);
        let found = loop {
            if next >= buf.len() {
                break None;
            }
            if valid_at(buf, next, prev).is_some() {
                break Some(next);
            }
            next += resync_offset(&buf[next..]);
        };
        match found {
            Some(next) => {
                summary.holes.push(pos..next);
                pos = next;
            }
            None => break,
        }
    }
    summary
}

/// The id and length of a valid record at `pos` whose id is above `prev`.
fn valid_at(buf: &[u8], pos: usize, prev: u64) -> Option<(u64, usize)> {
    match decode(buf.get(pos..)?, MAX_PAYLOAD) {
        Decoded::Record { id, len, .. } if id > prev => Some((id, len)),
        _ => None,
    }
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(bytes);
    u32::from_le_bytes(a)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(bytes);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(id, payload, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip() {
        for payload in [&b""[..], b"x", b"{\"status\":[]}", &[0xF5; 300]] {
            let bytes = record(42, payload);
            assert_eq!(bytes.len() as u64, encoded_len(payload.len()));
            assert_eq!(decode(&bytes, 1 << 20), Decoded::Record { id: 42, payload, len: bytes.len() });
        }
    }

    #[test]
    fn header_layout_is_stable() {
        let bytes = record(0x0102_0304_0506_0708, b"ab");
        assert_eq!(&bytes[..4], &[0xF5, b'S', b'P', b'L']);
        assert_eq!(&bytes[4..8], &[2, 0, 0, 0]);
        assert_eq!(&bytes[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[16..20], &checksum(0x0102_0304_0506_0708, b"ab").to_le_bytes());
        assert_eq!(&bytes[20..], b"ab");
    }

    #[test]
    fn truncated_input_needs_more() {
        let bytes = record(7, b"hello world");
        for cut in 0..bytes.len() {
            let needed = if cut < HEADER_LEN { HEADER_LEN } else { bytes.len() };
            assert_eq!(decode(&bytes[..cut], 1 << 20), Decoded::Truncated { needed }, "cut at {cut}");
        }
    }

    #[test]
    fn flipped_payload_bit_is_corrupt() {
        let mut bytes = record(7, b"hello world");
        bytes[HEADER_LEN + 3] ^= 0x10;
        assert!(matches!(decode(&bytes, 1 << 20), Decoded::Corrupt { reason: Corruption::BadChecksum, .. }));
        let mut bytes = record(7, b"hello world");
        bytes[9] ^= 0x01; // the id
        assert!(matches!(decode(&bytes, 1 << 20), Decoded::Corrupt { reason: Corruption::BadChecksum, .. }));
    }

    #[test]
    fn length_is_checked_before_the_payload() {
        let bytes = record(7, &[b'a'; 100]);
        assert_eq!(
            decode(&bytes, 99),
            Decoded::Corrupt { reason: Corruption::TooLong { len: 100, max: 99 }, skip: bytes.len() }
        );
        // A huge length in a short input is rejected, not waited for.
        let mut bytes = record(7, b"abc");
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&bytes, 1 << 20), Decoded::Corrupt { reason: Corruption::TooLong { .. }, .. }));
    }

    #[test]
    fn garbage_before_a_record_is_skipped_by_resync() {
        let good = record(9, b"payload");
        for garbage in [&b"x"[..], b"garbage!", &[0xF5, b'S', b'P'], &[0xF5, 0xF5, b'S', b'P', b'x'], &MAGIC] {
            let mut buf = garbage.to_vec();
            buf.extend_from_slice(&good);
            let mut pos = 0;
            let mut skipped = 0;
            loop {
                match decode(&buf[pos..], 1 << 20) {
                    Decoded::Record { id, payload, .. } => {
                        assert_eq!((id, payload), (9, &b"payload"[..]));
                        break;
                    }
                    Decoded::Corrupt { skip, .. } => {
                        assert!(skip >= 1);
                        pos += skip;
                        skipped += 1;
                    }
                    // The full magic followed by another magic: its "header" runs into the record.
                    Decoded::Truncated { .. } => pos += resync_offset(&buf[pos..]),
                }
                assert!(skipped < 10 && pos < buf.len(), "no resync for {garbage:?}");
            }
            assert_eq!(pos, garbage.len());
        }
    }

    #[test]
    fn resync_offset_finds_magic_and_partial_magic() {
        assert_eq!(resync_offset(b""), 0);
        assert_eq!(resync_offset(b"a"), 1);
        assert_eq!(resync_offset(b"abc"), 3);
        assert_eq!(resync_offset(&[b'a', 0xF5, b'S', b'P', b'L', b'x']), 1);
        assert_eq!(resync_offset(&[0xF5, b'S', b'P', b'L', 0xF5, b'S']), 4);
        assert_eq!(resync_offset(&[b'a', b'b', 0xF5, b'S']), 2);
        assert_eq!(resync_offset(&[b'a', 0xF5, b'x', 0xF5]), 3);
    }

    #[test]
    fn scan_keeps_records_around_a_corrupt_one_and_cuts_the_tail() {
        let (a, mut b, c) = (record(1, b"first"), record(2, b"second"), record(3, b"third"));
        b[HEADER_LEN] ^= 0xFF;
        let mut buf = [a.clone(), b.clone(), c.clone()].concat();
        buf.extend_from_slice(&record(4, b"torn")[..10]);
        let mut seen = Vec::new();
        let summary = scan(&buf, 0, |id, offset, len| seen.push((id, offset, len)));
        assert_eq!(seen, vec![(1, 0, a.len()), (3, a.len() + b.len(), c.len())]);
        assert_eq!(summary.holes, vec![a.len()..a.len() + b.len()]);
        assert_eq!(summary.valid_len, a.len() + b.len() + c.len());
        assert_eq!((summary.records, summary.last_id), (2, Some(3)));
    }

    #[test]
    fn scan_resyncs_past_a_corrupt_length() {
        let (a, mut b, c) = (record(1, b"first"), record(2, b"second"), record(3, b"third"));
        b[4..8].copy_from_slice(&1_000_000u32.to_le_bytes()); // points past the end
        let buf = [a.clone(), b.clone(), c.clone()].concat();
        let mut ids = Vec::new();
        let summary = scan(&buf, 0, |id, _, _| ids.push(id));
        assert_eq!(ids, vec![1, 3]);
        assert_eq!(summary.holes.len(), 1);
        assert_eq!(summary.valid_len, buf.len());
    }

    #[test]
    fn scan_rejects_ids_that_do_not_increase() {
        let buf = [record(5, b"a"), record(5, b"b"), record(4, b"c"), record(6, b"d")].concat();
        let mut ids = Vec::new();
        let summary = scan(&buf, 0, |id, _, _| ids.push(id));
        assert_eq!(ids, vec![5, 6]);
        assert_eq!(summary.holes.len(), 1);
        let mut ids = Vec::new();
        scan(&buf, 5, |id, _, _| ids.push(id));
        assert_eq!(ids, vec![6]);
    }

    #[test]
    fn scan_of_garbage_finds_nothing() {
        let summary = scan(b"\xF5SPL this is not a record at all", 0, |_, _, _| panic!("no record"));
        assert_eq!(summary, ScanSummary::default());
    }
}
