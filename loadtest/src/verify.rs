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
    /// Acknowledged sequence numbers of persisted kinds, ascending.
    pub acked_persisted: Vec<u64>,
}

/// Number of distinct sequence numbers in inclusive `[first, last]` ranges that are sorted and
/// do not overlap (as the API returns them). A range with `first > last` counts as empty.
pub fn distinct_in_ranges(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|&(first, last)| if first > last { 0 } else { last - first + 1 }).sum()
}

/// How many of the ascending `acked` sequence numbers lie in none of the sorted `ranges`.
pub fn count_missing(acked: &[u64], ranges: &[(u64, u64)]) -> u64 {
    let mut ranges = ranges.iter().copied().filter(|&(first, last)| first <= last).peekable();
    let mut missing = 0;
    for &seq in acked {
        // Skip ranges that end before `seq`; `acked` ascends, so they end before every later seq too.
        while ranges.next_if(|&(_, last)| last < seq).is_some() {}
        match ranges.peek() {
            Some(&(first, _)) if first <= seq => {}
            _ => missing += 1,
        }
    }
    missing
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
            None => verified.missing += device.acked_persisted.len() as u64,
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
            acked_persisted: acked.to_vec(),
        }
    }

    #[test]
    fn range_membership() {
        let ranges = [(1, 3), (5, 5), (8, 10)];
        assert_eq!(count_missing(&[1, 2, 3, 5, 8, 9, 10], &ranges), 0);
        assert_eq!(count_missing(&[4, 6, 7, 11], &ranges), 4);
        assert_eq!(count_missing(&[0, 1, 4, 5, 6, 10, 12], &ranges), 4);
        assert_eq!(count_missing(&[1, 2], &[]), 2);
        assert_eq!(count_missing(&[], &ranges), 0);
        assert_eq!(count_missing(&[2], &[(3, 1), (2, 2)]), 0, "an inverted range is skipped");
        assert_eq!(count_missing(&[u64::MAX], &[(1, u64::MAX)]), 0);
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
