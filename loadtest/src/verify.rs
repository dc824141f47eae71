//! End-to-end verification (LT-3): what the server stored against what it acknowledged.
//!
//! For every device of the run, each acknowledged sequence number of a persisted kind must lie in
//! one of the stored ranges (otherwise it is *missing*), and the stored row count must equal the
//! number of distinct stored sequence numbers (the excess is *duplicated*). Frames that were never
//! acknowledged are not expected in the store.

use std::collections::HashMap;

use fleetpulse_proto::{DeviceId, Mac};

use crate::api::StoredSequences;
use crate::report::Verified;

/// What one device of the run had acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedDevice {
    /// The device's MAC.
    pub mac: Mac,
    /// Its id, if a `Welcome` told it.
    pub device_id: Option<DeviceId>,
    /// Acknowledged sequence numbers of persisted kinds.
    pub acked_persisted: SeqRuns,
}

/// Ascending sequence numbers held as inclusive runs `(first, last)`: a device's acknowledged
/// frames of persisted kinds. It grows with the gaps between runs (heartbeats, rejected frames),
/// not with the frames: a device sending for hours keeps 16 bytes per heartbeat, not 8 per frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqRuns {
    runs: Vec<(u64, u64)>,
}

impl SeqRuns {
    /// Adds `seq`, which must be above every number added so far (a lower one is ignored).
    pub fn push(&mut self, seq: u64) {
        match self.runs.last_mut() {
            Some((_, last)) if *last >= seq => debug_assert!(false, "{seq} added after {last}"),
            Some((_, last)) if *last + 1 == seq => *last = seq,
            _ => self.runs.push((seq, seq)),
        }
    }

    /// How many numbers were added.
    pub fn len(&self) -> u64 {
        distinct_in_ranges(&self.runs)
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The runs, ascending and apart (each starts at least two above the last one's end).
    pub fn runs(&self) -> &[(u64, u64)] {
        &self.runs
    }

    /// The numbers, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs.iter().flat_map(|&(first, last)| first..=last)
    }
}

impl FromIterator<u64> for SeqRuns {
    fn from_iter<I: IntoIterator<Item = u64>>(seqs: I) -> Self {
        let mut runs = SeqRuns::default();
        for seq in seqs {
            runs.push(seq);
        }
        runs
    }
}

/// Number of distinct sequence numbers in inclusive `[first, last]` ranges that are sorted and
/// do not overlap (as the API returns them). A range with `first > last` counts as empty.
pub fn distinct_in_ranges(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|&(first, last)| if first > last { 0 } else { last - first + 1 }).sum()
}

/// How many of the `acked` sequence numbers lie in none of the sorted, non-overlapping stored
/// `ranges`, counted run against range without expanding either. A range with `first > last` is
/// skipped.
pub fn count_missing(acked: &SeqRuns, ranges: &[(u64, u64)]) -> u64 {
    let ranges: Vec<(u64, u64)> = ranges.iter().copied().filter(|&(first, last)| first <= last).collect();
    let mut next = 0;
    let mut found = 0;
    for &(first, last) in acked.runs() {
        // Ranges that end before this run end before every later run too.
        while ranges.get(next).is_some_and(|&(_, end)| end < first) {
            next += 1;
        }
        // The ranges overlapping this run; the last of them may overlap the next run as well.
        for &(start, end) in ranges[next..].iter().take_while(|&&(start, _)| start <= last) {
            // Stored ranges out of order or overlapping (a server's mistake) must not underflow.
            if let Some(span) = end.min(last).checked_sub(start.max(first)) {
                found += span.saturating_add(1);
            }
        }
    }
    acked.len().saturating_sub(found)
}

