//! Fuzzes the spool's record codec and recovery scan (the body: `fuzz/bodies/spool_records.rs`).
#![no_main]

#[path = "../bodies/spool_records.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
