//! Fuzzes the spool's record codec and recovery scan: arbitrary segment bytes (a torn or corrupt
//! file) must never panic, and every record the scan reports must lie inside the buffer.
#![no_main]

use fleetpulse_store::spool::format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = format::decode(data, 1 << 20);
    let _ = format::resync_offset(data);
    format::scan(data, 0, |_id, start, len| {
        assert!(start.checked_add(len).is_some_and(|end| end <= data.len()));
    });
});