/// Compares the devices of a run with the stored sequences of their enterprise.
///
/// Stored entries are matched by device id, else by MAC; entries of devices that are not part of
/// the run (other runs against the same enterprise) are ignored. `stored` and `duplicated` add up
/// the matched entries; a device with acknowledged frames and no entry misses all of them.
pub fn verify(devices: &[AckedDevice], stored: &[StoredSequences]) -> Verified {
    let by_id: HashMap<DeviceId, &StoredSequences> = stored.iter().map(|s| (s.device_id, s)).collect();
    let by_mac: HashMap<&str, &StoredSequences> = stored.iter().filter_map(|s| Some((s.mac.as_deref()?, s))).collect();
    let mut verified = Verified::default();
    for device in devices {
        let entry = device.device_id.and_then(|id| by_id.get(&id)).or_else(|| by_mac.get(device.mac.as_str()));
        match entry {
            Some(entry) => {
                verified.stored += entry.rows;
                verified.duplicated += entry.rows.saturating_sub(distinct_in_ranges(&entry.ranges));
                verified.missing += count_missing(&device.acked_persisted, &entry.ranges);
            }
            None => verified.missing += device.acked_persisted.len(),
        }
    }
    verified
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, mac: Option<&str>, rows: u64, ranges: &[(u64, u64)]) -> StoredSequences {
        StoredSequences {
            device_id: DeviceId(id),
            mac: mac.map(str::to_owned),
            serial: None,
            rows,
            ranges: ranges.to_vec(),
        }
    }

    fn device(mac: &str, id: Option<u64>, acked: &[u64]) -> AckedDevice {
        AckedDevice {
            mac: Mac::parse(mac).expect("valid"),
            device_id: id.map(DeviceId),
            acked_persisted: acked.iter().copied().collect(),
        }
    }

    fn runs(seqs: &[u64]) -> SeqRuns {
        seqs.iter().copied().collect()
    }

    #[test]
    fn range_membership() {
        let ranges = [(1, 3), (5, 5), (8, 10)];
        assert_eq!(count_missing(&runs(&[1, 2, 3, 5, 8, 9, 10]), &ranges), 0);
        assert_eq!(count_missing(&runs(&[4, 6, 7, 11]), &ranges), 4);
        assert_eq!(count_missing(&runs(&[0, 1, 4, 5, 6, 10, 12]), &ranges), 4);
        assert_eq!(count_missing(&runs(&[1, 2]), &[]), 2);
        assert_eq!(count_missing(&runs(&[]), &ranges), 0);
        assert_eq!(count_missing(&runs(&[2]), &[(3, 1), (2, 2)]), 0, "an inverted range is skipped");
        assert_eq!(count_missing(&runs(&[u64::MAX]), &[(1, u64::MAX)]), 0);
    }

    #[test]
    fn runs_against_ranges_that_straddle_them() {
        // One stored range covers the end of a run and the start of the next.
        assert_eq!(count_missing(&runs(&[1, 2, 3, 5, 6, 7]), &[(2, 6)]), 2);
        // One run spans several stored ranges.
        assert_eq!(count_missing(&runs(&(1..=20).collect::<Vec<_>>()), &[(2, 3), (5, 5), (19, 30)]), 15);
        // Every number checked one by one gives the same count.
        let acked = runs(&[1, 2, 4, 5, 6, 9, 10, 11, 12, 15]);
        let ranges = [(0, 1), (3, 4), (6, 10), (12, 12), (14, 20)];
        let one_by_one = acked.iter().filter(|&seq| !ranges.iter().any(|&(f, l)| f <= seq && seq <= l)).count();
        assert_eq!(count_missing(&acked, &ranges), one_by_one as u64);
        // Ranges out of order or overlapping are a server's mistake: counted without a panic.
        assert_eq!(count_missing(&runs(&[1, 2, 3]), &[(5, 9), (1, 3)]), 3);
        assert_eq!(count_missing(&runs(&[1, 2, 3]), &[(1, 3), (1, 3)]), 0);
    }

    #[test]
    fn runs_grow_with_gaps_not_numbers() {
        let mut acked = SeqRuns::default();
        for seq in (1..=100_000).filter(|seq| seq % 30 != 0) {
            acked.push(seq);
        }
        assert_eq!(acked.len(), 100_000 - 3_333);
        assert_eq!(acked.runs().len(), 3_334, "one run between each two skipped numbers");
        assert_eq!(acked.runs()[..2], [(1, 29), (31, 59)]);
        assert_eq!(acked.iter().nth(29), Some(31));
    }

    #[test]
    fn distinct_counts_without_expanding() {
        assert_eq!(distinct_in_ranges(&[(1, 3), (5, 5), (8, 10)]), 7);
        assert_eq!(distinct_in_ranges(&[(1, 1_000_000_000_000)]), 1_000_000_000_000);
        assert_eq!(distinct_in_ranges(&[(4, 2)]), 0);
        assert_eq!(distinct_in_ranges(&[]), 0);
    }

    #[test]
    fn verification_adds_up_matched_devices_only() {
        let stored = [
            // Device 1: everything acked is stored, once each, plus an unacked 4 (fine).
            entry(1, Some("abcdef000000"), 4, &[(1, 4)]),
            // Device 2: seq 3 lost, seq 1 stored twice.
            entry(2, Some("abcdef000001"), 4, &[(1, 2), (4, 4)]),
            // Found by MAC only.
            entry(3, Some("abcdef000002"), 1, &[(1, 1)]),
            // Another run's device: ignored.
            entry(99, Some("123456000000"), 50, &[(1, 10)]),
        ];
        let devices = [
            device("abcdef000000", Some(1), &[1, 2, 3]),
            device("abcdef000001", Some(2), &[1, 2, 3, 4]),
            device("abcdef000002", None, &[1]),
            // Acked two frames and is not in the store at all.
            device("abcdef000003", Some(4), &[1, 2]),
        ];
        assert_eq!(verify(&devices, &stored), Verified { stored: 9, missing: 3, duplicated: 1 });
    }
}
