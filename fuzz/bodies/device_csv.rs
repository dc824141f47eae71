//! The body of the `device_csv` fuzz target, shared with the fuzz smoke test of the workspace
//! (`tests/fuzz_smoke.rs`): arbitrary bytes read as a device CSV import (header detection,
//! separator detection, record splitting, row validation) must never panic.

/// One input: the whole CSV body.
pub fn run(data: &[u8]) {
    fleetpulse_admin_api::fuzzing::device_csv(data);
}
