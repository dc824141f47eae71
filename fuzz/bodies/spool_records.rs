//! The body of the `spool_records` fuzz target, shared with the fuzz smoke test of the workspace
//! (`tests/fuzz_smoke.rs`): arbitrary segment bytes (a torn or corrupt file) must never panic the
//! spool's record codec and recovery scan, and every record the scan reports must lie inside the
//! buffer.

use fleetpulse_store::spool::format;

/// One input: the bytes of a segment file.
pub fn run(data: &[u8]) {
    let _ = format::decode(data, 1 << 20);
    let _ = format::resync_offset(data);
    format::scan(data, 0, |_id, start, len| {
        assert!(start.checked_add(len).is_some_and(|end| end <= data.len()));
    });
}
