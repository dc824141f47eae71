//! Fuzzes the device CSV import reader (the body: `fuzz/bodies/device_csv.rs`).
#![no_main]

#[path = "../bodies/device_csv.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
